"""``QMPBehaviorWrapper`` for a ``gymnasium.vector.VectorEnv`` (as Gymnasium names its vector
wrappers: ``qmp_wrappers.vector.X`` beside ``qmp_wrappers.X``).

One batched policy call and one batched Q call per step serve every sub-env.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from qmp_envs import validation
from qmp_wrappers.switch import QSwitchControls, QSwitchState, SwitchOptions


class QMPBehaviorWrapper(QSwitchControls, VectorWrapper):
    """The Q-switch mixture of all task policies for every sub-env of a vector env.

    Sub-envs may run any tasks (a ``qmp/`` id's ``make_vec`` gives one per task);
    ``info["qmp_action"]`` ``(B, A)`` and ``info["qmp_policy"]`` ``(B,)`` come with Gymnasium's
    ``_key`` masks. Works inside and outside other vector wrappers (e.g.
    ``RecordEpisodeStatistics``); reach it from outside with
    :func:`qmp_wrappers.find_qmp_wrapper`. Otherwise as :class:`qmp_wrappers.QMPBehaviorWrapper`.

    Args:
        env: the vector env of multi-task envs; observations end with a one-hot task id.
        num_tasks: N; read from the suite facts of a ``qmp/`` id, or from ``num_tasks`` of the
            first sub-env, when omitted.
        **options: the fields of :class:`~qmp_wrappers.switch.SwitchOptions` as keywords, each
            documented there with its default.

    Raises:
        TypeError: ``env`` is not a ``VectorEnv`` (use :class:`qmp_wrappers.QMPBehaviorWrapper`
            for one env); an unknown option; the single observation or action space is not a
            flat ``Box``.
        ValueError: an option out of range (see :class:`~qmp_wrappers.switch.SwitchOptions`),
            ``num_tasks`` larger than the observation, or a normaliser inside the wrapper that
            would hide the one-hot task id.

    Example: each task policy proposes ``task / 10``; every task's Q prefers actions near 0.3,
    so every task executes policy 3's proposal.

    >>> import gymnasium as gym, numpy as np, qmp_envs
    >>> env = QMPBehaviorWrapper(gym.make_vec("qmp/MultistageReacher-v0"))
    >>> policy = lambda obs: np.repeat(obs[:, -5:].argmax(1, keepdims=True) / 10, 6, axis=1)
    >>> env.attach(policy=policy, q_function=lambda obs, act: -np.abs(act - 0.3).sum(1))
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(policy(obs))
    >>> info["qmp_policy"].tolist(), info["qmp_action"][0, 0].item()
    ([3, 3, 3, 3, 3], 0.30000001192092896)
    >>> env.selection_matrix()[:, 3].tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0]
    """

    def __init__(self, env: VectorEnv, num_tasks: int | None = None, **options: Any):
        if not isinstance(env, VectorEnv):
            raise TypeError(
                f"expected a gymnasium VectorEnv, got {type(env).__name__}; use "
                "qmp_wrappers.QMPBehaviorWrapper for a single env"
            )
        VectorWrapper.__init__(self, env)
        autoreset = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        self.qmp = QSwitchState(
            env,
            env.single_observation_space,
            env.single_action_space,
            env.num_envs,
            num_tasks,
            SwitchOptions(**options),
            next_step_autoreset=autoreset == AutoresetMode.NEXT_STEP,
        )

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the vector env, and the wrapper's holds; a seed also reseeds the wrapper's
        stream.

        Args:
            seed: one seed, or one per sub-env (NumPy integers too).
            options: passed to the vector env.

        Returns:
            The vector env's ``(observations, infos)``.

        Raises:
            qmp_envs.validation.InputTypeError: a seed that is not an integer.
            qmp_envs.validation.InputError: a negative seed.
        """
        # NumPy integers too (Gymnasium's vector envs refuse them).
        checked: int | list[int | None] | None
        if isinstance(seed, list | tuple):
            checked = [validation.seed(f"seed[{i}]", s) for i, s in enumerate(seed)]
        else:
            checked = validation.seed("seed", seed)
        obs, info = self.env.reset(seed=checked, options=options)  # type: ignore[arg-type]
        self.qmp.after_reset(obs, checked)
        return obs, info

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Execute the Q-switch's choices instead of ``actions``, one batched call for all
        sub-envs.

        Args:
            actions: the agent's actions ``(B, A)``.

        Returns:
            The vector env's ``(observations, rewards, terminations, truncations, infos)``,
            ``infos`` with ``qmp_action`` ``(B, A)`` and ``qmp_policy`` ``(B,)`` and their
            ``_key`` masks.

        Raises:
            RuntimeError: ``reset()`` was not called first.
            qmp_envs.validation.InputTypeError: boolean, complex or non-numeric actions.
            qmp_envs.validation.InputError: the wrong shape, or NaN or inf.
            ValueError: an observation with NaN or inf that the Q-switch would score.
            qmp_wrappers.qswitch.ContractError: an attached callable's output breaks
                ``attach``'s contract.
        """
        agent_actions = self.qmp.validate_actions(actions, (self.num_envs, self.qmp.action_dim))
        executed, chosen = self.qmp.select(agent_actions)
        obs, reward, terminated, truncated, info = self.env.step(executed)
        self.qmp.after_step(obs, terminated, truncated)
        info = dict(info)
        mask = np.ones(self.num_envs, dtype=bool)
        info["qmp_action"], info["_qmp_action"] = executed, mask
        info["qmp_policy"], info["_qmp_policy"] = chosen, mask.copy()
        if self.qmp.mixture == "guide":  # where a guided K-step segment starts
            info["qmp_choice_made"], info["_qmp_choice_made"] = self.qmp.choice_made, mask.copy()
        return obs, reward, terminated, truncated, info

    @property
    def autoreset_mode(self) -> AutoresetMode:
        """The wrapped vector env's autoreset mode (third-party wrappers, e.g. torchrl's, read
        it as an attribute, which Gymnasium's ``VectorWrapper`` does not forward)."""
        mode = getattr(self.env, "autoreset_mode", None)
        if mode is None:
            mode = self.env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        return AutoresetMode(mode)

    def get_attr(self, name: str) -> tuple:
        """The sub-environments' attribute ``name`` (forwarded to the vector env).

        Args:
            name: the attribute.

        Returns:
            Its value in every sub-env, in order.
        """
        return self.env.get_attr(name)  # type: ignore[attr-defined]

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple:
        """Call method ``name`` of every sub-environment (forwarded to the vector env).

        Args:
            name: the method.
            *args: its positional arguments.
            **kwargs: its keyword arguments.

        Returns:
            Each sub-env's result, in order.
        """
        return self.env.call(name, *args, **kwargs)  # type: ignore[attr-defined]


def find_qmp_wrapper(env: Any) -> Any:
    """The QMP wrapper inside a stack of (vector) wrappers, e.g. under
    ``RecordEpisodeStatistics``, so ``attach`` and the statistics stay reachable.

    Args:
        env: the outermost wrapper; each layer's ``env`` is followed inward.

    Returns:
        The first QMP wrapper (any of the Gymnasium or SB3 ones) found, outermost first.

    Raises:
        ValueError: no layer is a QMP wrapper.

    >>> import gymnasium as gym, qmp_envs
    >>> envs = gym.wrappers.vector.RecordEpisodeStatistics(
    ...     QMPBehaviorWrapper(gym.make_vec("qmp/PointReach-v0")))
    >>> type(find_qmp_wrapper(envs)).__module__
    'qmp_wrappers.vector'
    """
    layer = env
    while layer is not None:
        if isinstance(layer, QSwitchControls):
            return layer
        layer = getattr(layer, "env", None)
    raise ValueError(f"no QMPBehaviorWrapper in the wrapper stack of {env}")
