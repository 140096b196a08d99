"""The deterministic Q-switch mixture that QMP runs evaluate beside each task's own policy."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import qmp_envs  # noqa: F401  (registers the qmp/ ids)
from qmp_envs import helper_policies
from qmp_wrappers.vector import QMPBehaviorWrapper

N = 5  # Multistage Reacher's tasks


def toy_policy(obs: np.ndarray):
    """Task j's policy: mean j / 4 in every dimension, plus noise in the sample."""
    task = obs[:, -N:].argmax(1)[:, None]
    mean = np.repeat(task / 4, 6, axis=1).astype(np.float32)
    return np.clip(mean + np.random.normal(0, 0.1, mean.shape), -1, 1).astype(np.float32), mean


def q_prefers(target: float):
    return lambda obs, actions: -np.square(actions - target).sum(1)


def attached_envs(**options) -> QMPBehaviorWrapper:
    envs = QMPBehaviorWrapper(gym.make_vec("qmp/MultistageReacher-v0"), **options)
    envs.reset(seed=0)
    envs.attach(policy=toy_policy, q_function=q_prefers(0.5))
    return envs


def test_mixture_executes_the_best_mean_for_every_task():
    envs = attached_envs()
    obs, _ = envs.reset(seed=1)
    actions = envs.mixture_policy()(obs)
    # Every task's Q prefers 0.5 = task 2's mean, so every row executes task 2's MEAN (no noise).
    np.testing.assert_array_equal(actions, np.full((N, 6), 0.5, dtype=np.float32))
    assert envs.selection_counts.sum() == 0  # evaluation counts no selections


def test_mixture_scores_with_the_collecting_tasks_q():
    envs = attached_envs()
    obs, _ = envs.reset(seed=1)
    task = obs[:, -N:].argmax(1)
    # Each task's Q prefers its own mean: the mixture then equals each task's own policy.
    envs.attach(toy_policy, lambda o, a: -np.square(a - o[:, -N:].argmax(1)[:, None] / 4).sum(1))
    np.testing.assert_allclose(envs.mixture_policy()(obs), np.repeat(task[:, None] / 4, 6, 1))


def test_mixture_leaves_every_random_stream_where_training_left_it():
    """The training run's streams must not move, or adding the evaluation would change it."""
    helpers = helper_policies(["up", "right"], seed=3)
    envs = QMPBehaviorWrapper(gym.make_vec("qmp/PointReach-v1"), extra_policies=helpers)
    obs, _ = envs.reset(seed=0)

    def noisy(o):
        return (np.random.uniform(-1, 1, (len(o), 2)).astype(np.float32), 0 * o[:, :2])

    def prefers_right(o, a):
        return -np.square(a - np.array([1.0, 0.0])).sum(1)

    envs.attach(policy=noisy, q_function=prefers_right)

    def streams():
        return (
            torch.get_rng_state(),
            np.random.get_state()[1].copy(),
            np.random.get_state()[2],
            helpers[0].rng.bit_generator.state,
        )

    before = streams()
    actions = envs.mixture_policy()(obs)
    after = streams()
    np.testing.assert_array_equal(actions, [[1.0, 0.0]])  # the "right" helper's mean
    assert torch.equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2:] == after[2:]


def test_mixture_needs_a_q_switch():
    envs = QMPBehaviorWrapper(gym.make_vec("qmp/MultistageReacher-v0"))
    with pytest.raises(RuntimeError, match="attach"):
        envs.mixture_policy()
    guided = QMPBehaviorWrapper(gym.make_vec("qmp/MultistageReacher-v0"), mixture="guide")
    with pytest.raises(ValueError, match="guide"):
        guided.qmp.attach(toy_policy, q_prefers(0.5))  # no guide: refused before evaluation
    guided.qmp.mixture = "guide"
    with pytest.raises((RuntimeError, ValueError)):
        guided.mixture_policy()
