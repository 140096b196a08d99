"""CTPG-style guidance: the gates against brute force, the hindsight relabelling on a hand-made
trajectory, K-step holds across episode ends, and the guided segments the script learns from."""

from __future__ import annotations

import copy
import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

import qmp_envs  # noqa: F401
from cleanrl_qmp.guidance import GuideSegments, hindsight_choice
from cleanrl_qmp.networks import EnsembleActor, TaskFeatures
from qmp_wrappers.guide import guide_blocked, policy_filter_mask, sample_guided
from qmp_wrappers.vector import QMPBehaviorWrapper


def test_policy_filter_and_guide_block_match_brute_force():
    gen = torch.Generator().manual_seed(0)
    batch, candidates, tasks = 64, 5, 5
    guide_values = torch.randn(batch, candidates, generator=gen)
    own_values = torch.randn(batch, generator=gen)
    task_ids = torch.randint(0, tasks, (batch,), generator=gen)
    log_alpha = torch.randn(tasks, generator=gen)
    mask = policy_filter_mask(guide_values, own_values, task_ids)
    blocked = guide_blocked(log_alpha, task_ids)
    mean_log_alpha = sum(log_alpha.tolist()) / tasks
    for b in range(batch):
        i = int(task_ids[b])
        for j in range(candidates):
            keep = j == i or float(guide_values[b, j]) >= float(own_values[b])
            assert bool(mask[b, j]) == keep
        assert bool(blocked[b]) == (float(log_alpha[i]) > mean_log_alpha)


def test_guided_sampling_never_picks_a_masked_candidate_and_follows_the_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(20_000, 1)
    mask = torch.tensor([[True, False, True, True]]).repeat(20_000, 1)
    chosen = sample_guided(logits, mask, np.random.default_rng(0))
    assert not (chosen == 1).any()
    p = np.exp([0.0, 2.0, 3.0]) / np.exp([0.0, 2.0, 3.0]).sum()
    freq = np.bincount(chosen, minlength=4)[[0, 2, 3]] / len(chosen)
    np.testing.assert_allclose(freq, p, atol=0.015)
    # The same draws as a brute-force inverse CDF with the same generator.
    draws = np.random.default_rng(0).random(20_000)
    brute = [next(j for j, c in zip([0, 2, 3], np.cumsum(p), strict=True) if d <= c) for d in draws]
    assert (chosen == np.array(brute)).mean() > 0.999  # ties at float rounding only


def hand_made_actor(means: list[float]) -> EnsembleActor:
    """Three members whose policies ignore the state: member j ~ tanh(N(means[j], 0.1^2))."""
    actor = EnsembleActor(len(means), TaskFeatures(2, np.ones(2, dtype=bool)), 1, (4,))
    with torch.no_grad():
        for layer in actor.net.layers:
            layer.weight.zero_()
            layer.bias.zero_()
        last = actor.net.layers[-1]
        for j, m in enumerate(means):
            last.bias[j, 0, 0] = m  # mean
            last.bias[j, 0, 1] = float(np.log(0.1))  # log std
    return actor


def test_hindsight_relabels_with_the_policy_that_explains_the_actions():
    actor = hand_made_actor([-1.0, 0.0, 1.0])
    # Task-major (N=3 tasks, B=2 segments, K=4 steps): segment actions near tanh(1) and tanh(-1).
    k = 4
    obs = torch.zeros(3, 2, k, 2 + 3)
    actions = torch.empty(3, 2, k, 1)
    actions[:, 0] = float(np.tanh(1.0))
    actions[:, 1] = float(np.tanh(-1.0))
    valid = torch.ones(3, 2, k)
    valid[:, 1, 2:] = 0.0  # a segment ended early by an episode end
    actions[:, 1, 2:] = float(np.tanh(1.0))  # padding must not count
    relabelled = hindsight_choice(actor, obs, actions, valid)
    assert relabelled.tolist() == [[2, 0], [2, 0], [2, 0]]


