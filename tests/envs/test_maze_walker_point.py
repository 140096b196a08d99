"""Maze, Walker2d and PointReach against the numbers of spec sections 3, 5 and 6."""

from collections import deque

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import qmp_envs
from qmp_envs.maze import LARGE_MAZE, MAZE_TASKS, wall_cells
from qmp_envs.walker import CRAWL, build_walker_model

# -- Maze -------------------------------------------------------------------------------------


def shortest_path(start, goal):
    queue, seen = deque([(start, 0)]), {start}
    while queue:
        (r, c), d = queue.popleft()
        if (r, c) == goal:
            return d
        for nxt in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if LARGE_MAZE[nxt[0]][nxt[1]] == "." and nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, d + 1))
    return None


def test_maze_layout_and_task_geometry():
    assert sum(row.count(".") for row in LARGE_MAZE) == 46
    expected_lengths = [9, 9, 9, 9, 11, 11, 11, 12, 14, 15]
    for (start, goal), length in zip(MAZE_TASKS, expected_lengths, strict=True):
        assert LARGE_MAZE[start[0]][start[1]] == "." and LARGE_MAZE[goal[0]][goal[1]] == "."
        assert shortest_path(start, goal) == length


def test_maze_model_matches_d4rl_placement():
    env = gym.make("qmp/MazeLarge10-v0", task=0)
    env.reset(seed=0)
    m, d = env.unwrapped.model, env.unwrapped.data
    assert m.opt.timestep == 0.01 and np.allclose(m.opt.gravity, 0)
    for r, c in wall_cells():
        np.testing.assert_allclose(m.geom(f"wall_{r}_{c}").pos, (r + 1, c + 1, 0))
    np.testing.assert_allclose(d.body("particle").xpos[:2], d.qpos + 1.2)
    assert m.body_mass[m.body("particle").id] == pytest.approx(4.18879, rel=1e-4)
    np.testing.assert_allclose(m.actuator_gear[:, 0], 100)


@pytest.mark.parametrize("task", range(10))
def test_maze_reset_near_start(task):
    env = gym.make("qmp/MazeLarge10-v0", task=task)
    obs, info = env.reset(seed=task)
    start, goal = MAZE_TASKS[task]
    assert np.all(np.abs(obs[:2] - start) <= 0.1)
    assert info["dist"] == pytest.approx(np.linalg.norm(obs[:2] - goal), abs=1e-6)


def test_maze_reward_success_and_termination():
    env = gym.make("qmp/MazeLarge10-v0", task=0)
    env.reset(seed=0)
    u = env.unwrapped
    goal = np.array(MAZE_TASKS[0][1], dtype=float)
    u.set_state(goal + np.array([0.3, 0.0]), np.zeros(2))
    obs, reward, terminated, truncated, info = env.step(np.zeros(2))
    d = np.linalg.norm(obs[:2] - goal)
    assert reward == pytest.approx(np.exp(-d) - 1.0) and info["dist"] == pytest.approx(d)
    assert info["success"] and terminated and not truncated
    u.set_state(goal + np.array([0.0, 0.6]), np.zeros(2))
    _, reward, terminated, _, info = env.step(np.zeros(2))
    assert not info["success"] and not terminated and -1 < reward < 0


def test_maze_velocity_is_clipped_before_the_step_and_walls_block():
    env = gym.make("qmp/MazeLarge10-v0", task=0)
    env.reset(seed=0)
    u = env.unwrapped
    u.set_state(np.array([1.0, 3.0]), np.array([20.0, 0.0]))
    obs, *_ = env.step(np.zeros(2))
    assert 4.9 < obs[2] <= 5.0  # clipped to 5, then one damped step
    # Push into the wall above start cell (1, 3): cell (0, 3) is a wall at x <= 0.3 - 0.7 + 0.5.
    for _ in range(200):
        obs, *_ = env.step(np.array([-1.0, 0.0]))
    assert obs[0] > -0.2 - 0.1 - 0.01  # the ball (radius 0.1) stops at the wall face x = -0.2


def test_maze_truncates_at_600():
    env = gym.make("qmp/MazeLarge10-v0", task=9)
    env.reset(seed=0)
    for t in range(1, 601):
        _, _, terminated, truncated, info = env.step(np.zeros(2))
        assert not terminated and truncated == (t == 600) and info["timeout"] == (t == 600)


# -- Walker2d ---------------------------------------------------------------------------------


