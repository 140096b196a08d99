"""The multi-task API that every qmp/ id shares."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import qmp_envs

# Meta-World ids have their own tests (tests/envs/test_metaworld.py): building MT50 takes minutes.
ENV_IDS = sorted(i for i in qmp_envs.SUITES if "MetaWorld" not in i)
MUJOCO_IDS = [i for i in ENV_IDS if not i.startswith("qmp/PointReach")]


def test_import_registers_every_id():
    for env_id in qmp_envs.SUITES:
        assert env_id in gym.registry
        facts = qmp_envs.SUITES[env_id]
        expected = None if facts.env_owns_time_limit else facts.max_episode_steps
        assert gym.spec(env_id).max_episode_steps == expected
        assert gym.spec(env_id).to_json()  # string entry points only


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_checker_passes_without_warnings(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=False)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_observation_layout_one_hot_and_info(env_id):
    env = gym.make(env_id)
    unwrapped = env.unwrapped
    n = unwrapped.num_tasks
    assert len(unwrapped.task_names) == n
    assert env.observation_space.shape == (unwrapped.feature_dim + n,)
    assert env.observation_space.dtype == np.float32
    assert unwrapped.agent_feature_mask.shape == (unwrapped.feature_dim,)
    for expected_task in list(range(n)) * 2:  # the default schedule cycles 0..N-1
        obs, info = env.reset()
        assert info["task_id"] == expected_task
        assert obs.dtype == np.float32 and obs in env.observation_space
        assert obs[-n:].tolist() == np.eye(n)[expected_task].tolist()
        obs, _, _, _, info = env.step(env.action_space.sample())
        assert info["task_id"] == expected_task and isinstance(info["success"], bool)
        assert isinstance(info["episode_success"], bool)
        assert int(obs[-n:].argmax()) == expected_task and obs in env.observation_space
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_pins_sub_env_k_to_task_k(env_id):
    n = qmp_envs.SUITES[env_id].num_tasks
    envs = gym.make_vec(env_id)
    assert envs.num_envs == n
    obs, info = envs.reset(seed=0)
    assert obs.shape == (n, envs.single_observation_space.shape[0])
    assert obs[:, -n:].argmax(1).tolist() == list(range(n))
    assert info["task_id"].tolist() == list(range(n))
    for _ in range(3):
        obs, *_ = envs.step(envs.action_space.sample())
    assert obs[:, -n:].argmax(1).tolist() == list(range(n))
    envs.close()


def test_make_vec_repeats_tasks_and_rejects_bad_counts():
    envs = gym.make_vec("qmp/Walker2dMT4-v0", num_envs=8)
    obs, _ = envs.reset(seed=0)
    assert obs[:, -4:].argmax(1).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    envs.close()
    with pytest.raises(ValueError, match="multiple of the task count 4"):
        gym.make_vec("qmp/Walker2dMT4-v0", num_envs=6)
    with pytest.raises(ValueError, match="vector_strategy"):
        gym.make_vec("qmp/Walker2dMT4-v0", vector_strategy="threads")


def test_make_vec_async_matches_sync():
    kwargs = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
    sync = gym.make_vec("qmp/MazeLarge10-v0", **kwargs)
    asyn = gym.make_vec("qmp/MazeLarge10-v0", vector_strategy="async", **kwargs)
    assert isinstance(asyn, gym.vector.AsyncVectorEnv)
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 10, 2)).astype(np.float32)
    outputs = []
    for envs in (sync, asyn):
        obs, _ = envs.reset(seed=3)
        trace = [obs] + [envs.step(a)[0] for a in actions]
        outputs.append(np.array(trace))
        envs.close()
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seeded_rollouts_are_identical(env_id):
    actions = np.random.default_rng(1).uniform(
        -1, 1, (30, gym.spec(env_id).make().action_space.shape[0])
    )
    traces = []
    for _ in range(2):
        env = gym.make(env_id, task_schedule="random")
        obs, _ = env.reset(seed=42)
        trace = [obs]
        for action in actions:
            obs, reward, terminated, truncated, _ = env.step(action)
            trace.append(np.append(obs, reward))
            if terminated or truncated:
                obs, _ = env.reset()
                trace.append(obs)
        traces.append(np.concatenate(trace))
        # Re-seeding the same instance replays the same rollout too.
        obs_again, _ = env.reset(seed=42)
        np.testing.assert_array_equal(obs_again, traces[-1][: len(obs_again)])
        env.close()
    np.testing.assert_array_equal(traces[0], traces[1])


def test_task_selection_pinning_random_and_override():
    env = gym.make("qmp/MazeLarge10-v0", task=7)
    assert {env.reset()[1]["task_id"] for _ in range(5)} == {7}
    assert env.reset(options={"task": 2})[1]["task_id"] == 2
    # A near-miss option name is refused rather than silently ignored.
    with pytest.raises(ValueError, match="options=\\{'task': index\\}"):
        env.reset(options={"task_id": 2})
    env = gym.make("qmp/MazeLarge10-v0", task_schedule="random")
    env.reset(seed=0)
    tasks = [env.reset()[1]["task_id"] for _ in range(200)]
    assert set(tasks) == set(range(10))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"task": 10}, ValueError, "unknown task 10"),
        ({"task": -1}, ValueError, "unknown task -1"),
        ({"task": "0"}, TypeError, "int task index"),
        ({"task_schedule": "shuffle"}, ValueError, "task_schedule"),
    ],
)
def test_bad_construction_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        gym.make("qmp/MazeLarge10-v0", **kwargs)


def test_unsupported_render_mode_is_rejected():
    from qmp_envs.maze import MazeLargeEnv

    with pytest.raises(ValueError, match="render_mode"):
        MazeLargeEnv(render_mode="depth_array")


def test_bad_actions_and_options_raise_clear_errors():
    env = gym.make("qmp/MultistageReacher-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action has shape \(5,\), expected \(6,\)"):
        env.step(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([0, 0, np.nan, 0, 0, 0]))
    with pytest.raises(ValueError, match="unknown task 9"):
        env.reset(options={"task": 9})
    with pytest.raises(ValueError, match="compat"):
        gym.make("qmp/MultistageReacher-v0", compat="paper")


def test_actions_are_clipped_to_unit_box():
    env = gym.make("qmp/PointReach-v0")
    env.reset(seed=0)
    start = env.unwrapped.position.copy()
    env.step(np.array([5.0, 5.0]))
    np.testing.assert_allclose(env.unwrapped.position - start, [0.5, 0.5])


@pytest.mark.parametrize("env_id", MUJOCO_IDS)
def test_rgb_array_frame(env_id):
    env = gym.make(env_id, render_mode="rgb_array", width=96, height=64)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 96, 3) and frame.dtype == np.uint8
    assert frame.std() > 0  # something was drawn
    env.close()


def test_rendering_without_a_display_names_the_fix(monkeypatch):
    """MuJoCo's default GLFW backend needs a display: without one (and without MUJOCO_GL) the
    frame is refused with the fix, not a FatalError from inside mujoco.Renderer."""
    from qmp_envs.multitask import RenderingUnavailableError

    for name in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    env = gym.make("qmp/MultistageReacher-v0", render_mode="rgb_array", width=32, height=32)
    env.reset(seed=0)
    with pytest.raises(RenderingUnavailableError, match="no display.*MUJOCO_GL=egl"):
        env.render()
    env.step(env.action_space.sample())  # the env is still usable
    env.close()


@pytest.mark.parametrize("env_id", ["qmp/PointReach-v0", "qmp/PointReach-v1"])
def test_point_reach_frame(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    assert env.render().shape == (200, 200, 3)
    assert gym.make("qmp/PointReach-v0").unwrapped.render() is None
