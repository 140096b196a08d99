"""Kitchen MT-Easy against spec section 9."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import qmp_envs  # noqa: F401
from qmp_envs.kitchen import (
    INITIAL_QPOS,
    KITCHEN_TASKS,
    ROBOT_HIGH,
    ROBOT_LOW,
    gaussian_tolerance,
)


@pytest.fixture(scope="module")
def kitchen():
    env = gym.make("qmp/KitchenMTEasy-v0", task=0)
    yield env
    env.close()


def test_env_checker_model_and_timing(kitchen):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(kitchen.unwrapped)
    u = kitchen.unwrapped
    assert u.model.nq == 30 and u.model.opt.timestep == 0.002 and u.dt == pytest.approx(0.08)
    np.testing.assert_allclose(u.model.actuator_gainprm[:, 0], [870] * 4 + [120] * 3 + [500] * 2)


@pytest.mark.parametrize("task", range(10))
def test_reset_state_goal_vector_and_noise(task):
    env = gym.make("qmp/KitchenMTEasy-v0", task=task, compat="official")
    obs, info = env.reset(seed=task)
    _, indices, initial, goal, _, _ = KITCHEN_TASKS[task]
    expected = INITIAL_QPOS.copy()
    expected[indices] = initial
    u = env.unwrapped
    np.testing.assert_allclose(u.data.qpos, expected)
    assert np.all(np.abs(obs[:30] - expected) <= 0.1 * np.array([0.1] * 9 + [0.1] * 21) + 1e-9)
    assert np.abs(obs[:9] - expected[:9]).max() > 0  # noise is there
    goal_vector = obs[30:60]
    assert goal_vector[22] == pytest.approx(-0.75) and goal_vector[17] == pytest.approx(-0.69)
    if task not in (5, 9):
        np.testing.assert_allclose(goal_vector[indices], goal, atol=1e-6)
    assert obs[60:].tolist() == np.eye(10)[task].tolist()


def test_official_goal_vector_quirk_and_its_fix():
    official = gym.make("qmp/KitchenMTEasy-v0", task=5, compat="official").reset(seed=0)[0]
    fixed = gym.make("qmp/KitchenMTEasy-v0", task=5).reset(seed=0)[0]
    on = gym.make("qmp/KitchenMTEasy-v0", task=4, compat="official").reset(seed=0)[0]
    np.testing.assert_array_equal(official[30:60], on[30:60])  # burner-off shows the "on" goal
    np.testing.assert_allclose(fixed[30 + 11 : 30 + 13], [3.12877e-5, -4.51200e-5], atol=1e-9)


def test_success_triggers_at_threshold_and_pays_2800():
    for task, inside, outside in [(0, 0.30, 0.20), (3, 0.2, 0.5)]:
        env = gym.make("qmp/KitchenMTEasy-v0", task=task)
        env.reset(seed=0)
        u = env.unwrapped
        _, indices, _, goal, threshold, _ = KITCHEN_TASKS[task]
        qpos = u.data.qpos.copy()
        qpos[indices[-1]] = outside
        u.set_state(qpos, np.zeros(u.model.nv))
        _, reward, terminated, _, info = env.step(np.zeros(9))
        assert not info["success"] and not terminated and -20 <= reward <= 0
        assert info["dist_goal"] > threshold
        qpos[indices[-1]] = inside
        u.set_state(qpos, np.zeros(u.model.nv))
        _, reward, terminated, _, info = env.step(np.zeros(9))
        assert info["success"] and terminated and reward == 2800.0
        assert info["dist_goal"] < threshold


def test_shaped_reward_matches_formula_and_control_law(kitchen):
    obs, _ = kitchen.reset(seed=1)
    u = kitchen.unwrapped
    action = np.linspace(-1, 1, 9)
    noisy_before = obs[:9].copy()
    _, reward, _, _, info = kitchen.step(action)
    target = np.clip(noisy_before + np.clip(2 * action, -10, 10) * 0.08, ROBOT_LOW, ROBOT_HIGH)
    np.testing.assert_allclose(u.data.ctrl, target, atol=1e-6)  # obs is float32
    in_place = gaussian_tolerance(info["dist_goal"], 0.1, u._goal_margin)
    reach = gaussian_tolerance(info["dist_hand"], 0.08, u._hand_margin)
    assert reward == pytest.approx(20 * (0.4 * in_place + 0.6 * reach - 1))


def test_truncation_at_140_and_seeded_determinism():
    traces = []
    for _ in range(2):
        env = gym.make("qmp/KitchenMTEasy-v0", task=8)
        obs, _ = env.reset(seed=3)
        trace = [obs]
        for t in range(1, 141):
            obs, _, terminated, truncated, _ = env.step(np.full(9, 0.1))
            trace.append(obs)
            assert truncated == (t == 140) and not terminated
        traces.append(np.array(trace))
    np.testing.assert_array_equal(traces[0], traces[1])


def test_pickled_kitchen_is_small_and_continues_bit_exactly(assert_pickle_continues_exactly):
    env = gym.make("qmp/KitchenMTEasy-v0", task=2)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (40, 9))
    # The whole model and data would pickle to ~130 MB.
    assert assert_pickle_continues_exactly(env, actions) < 1_000_000
