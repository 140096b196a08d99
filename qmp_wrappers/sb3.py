"""QMP for stable-baselines3 vector envs: one sub-env per task, ONE batched Q-switch per step.

SB3 cannot take a Gymnasium ``VectorEnv``; its own ``VecEnv`` (``DummyVecEnv``,
``SubprocVecEnv``) steps N separately built envs. :class:`QMPVecEnvWrapper` sits on top of such a
``VecEnv`` in the learner's process: at every step it makes one policy call and one Q call for
all sub-envs (the networks never travel to the sub-processes), executes the chosen actions and
reports them in each sub-env's ``info["qmp_action"]``, which :class:`~qmp_wrappers.QMPReplayBuffer`
stores. :func:`make_qmp_vec_env` builds the whole stack from a ``qmp/`` id.

>>> import qmp_envs
>>> venv = make_qmp_vec_env("qmp/MultistageReacher-v0")
>>> venv.num_envs, venv.get_attr("task_id")
(5, [0, 1, 2, 3, 4])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from qmp_envs.suites import suite_facts
from qmp_wrappers.normalize import refuse_inner_normalizer
from qmp_wrappers.switch import QSwitchControls, QSwitchState, SwitchOptions


class QMPVecEnvWrapper(QSwitchControls, VecEnvWrapper):
    """The Q-switch over an SB3 ``VecEnv`` of multi-task envs, batched across its sub-envs.

    Takes the options of :class:`qmp_wrappers.QMPBehaviorWrapper` (``num_tasks`` is read from
    the sub-envs when omitted). ``attach``, ``enabled``, ``selection_matrix()`` and the other
    statistics work as on the Gymnasium wrappers; each sub-env's ``info`` gains ``qmp_action``
    (executed, inside the action space) and ``qmp_policy``.

    Args:
        venv: the SB3 vector env of multi-task envs.
        num_tasks: N; read from the sub-envs when omitted.
        **options: the fields of :class:`~qmp_wrappers.switch.SwitchOptions` as keywords, each
            documented there with its default.

    Raises:
        TypeError: ``venv`` is not an SB3 ``VecEnv``; an unknown option; the observation or
            action space is not a flat ``Box``.
        ValueError: an option out of range (see :class:`~qmp_wrappers.switch.SwitchOptions`),
            ``num_tasks`` larger than the observation, or a ``VecNormalize`` inside the wrapper
            that would hide the one-hot task id.
    """

    def __init__(self, venv: VecEnv, num_tasks: int | None = None, **options: Any):
        if not isinstance(venv, VecEnv):
            raise TypeError(f"expected a stable-baselines3 VecEnv, got {type(venv).__name__}")
        refuse_inner_normalizer(venv, options.get("task_id_fn") is not None)
        VecEnvWrapper.__init__(self, venv)
        self.qmp = QSwitchState(
            _TaskNames(venv),
            venv.observation_space,
            venv.action_space,
            venv.num_envs,
            num_tasks,
            SwitchOptions(**options),
        )
        self._seed: int | None = options.get("seed")

    def reset(self) -> VecEnvObs:
        """Reset every sub-env; the seed given to :meth:`seed` also reseeds the wrapper.

        Returns:
            The observations ``(B, D)``.
        """
        obs = self.venv.reset()
        seed, self._seed = self._seed, None  # SB3 seeds through seed(); reseed our RNG with it
        self.qmp.after_reset(obs, seed)
        return obs

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seed the sub-envs (SB3's way) and, at the next reset, the wrapper's stream.

        Args:
            seed: the seed.

        Returns:
            The sub-envs' seeds, as SB3 returns them.
        """
        self._seed = seed
        return self.venv.seed(seed)

    def step_async(self, actions: np.ndarray) -> None:
        """Send the Q-switch's choices to the sub-envs instead of ``actions``.

        Args:
            actions: the agent's actions ``(B, A)``.

        Raises:
            RuntimeError: ``reset()`` was not called first.
            qmp_envs.validation.InputError: the wrong shape, or NaN or inf
                (``InputTypeError`` for boolean, complex or non-numeric actions).
            ValueError: an observation with NaN or inf that the Q-switch would score.
        """
        agent_actions = self.qmp.validate_actions(actions, (self.num_envs, self.qmp.action_dim))
        executed, chosen = self.qmp.select(agent_actions)
        self._executed, self._chosen = executed, chosen
        self.venv.step_async(executed)

    def step_wait(self) -> VecEnvStepReturn:
        """Collect the sub-envs' step.

        Returns:
            SB3's ``(observations, rewards, dones, infos)``; each info gains ``qmp_action``
            and ``qmp_policy``.
        """
        obs, rewards, dones, infos = self.venv.step_wait()
        # SB3 resets finished sub-envs at once: obs already starts the next episode.
        self.qmp.after_step(obs, dones, np.zeros_like(dones))
        for k, info in enumerate(infos):
            info["qmp_action"] = self._executed[k]
            info["qmp_policy"] = int(self._chosen[k])
        return obs, rewards, dones, infos