class FixedGuide:
    """A hand-made guide: prefers candidate (task + 1) % N, nothing masked, nothing blocked."""

    def __init__(self, num_tasks: int):
        self.n = num_tasks

    def _tasks(self, obs):
        return obs[:, -self.n :].argmax(1)

    def logits(self, obs):
        return 50.0 * torch.nn.functional.one_hot((self._tasks(obs) + 1) % self.n, self.n)

    def guide_values(self, obs):
        return torch.zeros(len(obs), self.n)

    def own_values(self, obs):
        return torch.full((len(obs),), -1.0)

    def log_temperatures(self):
        return torch.zeros(self.n)


def test_guided_choices_hold_k_steps_and_restart_at_episode_ends():
    k = 7
    envs = QMPBehaviorWrapper(
        gym.make_vec("qmp/PointReachMT4-v0", autoreset_mode=gym.vector.AutoresetMode.SAME_STEP),
        mixture="guide",
        hold_steps=k,
        seed=0,
    )
    n = envs.num_tasks
    policy = lambda obs: (np.tanh(obs[:, :2]), np.tanh(obs[:, :2]))  # noqa: E731
    envs.attach(policy=policy, q_function=lambda o, a: -np.abs(a).sum(1), guide=FixedGuide(n))
    segments = GuideSegments(n, envs.single_observation_space.shape[0], 2, k, 64, 0.9, "cpu")
    obs, _ = envs.reset(seed=0)
    made, lengths = [], []
    for _ in range(120):  # 50-step episodes: 2 full episodes and part of a third
        actions = np.zeros((n, 2), dtype=np.float32)
        next_obs, rewards, term, trunc, info = envs.step(actions)
        real_next = next_obs.copy()
        done = term | trunc
        if done.any():
            real_next[done] = np.stack(info["final_obs"][done])
        segments.add(obs, info["qmp_action"], rewards, real_next, term, trunc,
                     info["qmp_choice_made"], info["qmp_policy"])  # fmt: skip
        made.append(info["qmp_choice_made"][0])
        assert (info["qmp_policy"] == (np.arange(n) + 1) % n).all()  # the guide's choice acts
        obs = next_obs
    starts = [t for t, m in enumerate(made) if m]
    # Within an episode every K steps; each episode's first step chooses afresh.
    assert starts == [0, 7, 14, 21, 28, 35, 42, 49, 50, 57, 64, 71, 78, 85, 92, 99, 100, 107, 114]
    lengths = segments.seq_valid[0, : segments.pos[0]].sum(1).tolist()
    assert lengths == [7.0] * 7 + [1.0] + [7.0] * 7 + [1.0] + [7.0] * 2
    # The episode's last segment bootstraps with gamma^1 (time limit: truncated, not terminal).
    assert segments.discounts[0, 7] == pytest.approx(0.9) and segments.choices[0, 7] == 1
    np.testing.assert_allclose(segments.discounts[0, :7], 0.9**7, rtol=1e-6)
    # Grown for a larger budget on resume: every segment kept, the same draws.
    before = copy.deepcopy(segments)
    segments.grow(128)
    segments.grow(16)  # never shrinks
    assert segments.capacity == 128 and segments.seq_actions.shape[1] == 128
    np.random.seed(3)
    drawn_before = before.sample(5)
    np.random.seed(3)
    drawn_after = segments.sample(5)
    for f in dataclasses.fields(drawn_after):
        assert torch.equal(getattr(drawn_before, f.name), getattr(drawn_after, f.name))
    before.full[1] = True
    with pytest.raises(ValueError, match="full .* cannot grow to 128"):
        before.grow(128)


def test_attach_checks_the_guide():
    envs = QMPBehaviorWrapper(gym.make_vec("qmp/PointReachMT4-v0"), mixture="guide", seed=0)
    policy = lambda obs: (np.tanh(obs[:, :2]), np.tanh(obs[:, :2]))  # noqa: E731
    q = lambda o, a: -np.abs(a).sum(1)  # noqa: E731
    with pytest.raises(ValueError, match='mixture="guide" needs attach'):
        envs.attach(policy=policy, q_function=q)
    with pytest.raises(TypeError, match="lacks logits"):
        envs.attach(policy=policy, q_function=q, guide=object())  # type: ignore[arg-type]

    class WrongShape(FixedGuide):
        def own_values(self, obs):
            return torch.zeros(len(obs), 1)

    with pytest.raises(ValueError, match=r"guide.own_values returned \(4, 1\), expected"):
        envs.attach(policy=policy, q_function=q, guide=WrongShape(4))
