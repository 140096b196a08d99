"""Multistage Reacher against the numbers of spec section 4."""

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import qmp_envs  # noqa: F401
from qmp_envs.reacher import STAY_GOAL, SUBGOALS, jaco_reacher_xml

# Joint vectors that put the hand within 0.3 mm of each goal (spec 4.4).
GOAL_JOINTS = {
    "g0": (0.731, -0.814, 0.682, -0.046, -0.649, -0.368),
    "g1": (-0.267, -0.244, 0.537, -0.107, 0.455, 0.189),
    "g2": (-0.754, -0.483, 0.253, 0.688, -0.199, -0.150),
    "g3": (0.483, -0.011, -0.179, 0.102, -0.062, -0.120),
    "stay": (0.133, -0.095, 0.218, 0.576, -0.092, -0.586),
}


@pytest.fixture(scope="module")
def model():
    return mujoco.MjModel.from_xml_string(jaco_reacher_xml())


def forward(model, qpos):
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_forward(model, data)
    return data


def test_forward_kinematics_at_qpos0(model):
    data = forward(model, model.qpos0)
    expected = {
        "jaco_link_base": (0, 0, 0.25),
        "jaco_link_1": (0, 0, 0.4035),
        "jaco_link_2": (0, 0, 0.522),
        "jaco_link_3": (0.41, 0, 0.522),
        "jaco_link_4": (0.41, 0.01125, 0.315),
        "jaco_link_5": (0.41, 0.04555, 0.24912),
        "jaco_link_hand": (0.41, 0.11919, 0.23943),
    }
    for body, pos in expected.items():
        np.testing.assert_allclose(data.body(body).xpos, pos, atol=1e-4, err_msg=body)
    np.testing.assert_allclose(
        data.body("jaco_link_hand").xquat, (0, 0, -0.81915, 0.57358), atol=1e-4
    )
    np.testing.assert_allclose(data.site("hand").xpos, data.body("jaco_link_hand").xpos)
    np.testing.assert_allclose(model.qpos0, [0, 0, 0, 0, -2.8, 0])
    np.testing.assert_allclose(
        forward(model, np.zeros(6)).site("hand").xpos, (0.42149, 0.08098, 0.18486), atol=1e-4
    )


def test_model_physics_options(model):
    assert model.opt.timestep == 0.01
    assert model.opt.integrator == mujoco.mjtIntegrator.mjINT_EULER
    np.testing.assert_allclose(model.opt.gravity, (0, 0, -9.8))
    np.testing.assert_allclose(model.actuator_gear[:, 0], [5, 10, 10, 10, 10, 10])
    np.testing.assert_allclose(model.dof_damping, 0.5)
    np.testing.assert_allclose(model.body_mass[model.body("jaco_link_2").id], 1.85031)


@pytest.mark.parametrize("goal", sorted(GOAL_JOINTS))
def test_subgoals_are_reachable_within_joint_limits(model, goal):
    q = np.array(GOAL_JOINTS[goal])
    assert np.all(q >= model.jnt_range[:, 0]) and np.all(q <= model.jnt_range[:, 1])
    target = STAY_GOAL if goal == "stay" else SUBGOALS[goal]
    assert np.linalg.norm(forward(model, q).site("hand").xpos - target) < 5e-4


def test_reset_transient_from_exact_qpos0_matches_reference():
    env = gym.make("qmp/MultistageReacher-v0", task=0, compat="official")
    env.reset(seed=0)
    u = env.unwrapped
    u.set_state(u.model.qpos0, np.zeros(6))
    # The first three control steps happen before the hand nears the ground; the contact that
    # follows depends on the link shapes (capsules here, meshes in the original).
    for expected in [(0.4049, 0.1172, 0.2210), (0.4160, 0.1111, 0.1841), (0.4227, 0.1066, 0.1391)]:
        env.step(np.zeros(6))
        np.testing.assert_allclose(u.hand_position, expected, atol=2e-4)


def test_reset_distribution_and_joint5_flag():
    env = gym.make("qmp/MultistageReacher-v0", compat="official")
    obs, info = env.reset(seed=0)
    np.testing.assert_allclose(obs[:6], [0, 0, 0, 0, -2.8, 0], atol=0.0101)
    assert np.all(np.abs(obs[6:12]) <= 0.001)
    assert obs[12:15].tolist() == [1, 0, 0] and info["stage"] == 0
    np.testing.assert_allclose(obs[15:18], (0.41, 0.1192, 0.2394), atol=0.02)
    fixed = gym.make("qmp/MultistageReacher-v0")  # compat="fixed": joint 5 starts clamped
    assert abs(fixed.reset(seed=0)[0][4] - (-0.698132)) < 0.0101
    official = gym.make("qmp/MultistageReacher-v0", compat="fixed", joint5_initial="ref")
    assert abs(official.reset(seed=0)[0][4] + 2.8) < 0.0101
    assert env.unwrapped.agent_feature_mask.tolist() == [True] * 15 + [False] * 3


def place_hand(env, goal):
    """Put the arm at a goal's joint vector, at rest."""
    env.unwrapped.set_state(np.array(GOAL_JOINTS[goal]), np.zeros(6))


