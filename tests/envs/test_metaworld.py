"""Meta-World MT10 / MT50 behind the qmp/ API (spec section 8)."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from metaworld.env_dict import MT10_V3

import qmp_envs
from qmp_envs.metaworld_suites import MT10_TASKS, MT50_TASKS, goal_variations


@pytest.fixture(scope="module")
def mt10_vec():
    envs = gym.make_vec(
        "qmp/MetaWorldMT10-v0", seed=0, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    yield envs
    envs.close()


def test_task_order_matches_metaworld_and_the_original():
    assert [f"{name}-v3" for name in MT10_TASKS] == list(MT10_V3)
    assert len(MT50_TASKS) == len(set(MT50_TASKS)) == 50
    assert MT50_TASKS[:3] == ["assembly", "basketball", "bin-picking"] and MT50_TASKS[31] == "reach"
    env = gym.make("qmp/MetaWorldMT50-v0", task=31)
    assert env.unwrapped.num_tasks == 50 and env.observation_space.shape == (89,)


def test_env_checker_and_observation_layout():
    env = gym.make("qmp/MetaWorldMT10-v0", task=4, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    obs, info = env.reset(seed=0)
    assert obs.shape == (49,) and obs.dtype == np.float32 and obs in env.observation_space
    assert obs[-10:].tolist() == np.eye(10)[4].tolist() and info["task_id"] == 4
    obs, reward, terminated, _, info = env.step(np.zeros(4, np.float32))
    assert not terminated and isinstance(info["success"], bool) and 0 <= reward <= 10
    assert {"near_object", "grasp_success", "in_place_reward", "obj_to_target"} <= set(info)
    np.testing.assert_allclose(
        obs[36:39], env.unwrapped.task_env(4)._target_pos, atol=1e-6
    )  # goal visible


def test_make_vec_one_sub_env_per_task_and_horizon(mt10_vec):
    obs, info = mt10_vec.reset(seed=0)
    assert obs.shape == (10, 49) and obs[:, -10:].argmax(1).tolist() == list(range(10))
    for t in range(1, 501):
        _, _, terminated, truncated, info = mt10_vec.step(np.zeros((10, 4), np.float32))
        assert not terminated.any()
        assert truncated.all() == (t == 500)


def test_seeded_goals_and_rollouts_reproduce_and_eval_split_differs():
    def rollout(seed, split="train"):
        env = gym.make("qmp/MetaWorldMT10-v0", task=1, seed=seed, split=split)
        obs, _ = env.reset(seed=5)
        trace = [obs] + [env.step(np.full(4, 0.3, np.float32))[0] for _ in range(5)]
        return np.array(trace)

    np.testing.assert_array_equal(rollout(0), rollout(0))
    assert not np.array_equal(rollout(0)[:, 36:39], rollout(1)[:, 36:39])  # goal seed matters
    assert not np.array_equal(rollout(0)[:, 36:39], rollout(0, "eval")[:, 36:39])
    assert goal_variations("push", 0) is goal_variations("push", 0)  # built once per process


def test_fifty_resets_visit_each_goal_variation_once():
    env = gym.make("qmp/MetaWorldMT10-v0", task=0, seed=0)
    first = [env.reset(seed=0)[1]["variation"]] + [env.reset()[1]["variation"] for _ in range(49)]
    assert sorted(first) == list(range(50))
    second = [env.reset()[1]["variation"] for _ in range(50)]
    assert sorted(second) == list(range(50)) and second != first  # reshuffled


def test_a_few_mt50_tasks_without_building_the_rest():
    env = gym.make("qmp/MetaWorldMT50-v0", tasks=[0, 49], seed=0)
    tasks = [env.reset(seed=0 if i == 0 else None)[1]["task_id"] for i in range(4)]
    assert tasks == [0, 49, 0, 49]
    assert sorted(env.unwrapped._envs) == [0, 49]
    with pytest.raises(ValueError, match="not among this env's tasks"):
        env.reset(options={"task": 3})


def test_pickled_env_continues_bit_exactly(assert_pickle_continues_exactly):
    env = gym.make("qmp/MetaWorldMT10-v0", task=2, seed=0)  # pick-place keeps MjData views
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (120, 4)).astype(np.float32)
    assert assert_pickle_continues_exactly(env, actions) < 2_000_000


def test_bad_arguments():
    with pytest.raises(ValueError, match="benchmark"):
        qmp_envs.metaworld_suites.MetaWorldMTEnv(benchmark="MT25")
    with pytest.raises(ValueError, match="split"):
        gym.make("qmp/MetaWorldMT10-v0", split="test")
    with pytest.raises(ValueError, match="unknown task 10"):
        gym.make("qmp/MetaWorldMT10-v0", task=10)


def test_evaluation_uses_the_eval_split_and_one_episode_per_variation(monkeypatch):
    made = []
    original = gym.make

    def spy(env_id, **kwargs):
        made.append(kwargs)
        return original(env_id, **kwargs)

    monkeypatch.setattr(qmp_envs.evaluation.gym, "make", spy)
    result = qmp_envs.evaluate_policy(
        lambda obs: np.zeros((len(obs), 4)),
        "qmp/MetaWorldMT10-v0",
        episodes_per_task=1,
        tasks=[0],
        env_kwargs={"max_episode_steps": 5, "seed": 0},
    )
    assert result.task_names == ["reach"] and result.episode_length.tolist() == [5.0]
    assert made[-1]["split"] == "eval"
    assert gym.make("qmp/MetaWorldMT10-v0").unwrapped.default_eval_episodes == 50


@pytest.mark.slow
def test_full_mt50_vector_env_builds_and_steps():
    envs = gym.make_vec("qmp/MetaWorldMT50-v0", seed=0)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (50, 89) and obs[:, -50:].argmax(1).tolist() == list(range(50))
    obs, *_ = envs.step(np.zeros((50, 4), np.float32))
    assert np.isfinite(obs).all()
    envs.close()


def test_metaworld_evaluation_runs_on_our_mt10_and_agrees_with_evaluate_policy():
    """Meta-World's own evaluation() and ours, same envs and goals, scripted experts."""
    from gymnasium.utils import seeding
    from metaworld.evaluation import evaluation

    from qmp_envs.metaworld_suites import scripted_policy

    policy = scripted_policy("qmp/MetaWorldMT10-v0")

    class ScriptedAgent:
        def eval_action(self, observations):
            return policy(observations)

        def reset(self, env_mask):
            pass

    episodes, seed = 3, 7
    envs = gym.make_vec(
        "qmp/MetaWorldMT10-v0",
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        record_episode_statistics=True,
        split="eval",
        seed=0,
    )
    # The goal order a seeded reset would draw, without spending a reset on it.
    envs.set_attr("np_random", [seeding.np_random(seed + k)[0] for k in range(10)])
    mean_success, _, per_task, _ = evaluation(ScriptedAgent(), envs, num_episodes=episodes)
    assert envs.get_attr("terminate_on_success") == (False,) * 10  # toggled back
    envs.close()

    with qmp_envs.EvaluationEnvs("qmp/MetaWorldMT10-v0", env_kwargs={"seed": 0}) as ours:
        result = qmp_envs.evaluate_policy(
            policy, ours, episodes_per_task=episodes, seed=seed, stop_at_success=True
        )
    theirs = {name.removesuffix("-v3"): rate for name, rate in per_task.items()}
    assert theirs == dict(zip(result.task_names, result.success.tolist(), strict=True))
    assert mean_success == pytest.approx(result.mean_success)
    assert mean_success > 0.5  # the experts mostly succeed: the comparison is not vacuous
    assert np.isnan(result.mean_return)  # shortened episodes report no return