@pytest.mark.parametrize("crawl", [False, True])
def test_walker_model_reference_values(crawl):
    model = build_walker_model(crawl)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    for body, pos in {
        "torso": (0, 0, 1.25),
        "thigh": (0, 0, 1.05),
        "leg": (0, 0, 0.35),
        "foot": (0.2, 0, 0),
    }.items():
        np.testing.assert_allclose(data.body(body).xpos, pos, atol=1e-9)
        if body != "torso":
            np.testing.assert_allclose(data.body(body + "_left").xpos, pos, atol=1e-9)
    masses = {b: model.body_mass[model.body(b).id] for b in ("torso", "thigh", "leg", "foot")}
    assert masses == pytest.approx(
        {"torso": 3.6652, "thigh": 4.0579, "leg": 2.7814, "foot": 3.1667}, abs=1e-4
    )
    assert model.body_mass.sum() == pytest.approx(23.677, abs=1e-3)
    assert (
        model.geom("foot_geom").friction[0] == 0.9
        and model.geom("foot_left_geom").friction[0] == 1.9
    )
    assert model.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4 and model.opt.timestep == 0.002
    names = {model.geom(i).name for i in range(model.ngeom)}
    assert ("ceiling_long" in names) == crawl


def test_walker_forward_reward_matches_formula():
    env = gym.make("qmp/Walker2dMT4-v0", task=0)
    env.reset(seed=0)
    u = env.unwrapped
    qpos_before = u.data.qpos.copy()
    action = np.linspace(-0.5, 0.5, 6)
    obs, reward, _, _, info = env.step(action)
    q = u.data.qpos
    v = (q[0] - qpos_before[0]) / 0.008
    delta_h = u.data.body("torso").xpos[2] - max(
        u.data.body("foot").xpos[2], u.data.body("foot_left").xpos[2]
    )
    feet = (abs(q[5] - qpos_before[5]) + abs(q[8] - qpos_before[8])) / 0.008
    expected = (
        (3 - abs(v - 3))
        + 0.1 * np.cos(q[2])
        - abs(1.1 - delta_h)
        - 0.001 * np.sum(action**2)
        + 1
        - 0.01 * feet
    )
    assert reward == pytest.approx(expected)
    assert info["x_velocity"] == pytest.approx(v) and info["delta_h"] == pytest.approx(delta_h)
    np.testing.assert_allclose(
        obs[:17], np.concatenate([q[1:9], np.clip(u.data.qvel, -10, 10)]), rtol=1e-6
    )


def test_walker_backward_balance_and_crawl_rewards():
    for task, check in [
        (1, lambda i: i["x_vel_reward"] == pytest.approx(3 - abs(-i["x_velocity"] - 3))),
        (
            2,
            lambda i: (
                i["x_vel_reward"] == pytest.approx(-abs(i["x_velocity"])) and i["foot_reward"] == 0
            ),
        ),
        (
            3,
            lambda i: (
                i["x_vel_reward"] == pytest.approx(2 * (3 - abs(i["x_velocity"] - 3)))
                and i["height_reward"] == 0
            ),
        ),
    ]:
        env = gym.make("qmp/Walker2dMT4-v0", task=task)
        env.reset(seed=0)
        _, _, _, _, info = env.step(np.zeros(6))
        assert check(info), (task, info)


def test_walker_falls_terminate_and_ceiling_contact_is_penalised():
    env = gym.make("qmp/Walker2dMT4-v0", task=0)
    env.reset(seed=0)
    u = env.unwrapped
    qpos = u.data.qpos.copy()
    qpos[1] = 0.7
    u.set_state(qpos, np.zeros(9))
    assert env.step(np.zeros(6))[2]  # h < 0.8

    crawl = gym.make("qmp/Walker2dMT4-v0", task=CRAWL)
    crawl.reset(seed=0)
    u = crawl.unwrapped
    qpos = u.data.qpos.copy()
    qpos[0] = 5.0  # under the ceiling, standing 1.25 m tall: the torso hits it
    u.set_state(qpos, np.zeros(9))
    _, _, terminated, _, info = crawl.step(np.zeros(6))
    assert terminated and info["collision_penalty"] == -10.0


@pytest.mark.parametrize(("compat", "terminal"), [("official", True), ("fixed", False)])
@pytest.mark.parametrize("horizon", [None, 30])
def test_walker_success_and_timeout_flag(compat, terminal, horizon):
    """Spec 6.8: the last step is terminated XOR truncated, at the env's own horizon."""
    kwargs = {} if horizon is None else {"horizon": horizon}
    env = gym.make("qmp/Walker2dMT4-v0", task=2, compat=compat, **kwargs)
    env.reset(seed=0)
    last = horizon or 1000
    env.unwrapped.elapsed_steps = last - 2
    _, _, terminated, truncated, info = env.step(np.zeros(6))
    assert not (info["success"] or terminated or truncated)
    env.unwrapped.set_state(env.unwrapped.init_qpos, np.zeros(9))  # standing upright
    _, _, terminated, truncated, info = env.step(np.zeros(6))
    assert info["success"] and (terminated, truncated) == (terminal, not terminal)
    assert env.unwrapped.elapsed_steps == last


