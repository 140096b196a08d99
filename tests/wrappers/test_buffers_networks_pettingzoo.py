"""SB3 buffer adapters, the network ensemble, the PettingZoo view and the evaluation helper."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from pettingzoo.test import parallel_api_test
from torch import nn

import qmp_envs
from cleanrl_qmp.networks import (
    EnsembleActor,
    EnsembleLinear,
    EnsembleMLP,
    TaskFeatures,
    TwinCritic,
    forward_by_task,
)
from qmp_wrappers import MultiTaskReplayBuffer, QMPReplayBuffer, executed_actions
from qmp_wrappers.pettingzoo_env import MultiTaskParallelEnv
from qmp_wrappers.vector import QMPBehaviorWrapper

# -- buffers -----------------------------------------------------------------------------------


def always_policy_two(num_tasks, action_dim):
    """Every task executes policy 2's proposal (value 0.2), whatever the agent proposed."""

    def policy(obs):
        return np.repeat(obs[:, -num_tasks:].argmax(1, keepdims=True) / 10.0, action_dim, axis=1)

    return policy, lambda obs, act: -np.abs(act[:, 0] - 0.2)


def test_cleanrl_style_loop_stores_executed_actions():
    envs = QMPBehaviorWrapper(gym.make_vec("qmp/MultistageReacher-v0"))
    envs.attach(*always_policy_two(5, 6))
    rb = MultiTaskReplayBuffer(
        100, envs.single_observation_space, envs.single_action_space, num_tasks=5
    )
    obs, _ = envs.reset(seed=0)
    proposals, executed = [], []
    for _ in range(10):
        actions = np.random.default_rng(len(proposals)).uniform(-1, 1, (5, 6)).astype(np.float32)
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        rb.add(obs, next_obs, actions, rewards, terminations, infos)
        proposals.append(actions)
        executed.append(infos["qmp_action"])
        obs = next_obs
    np.testing.assert_array_equal(rb.actions[:10], np.array(executed))
    # Other tasks execute policy 2's proposal; task 2 executes its agent's own action.
    np.testing.assert_allclose(rb.actions[:10, [0, 1, 3, 4]], 0.2, atol=1e-6)
    np.testing.assert_array_equal(rb.actions[:10, 2], np.array(proposals)[:, 2])

    batch = rb.sample_tasks(7)
    assert batch.observations.shape == (5, 7, 23) and batch.actions.shape == (5, 7, 6)
    assert batch.rewards.shape == (5, 7) and batch.dones.shape == (5, 7)
    # Row k of the batch holds task k's data only.
    assert torch.all(batch.observations[:, :, -5:].argmax(-1) == torch.arange(5)[:, None])


def test_a_grown_buffer_stores_and_samples_as_one_built_large():
    """A resume with a larger budget grows the checkpoint's buffer (harness.load)."""
    obs_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    act_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    small, large = (MultiTaskReplayBuffer(c, obs_space, act_space, num_tasks=2) for c in (6, 12))
    rng = np.random.default_rng(0)
    steps = [rng.uniform(-1, 1, (2, 8)).astype(np.float32) for _ in range(10)]

    def add(buffer, step):
        infos = {"qmp_action": step[:, 3:5]}
        buffer.add(step[:, :3], step[:, 5:8], step[:, 3:5], step[:, 0], np.zeros(2), infos)

    for step in steps[:5]:
        add(small, step)
        add(large, step)
    small.grow(12)
    small.grow(4)  # never shrinks: a larger buffer than needed samples the same
    assert small.capacity == 12 and small.observations.shape == large.observations.shape
    for step in steps[5:]:
        add(small, step)
        add(large, step)
    a = small.sample_tasks(9, np.random.default_rng(1))
    b = large.sample_tasks(9, np.random.default_rng(1))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    full = MultiTaskReplayBuffer(3, obs_space, act_space, num_tasks=2)
    for step in steps[:3]:
        add(full, step)
    with pytest.raises(ValueError, match=r"full \(3 per env\) and has overwritten"):
        full.grow(6)


def test_sb3_style_infos_and_scaled_actions():
    space = gym.spaces.Box(np.array([0.0, -2.0], np.float32), np.array([1.0, 2.0], np.float32))
    obs_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    rb = QMPReplayBuffer(
        10, obs_space, space, store_scaled_actions=True, handle_timeout_termination=True
    )
    infos = [{"qmp_action": np.array([1.0, -2.0]), "TimeLimit.truncated": True}]
    rb.add(
        np.zeros((1, 3)), np.zeros((1, 3)), np.array([[0.5, 0.0]]), np.zeros(1), np.ones(1), infos
    )
    np.testing.assert_allclose(rb.actions[0, 0], [1.0, -1.0])
    assert rb.timeouts[0, 0] == 1.0
    with pytest.raises(KeyError, match="QMPBehaviorWrapper"):
        rb.add(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((1, 2)), np.zeros(1), np.zeros(1), [{}])
    with pytest.raises(ValueError, match="2 infos for 1 environments"):
        executed_actions([{}, {}], n_envs=1)
    two_tasks = MultiTaskReplayBuffer(10, obs_space, space, num_tasks=3)
    for _ in range(4):
        two_tasks.add(
            np.zeros((3, 3)),
            np.zeros((3, 3)),
            np.zeros((3, 2)),
            np.arange(3.0),
            np.zeros(3),
            {"qmp_action": np.zeros((3, 2))},
        )
    shared, sources = two_tasks.sample_other_tasks(50)
    assert np.all(sources != np.arange(3)[:, None])  # never the task's own data
    np.testing.assert_array_equal(shared.rewards.numpy(), sources)  # reward k was task k's
    with pytest.raises(ValueError, match="empty"):
        MultiTaskReplayBuffer(10, obs_space, space, num_tasks=2).sample_tasks(4)