class _TaskNames:
    """Lets :func:`~qmp_wrappers.switch.find_tasks` read task names from an SB3 ``VecEnv``."""

    spec: gym.envs.registration.EnvSpec | None

    def __init__(self, venv: VecEnv):
        try:
            env_id = venv.get_attr("spec", indices=[0])[0].id
            self.spec = gym.spec(env_id)
        except (AttributeError, gym.error.Error):
            self.spec = None
        for name in ("num_tasks", "task_names"):  # small values, cheap even from a subprocess
            try:
                setattr(self, name, venv.get_attr(name, indices=[0])[0])
            except AttributeError:
                pass


def make_qmp_vec_env(
    env_id: str,
    *,
    vec_env_cls: type[VecEnv] = DummyVecEnv,
    env_kwargs: dict | None = None,
    vec_env_kwargs: dict | None = None,
    monitor: bool = True,
    extra_policies: Sequence[Callable] = (),
    **qmp_options: Any,
) -> QMPVecEnvWrapper:
    """One SB3 sub-env per task of a ``qmp/`` id (sub-env k runs task k), under the Q-switch.

    Unlike SB3's ``make_vec_env``, which would put every sub-env on the same task schedule,
    each sub-env is pinned to its task. ``vec_env_cls`` may be ``SubprocVecEnv`` (the Q-switch
    still runs in this process). Sub-envs are wrapped in SB3's ``Monitor`` for episode stats.

    Args:
        env_id: a ``qmp/`` id.
        vec_env_cls: SB3's vector env class (``DummyVecEnv`` or ``SubprocVecEnv``).
        env_kwargs: passed to every sub-env's ``gym.make``.
        vec_env_kwargs: passed to ``vec_env_cls``.
        monitor: wrap each sub-env in SB3's ``Monitor``.
        extra_policies: the wrapper's extra policies
            (:attr:`~qmp_wrappers.switch.SwitchOptions.extra_policies`).
        **qmp_options: the other fields of :class:`~qmp_wrappers.switch.SwitchOptions`.

    Returns:
        The Q-switch over the N sub-envs.

    Raises:
        KeyError: an unknown ``env_id``.
        TypeError: an unknown option.
        ValueError: an option out of range (see :class:`~qmp_wrappers.switch.SwitchOptions`).
    """
    facts = suite_facts(env_id)
    env_kwargs = dict(env_kwargs or {})

    def make(task: int) -> Callable[[], gym.Env]:
        def build() -> gym.Env:
            import qmp_envs  # noqa: F401 - registers the ids in a fresh (SubprocVecEnv) process

            env = gym.make(env_id, task=task, **env_kwargs)
            return Monitor(env) if monitor else env

        return build

    env_fns = [make(k) for k in range(facts.num_tasks)]
    venv = vec_env_cls(env_fns, **(vec_env_kwargs or {}))  # type: ignore[arg-type]
    return QMPVecEnvWrapper(
        venv, num_tasks=facts.num_tasks, extra_policies=extra_policies, **qmp_options
    )
