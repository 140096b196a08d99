"""``QMPBehaviorWrapper`` for one ``gymnasium.Env``: QMP behaviour sharing at the env boundary.

While data is collected for task i, every task's policy proposes an action, task i's Q-function
scores the proposals and the best one is executed. The agent keeps its own networks, losses and
loop; it only has to store ``info["qmp_action"]`` (the executed action) instead of its proposal.
For a vector env use :class:`qmp_wrappers.vector.QMPBehaviorWrapper`, the same wrapper batched.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.utils import RecordConstructorArgs

from qmp_envs import validation
from qmp_wrappers.switch import QSwitchControls, QSwitchState, SwitchOptions


class QMPBehaviorWrapper(
    QSwitchControls,
    gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    RecordConstructorArgs,
):
    """Executes the Q-switch mixture of all task policies instead of the agent's action.

    Until :meth:`attach` is called, while ``enabled`` is False, or for the first ``start_step``
    steps, actions pass through unchanged (``qmp_policy`` then reports the own task).

    Args:
        env: the multi-task environment; its observations end with a one-hot task id.
        num_tasks: N; read from the suite facts of a ``qmp/`` id, or from ``num_tasks`` of the
            innermost env, when omitted (through any stack of wrappers).
        **options: how candidates are scored and chosen: the fields of
            :class:`~qmp_wrappers.switch.SwitchOptions` as keywords, each documented there
            with its default (``scoring``, ``mixture``, ``hold_steps``, ...).

    Raises:
        TypeError: ``env`` is a ``VectorEnv`` (use
            :class:`qmp_wrappers.vector.QMPBehaviorWrapper`) or not a Gymnasium env; an
            unknown option; the observation or action space is not a flat ``Box``.
        ValueError: an option out of range (see :class:`~qmp_wrappers.switch.SwitchOptions`;
            the checks of counts raise :class:`~qmp_envs.validation.InputError` and
            :class:`~qmp_envs.validation.InputTypeError`, both ``ValueError``), ``num_tasks``
            larger than the observation, or a normaliser inside the wrapper that would hide
            the one-hot task id.

    ``info["qmp_action"]`` is the executed action, clipped to the action space as the env
    clips it; ``info["qmp_policy"]`` the index of the executed candidate (an ``np.int64``);
    with the guide mixture, ``info["qmp_choice_made"]`` (an ``np.bool_``) says whether this
    step started a guided segment.

    Refused with a clear error: options of the wrong kind or range (a bool as a count, a NaN
    temperature), agent actions that are boolean, complex, wrongly shaped or not finite, an
    observation with NaN or inf when the Q-switch would score on it, and an extra policy's
    proposal outside the action space. NumPy integers and floats are accepted for every option
    and seed, and torch tensors (also with ``requires_grad``) for actions.

    The constructor arguments are recorded (``gym.make(env.spec)`` rebuilds the wrapper);
    ``env.spec.to_json()`` raises ``TypeError`` when callables (``extra_policies``,
    ``task_id_fn``, ``relabel_fn``) were given, as JSON cannot hold them.

    Example: each task policy proposes ``task / 10``; task 2's Q prefers actions near 0.3, so
    task 2 executes policy 3's proposal.

    >>> import gymnasium as gym, numpy as np, qmp_envs
    >>> env = QMPBehaviorWrapper(gym.make("qmp/MultistageReacher-v0", task=2))
    >>> policy = lambda obs: np.repeat(obs[:, -5:].argmax(1, keepdims=True) / 10, 6, axis=1)
    >>> env.attach(policy=policy, q_function=lambda obs, act: -np.abs(act - 0.3).sum(1))
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(policy(obs[None])[0])
    >>> int(info["qmp_policy"]), round(float(info["qmp_action"][0]), 2)
    (3, 0.3)
    """

    def __init__(self, env: gym.Env, num_tasks: int | None = None, **options: Any):
        if isinstance(env, gym.vector.VectorEnv):
            raise TypeError(
                "got a VectorEnv: use qmp_wrappers.vector.QMPBehaviorWrapper for vector envs"
            )
        if not isinstance(env, gym.Env):
            raise TypeError(f"expected a gymnasium Env, got {type(env).__name__}")
        RecordConstructorArgs.__init__(self, num_tasks=num_tasks, **options)
        gym.Wrapper.__init__(self, env)
        self.qmp = QSwitchState(
            env, env.observation_space, env.action_space, 1, num_tasks, SwitchOptions(**options)
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the env, and the wrapper's holds; a seed also reseeds the wrapper's stream.

        Args:
            seed: the env's seed (NumPy integers too).
            options: passed to the env.

        Returns:
            The env's ``(observation, info)``.

        Raises:
            qmp_envs.validation.InputTypeError: a seed that is not an integer.
            qmp_envs.validation.InputError: a negative seed.
        """
        seed = validation.seed("seed", seed)  # NumPy integers too (Gymnasium refuses them)
        obs, info = self.env.reset(seed=seed, options=options)
        self.qmp.after_reset(obs, seed)
        return obs, info

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Execute the Q-switch's choice instead of ``action`` (or ``action`` itself while
        sharing is off).

        Args:
            action: the agent's action ``(A,)`` (NumPy array, list or torch tensor).

        Returns:
            The env's ``(observation, reward, terminated, truncated, info)``, ``info`` with
            ``qmp_action`` and ``qmp_policy`` (and ``qmp_choice_made`` with the guide).

        Raises:
            RuntimeError: ``reset()`` was not called first.
            qmp_envs.validation.InputTypeError: a boolean, complex or non-numeric action.
            qmp_envs.validation.InputError: the wrong shape, or NaN or inf.
            ValueError: an observation with NaN or inf that the Q-switch would score.
            qmp_wrappers.qswitch.ContractError: an attached callable's output breaks
                ``attach``'s contract (an extra policy's proposal outside the action space).
        """
        agent_actions = self.qmp.validate_actions(action, (self.qmp.action_dim,))
        executed, chosen = self.qmp.select(agent_actions)
        obs, reward, terminated, truncated, info = self.env.step(executed[0])
        self.qmp.after_step(obs, terminated, truncated)
        info = dict(info)
        info["qmp_action"] = executed[0]
        # NumPy scalars, not Python ones: info readers such as torchrl's read ``.dtype``.
        info["qmp_policy"] = np.int64(chosen[0])
        if self.qmp.mixture == "guide":
            info["qmp_choice_made"] = np.bool_(self.qmp.choice_made[0])
        return obs, reward, terminated, truncated, info