# -- networks ----------------------------------------------------------------------------------


def test_ensemble_linear_equals_separate_layers():
    layer = EnsembleLinear(3, 4, 2)
    x = torch.randn(3, 5, 4)
    for k in range(3):
        reference = nn.functional.linear(x[k], layer.weight[k].T, layer.bias[k, 0])
        torch.testing.assert_close(layer(x)[k], reference)


def test_ensemble_mlp_groups_large_calls_without_changing_results():
    torch.manual_seed(0)
    whole = EnsembleMLP(5, [3, 8, 2], max_rows=10_000)
    grouped = EnsembleMLP(5, [3, 8, 2], max_rows=7)  # 4 rows a member: groups of one member
    grouped.load_state_dict(whole.state_dict())
    x = torch.randn(5, 4, 3)
    out_whole, out_grouped = whole(x), grouped(x)
    torch.testing.assert_close(out_grouped, out_whole)
    out_whole.square().sum().backward()
    out_grouped.square().sum().backward()
    for a, b in zip(whole.parameters(), grouped.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad)


def test_forward_by_task_answers_each_row_with_its_member():
    layer = EnsembleLinear(4, 3, 2)
    x = torch.randn(11, 3)
    task_ids = torch.tensor([3, 0, 0, 2, 3, 3, 1, 0, 3, 2, 3])
    out = forward_by_task(layer, x, task_ids, 4)
    for m in range(11):
        k = int(task_ids[m])
        torch.testing.assert_close(out[m], x[m] @ layer.weight[k] + layer.bias[k, 0])


def test_actor_and_critic_dispatch_on_the_one_hot():
    torch.manual_seed(0)
    features = TaskFeatures(4, np.array([True, False, True, True]))
    actor = EnsembleActor(3, features, 2, (8, 8))
    critic = TwinCritic(3, features, 2, (8, 8))
    obs = torch.cat([torch.randn(6, 4), torch.eye(3)[[2, 0, 1, 1, 2, 0]]], dim=1)
    deterministic = actor.deterministic_act(obs)
    q1, q2 = critic.score(obs, deterministic)
    for m, task in enumerate([2, 0, 1, 1, 2, 0]):
        grouped = torch.zeros(3, 1, 7)
        grouped[task, 0] = obs[m]
        torch.testing.assert_close(deterministic[m], torch.tanh(actor(grouped)[0][task, 0]))
        torch.testing.assert_close(
            q1[m], critic(grouped, deterministic[m].expand(3, 1, 2))[0][task, 0]
        )
    sampled, mean = actor.act(obs)
    torch.testing.assert_close(mean, deterministic)
    assert sampled.shape == (6, 2) and torch.all(sampled.abs() <= 1)
    assert q2.shape == (6, 1)


# -- PettingZoo and evaluation ------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ["qmp/PointReach-v0", "qmp/MultistageReacher-v0"])
def test_pettingzoo_parallel_api(env_id):
    parallel_api_test(MultiTaskParallelEnv(env_id), num_cycles=250)


def test_pettingzoo_agents_and_errors():
    env = MultiTaskParallelEnv("qmp/Walker2dMT4-v0")
    obs, _ = env.reset(seed=0)
    assert env.agents == ["forward", "backward", "balance", "crawl"]
    assert obs["crawl"][-4:].tolist() == [0, 0, 0, 1]
    with pytest.raises(KeyError, match="no action for live agents"):
        env.step({"forward": np.zeros(6)})
    with pytest.raises(ValueError, match="one agent per task"):
        MultiTaskParallelEnv("qmp/Walker2dMT4-v0", task=1)


def test_evaluation_protocol_counts_success_at_any_step_per_task(tmp_path):
    # Zero actions: in Reacher the "stay" task passes its goal during the reset transient, so
    # success at ANY step is 1 there and 0 for the reaching tasks (spec 4.8).
    result = qmp_envs.evaluate_policy(
        lambda obs: np.zeros((len(obs), 6)),
        "qmp/MultistageReacher-v0",
        episodes_per_task=2,
        env_kwargs={"compat": "official"},
    )
    assert result.success.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert result.episode_length.tolist() == [200.0] * 5
    assert result.extras["task_complete"].tolist() == [0.0] * 5
    metrics = result.as_dict()
    assert metrics["eval/success_mean"] == pytest.approx(0.2)
    assert metrics["eval/success/stay"] == 1.0
    with pytest.raises(ValueError, match="episodes_per_task"):
        qmp_envs.evaluate_policy(lambda o: o, "qmp/PointReach-v0", episodes_per_task=0)


def test_evaluation_videos_are_rendered_headless(tmp_path):
    result = qmp_envs.evaluate_policy(
        lambda obs: np.zeros((len(obs), 6)),
        "qmp/MultistageReacher-v0",
        episodes_per_task=1,
        tasks=[4],
        env_kwargs={"width": 64, "height": 48, "max_episode_steps": 10},
        video_dir=tmp_path,
    )
    assert result.task_names == ["stay"] and result.episode_length.tolist() == [10.0]
    import imageio.v2 as imageio

    frames = imageio.mimread(tmp_path / "stay.gif")
    assert len(frames) == 11 and frames[0].shape[:2] == (48, 64)