def test_walker_horizon_is_validated():
    with pytest.raises(ValueError, match="horizon must be a positive int"):
        gym.make("qmp/Walker2dMT4-v0", horizon=0)


def test_walker_reset_takes_random_warmup_steps():
    env = gym.make("qmp/Walker2dMT4-v0", task=2)
    obs, _ = env.reset(seed=0)
    assert np.abs(obs[8:17]).max() > 0.05  # 10 random-action steps moved it
    assert env.unwrapped.elapsed_steps == 0


# -- PointReach -------------------------------------------------------------------------------


def test_point_reach_dynamics_reward_and_helpers():
    env = gym.make("qmp/PointReach-v0")
    obs, _ = env.reset(seed=0)
    u = env.unwrapped
    assert np.all((obs[:2] >= 0) & (obs[:2] <= 0.1)) and obs[2] == 1.0
    helper = qmp_envs.FixedDirectionPolicy("up-right", seed=0)
    steps = 0
    while True:
        sampled, mean = helper(obs[None])
        obs, reward, terminated, truncated, info = env.step(sampled[0])
        steps += 1
        if terminated or truncated:
            break
    assert terminated and info["success"] and reward == 1.0 and 14 <= steps <= 19
    assert np.linalg.norm(u.position - (9.5, 9.5)) <= 1.0


def test_point_reach_ctrl_cost_and_helper_configurations():
    env = gym.make("qmp/PointReach-v0", ctrl_cost=0.01)
    env.reset(seed=0)
    _, reward, *_ = env.step(np.array([1.0, -1.0]))
    assert reward == pytest.approx(-0.02)
    helpers = qmp_envs.helper_policies(["up", "right", "down-left"], seed=3)
    assert [h.name for h in helpers] == ["up", "right", "down-left"]
    with pytest.raises(ValueError, match="unknown helper"):
        qmp_envs.FixedDirectionPolicy("left")
    with pytest.raises(ValueError, match="ctrl_cost"):
        gym.make("qmp/PointReach-v0", ctrl_cost=-1.0)


def test_point_reach_random_policy_almost_never_succeeds():
    result = qmp_envs.evaluate_policy(
        lambda obs: np.random.default_rng(len(obs)).uniform(-1, 1, (len(obs), 2)),
        "qmp/PointReach-v0",
        episodes_per_task=200,
    )
    assert result.success[0] == 0.0


def test_point_reach_v1_has_a_start_bonus_and_a_larger_goal_reward():
    env = gym.make("qmp/PointReach-v1")
    env.reset(seed=0)
    u = env.unwrapped
    assert env.step(np.zeros(2))[1] == 0.05  # inside the start disc
    u.position = np.array([5.0, 5.0])
    assert env.step(np.zeros(2))[1] == 0.0  # away from both
    u.position = np.array([8.6, 8.6])
    _, reward, terminated, _, info = env.step(np.ones(2))
    assert reward == 10.0 and terminated and info["success"]
    with pytest.raises(ValueError, match="start_bonus"):
        gym.make("qmp/PointReach-v1", start_bonus=-1.0)


def test_point_reach_mt4_heading_to_each_goal_succeeds_with_reward_minus_distance():
    from qmp_envs.point_reach import MT4_GOALS

    env = gym.make("qmp/PointReachMT4-v0")
    for task, goal in enumerate(MT4_GOALS.values()):
        obs, info = env.reset(seed=task, options={"task": task})
        assert obs[2 + task] == 1.0 and env.unwrapped.task_name == list(MT4_GOALS)[task]
        for _ in range(50):
            direction = np.asarray(goal) - env.unwrapped.position
            action = direction / max(np.abs(direction).max(), 1e-9)  # full speed along the line
            obs, reward, terminated, truncated, info = env.step(action)
            assert reward == pytest.approx(-info["dist_to_goal"])
            if terminated:
                break
        assert info["success"] and terminated and not truncated
    # Standing still never succeeds: the start disc is 3.5+ units from every goal.
    env.reset(seed=0, options={"task": 0})
    for _ in range(50):
        *_, terminated, truncated, info = env.step(np.zeros(2))
    assert truncated and not info["episode_success"]
