"""Observation normalisers around the QMP wrappers (issue 25, item 1): outside the wrapper with
``agent_view`` the Q-switch sees exactly what the agent sees; inside, the stack is refused."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import qmp_envs  # noqa: F401
from qmp_wrappers import QMPBehaviorWrapper, find_qmp_wrapper, vector
from qmp_wrappers.sb3 import QMPVecEnvWrapper, make_qmp_vec_env

ENV_ID = "qmp/MultistageReacher-v0"
NUM_TASKS = 5


class Recorder:
    """A policy and Q on numpy arrays that record the observation batches they are given."""

    def __init__(self) -> None:
        self.policy_inputs: list[np.ndarray] = []
        self.q_inputs: list[np.ndarray] = []

    def policy(self, obs: np.ndarray) -> np.ndarray:
        self.policy_inputs.append(obs.copy())
        return np.tanh(obs[:, :6])

    def q_function(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        self.q_inputs.append(obs.copy())
        return -np.abs(actions - np.tanh(obs[:, 1:7])).sum(axis=1)


def own_rows(batch: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """Rows of a task-major proposal batch where policy j proposes on its own task's env."""
    num_envs = len(tasks)
    return np.stack([batch[tasks[b] * num_envs + b] for b in range(num_envs)])


def check_switch_sees_agent_view(step, reset, recorder: Recorder, tasks: np.ndarray) -> None:
    agent_obs = reset()
    for _ in range(30):
        before = len(recorder.policy_inputs)
        next_obs = step(np.zeros((len(tasks), 6), dtype=np.float32))
        assert len(recorder.policy_inputs) == before + 1
        seen = own_rows(recorder.policy_inputs[-1], tasks)
        np.testing.assert_allclose(seen, np.asarray(agent_obs).reshape(len(tasks), -1), atol=1e-5)
        agent_obs = next_obs


def test_gymnasium_normalizer_outside_single_env() -> None:
    env = gym.wrappers.NormalizeObservation(QMPBehaviorWrapper(gym.make(ENV_ID, task=2), seed=0))
    recorder = Recorder()
    find_qmp_wrapper(env).attach(recorder.policy, recorder.q_function, agent_view=env)
    check_switch_sees_agent_view(
        lambda a: env.step(a[0])[0][None],
        lambda: env.reset(seed=0)[0][None],
        recorder,
        np.array([2]),
    )
    # The critic scores the same normalised state for every candidate.
    assert np.allclose(recorder.q_inputs[-1][:, :-NUM_TASKS], recorder.q_inputs[-1][0, :-NUM_TASKS])


def test_gymnasium_vector_normalizer_outside() -> None:
    envs = gym.wrappers.vector.NormalizeObservation(
        vector.QMPBehaviorWrapper(gym.make_vec(ENV_ID), seed=0)
    )
    recorder = Recorder()
    find_qmp_wrapper(envs).attach(recorder.policy, recorder.q_function, agent_view=envs)
    check_switch_sees_agent_view(
        lambda a: envs.step(a)[0],
        lambda: envs.reset(seed=0)[0],
        recorder,
        np.arange(NUM_TASKS),
    )


def test_without_agent_view_the_switch_sees_raw_observations() -> None:
    """The failure the option exists for: without it the networks get the raw state."""
    envs = gym.wrappers.vector.NormalizeObservation(
        vector.QMPBehaviorWrapper(gym.make_vec(ENV_ID), seed=0)
    )
    recorder = Recorder()
    find_qmp_wrapper(envs).attach(recorder.policy, recorder.q_function)
    agent_obs, _ = envs.reset(seed=0)
    envs.step(np.zeros((NUM_TASKS, 6), dtype=np.float32))
    seen = own_rows(recorder.policy_inputs[-1], np.arange(NUM_TASKS))
    assert not np.allclose(seen, agent_obs, atol=1e-3)


def test_sb3_vec_normalize_outside() -> None:
    venv_qmp = make_qmp_vec_env(ENV_ID, seed=0)
    venv = VecNormalize(venv_qmp, norm_reward=False, clip_obs=5.0)
    recorder = Recorder()
    venv_qmp.attach(recorder.policy, recorder.q_function, agent_view=venv)
    venv.seed(0)
    check_switch_sees_agent_view(
        lambda a: venv.step(a)[0], venv.reset, recorder, np.arange(NUM_TASKS)
    )
    assert np.abs(recorder.policy_inputs[-1]).max() <= 5.0  # VecNormalize's clip_obs applies


def test_agent_view_callable_and_tensor_networks() -> None:
    envs = vector.QMPBehaviorWrapper(gym.make_vec(ENV_ID), seed=0)
    seen: list[torch.Tensor] = []

    def policy(obs: torch.Tensor) -> torch.Tensor:
        seen.append(obs.clone())
        return torch.zeros(len(obs), 6)

    envs.attach(
        policy,
        lambda obs, act: obs[:, 0] + act.sum(1),
        device="cpu",
        agent_view=lambda obs: obs * 2.0,
    )
    obs, _ = envs.reset(seed=0)
    envs.step(np.zeros((NUM_TASKS, 6), dtype=np.float32))
    own = own_rows(seen[-1].numpy(), np.arange(NUM_TASKS))
    np.testing.assert_allclose(own, 2.0 * obs, rtol=1e-6)


def test_normalizer_inside_is_refused_with_a_fix() -> None:
    with pytest.raises(ValueError, match="OUTSIDE the QMP wrapper"):
        QMPBehaviorWrapper(gym.wrappers.NormalizeObservation(gym.make(ENV_ID, task=0)))
    with pytest.raises(ValueError, match="OUTSIDE the QMP wrapper"):
        vector.QMPBehaviorWrapper(gym.wrappers.vector.NormalizeObservation(gym.make_vec(ENV_ID)))
    inner = VecNormalize(DummyVecEnv([lambda k=k: gym.make(ENV_ID, task=k) for k in range(5)]))
    with pytest.raises(ValueError, match="OUTSIDE the QMP wrapper"):
        QMPVecEnvWrapper(inner, num_tasks=NUM_TASKS)


def test_agent_view_that_cannot_be_reproduced_is_refused() -> None:
    qmp = QMPBehaviorWrapper(gym.make(ENV_ID, task=0))
    recorder = Recorder()
    other = gym.wrappers.NormalizeObservation(gym.make(ENV_ID, task=1))
    with pytest.raises(ValueError, match="does not contain this QMP wrapper"):
        qmp.attach(recorder.policy, recorder.q_function, agent_view=other)
    scaled = gym.wrappers.TransformObservation(qmp, lambda o: o * 3, qmp.observation_space)
    with pytest.raises(ValueError, match="cannot reproduce"):
        qmp.attach(recorder.policy, recorder.q_function, agent_view=scaled)
    with pytest.raises(TypeError, match="agent_view must be"):
        qmp.attach(recorder.policy, recorder.q_function, agent_view=3)