def test_reward_at_a_known_state():
    env = gym.make("qmp/MultistageReacher-v0", task=0)
    env.reset(seed=0)
    u = env.unwrapped
    action = np.full(6, 0.5)
    _, reward, terminated, _, info = env.step(action)
    d = np.linalg.norm(u.hand_position - np.array(SUBGOALS["g0"]))
    ctrl = (
        -0.01 * np.sum(action**2)
        - 0.001 * np.mean(np.abs(u.data.qvel))
        - 1e-5 * np.mean(np.abs(u.data.qacc))
    )
    assert info["dist"] == pytest.approx(d)
    assert info["ctrl_reward"] == pytest.approx(ctrl)
    assert info["stage_reward"] == pytest.approx(-1.2)  # -0.4 * (3 - 0)
    assert reward == pytest.approx(-d - 1.2 + ctrl)
    assert not info["success"] and not terminated


def test_three_stages_advance_and_terminate():
    env = gym.make("qmp/MultistageReacher-v0", task=0)
    env.reset(seed=0)
    u = env.unwrapped
    rewards = []
    for stage, goal in enumerate(["g0", "g1", "g2"]):
        np.testing.assert_allclose(u.data.mocap_pos[0], SUBGOALS[goal])
        place_hand(env, goal)
        obs, reward, terminated, _, info = env.step(np.zeros(6))
        assert info["success"] and info["stage"] == stage + 1
        # The observation still shows the stage before the advance (kept quirk, spec 4.5).
        assert obs[12 + stage] == 1.0
        assert terminated == (stage == 2)
        rewards.append(info["stage_reward"])
    assert rewards == pytest.approx([-0.8, -0.4, 0.0])
    assert info["task_complete"] and info["episode_success"]


def test_success_threshold_is_5cm():
    env = gym.make("qmp/MultistageReacher-v0", task=2)
    q = np.array(GOAL_JOINTS["g1"])
    outcomes = set()
    for offset in (0.0, 0.05, 0.1, 0.15, 0.2, 0.3):
        env.reset(seed=0)
        env.unwrapped.set_state(q + np.array([offset, 0, 0, 0, 0, 0]), np.zeros(6))
        _, _, _, _, info = env.step(np.zeros(6))
        assert info["success"] == (info["dist"] < 0.05)
        outcomes.add(info["success"])
    assert outcomes == {True, False}


def test_shifted_sparse_and_stay_variants():
    shifted = gym.make("qmp/MultistageReacher-v0", task=1)
    shifted.reset(seed=0)
    _, reward, _, _, info = shifted.step(np.zeros(6))
    assert info["stage_reward"] == 0.0
    assert reward == pytest.approx(-info["dist"] + info["ctrl_reward"] - 2.0)
    place_hand(shifted, "g0")
    _, reward, _, _, info = shifted.step(np.zeros(6))
    assert info["success"] and info["stage_reward"] == 200.0

    sparse = gym.make("qmp/MultistageReacher-v0", task=3)
    sparse.reset(seed=0)
    _, reward, _, _, info = sparse.step(np.zeros(6))
    assert info["dist_reward"] == 0.0 and info["dist"] > 0.05
    assert reward == pytest.approx(-1.2 + info["ctrl_reward"])

    stay = gym.make("qmp/MultistageReacher-v0", task=4)
    stay.reset(seed=0)
    u = stay.unwrapped
    stages = []
    for _ in range(90):
        place_hand(stay, "stay")
        _, reward, terminated, _, info = stay.step(np.zeros(6))
        stages.append(info["stage"])
        np.testing.assert_allclose(u.data.mocap_pos[0], STAY_GOAL)  # the goal never moves
    assert stages[28:31] == [0, 1, 1] and stages[59] == 2 and terminated
    assert info["stage_reward"] == 0.0


def test_episode_is_truncated_at_200_steps():
    env = gym.make("qmp/MultistageReacher-v0", task=3)
    env.reset(seed=0)
    for t in range(1, 201):
        _, _, terminated, truncated, _ = env.step(np.zeros(6))
        assert not terminated
        assert truncated == (t == 200)


def test_stay_goal_sampled_differs_per_instance_and_is_seeded():
    goals = []
    for seed in (0, 0, 1):
        env = gym.make("qmp/MultistageReacher-v0", task=4, stay_goal="sampled")
        env.reset(seed=seed)
        goals.append(env.unwrapped.data.mocap_pos[0].copy())
    np.testing.assert_array_equal(goals[0], goals[1])
    assert not np.array_equal(goals[0], goals[2])
    assert np.linalg.norm(goals[0] - STAY_GOAL) < 0.05


def test_instability_ends_the_episode_with_the_fail_penalty():
    env = gym.make("qmp/MultistageReacher-v0", task=0)
    obs_before, _ = env.reset(seed=0)
    u = env.unwrapped
    u.data.qvel[:] = 1e12  # a state the integrator cannot handle
    obs, reward, terminated, _, info = env.step(np.zeros(6))
    assert terminated and info["unstable"]
    assert info["ctrl_reward"] <= -100 and np.isfinite(reward)
    np.testing.assert_array_equal(obs, obs_before)
