"""Q-switch time per vector step: the wrapper's batched calls vs a loop over N task networks.

N tasks, one sub-env per task, per-task 256x256 tanh-Gaussian actors and twin critics.
- batched (ours): ``QMPBehaviorWrapper``'s selection, with the N networks as one stacked
  ensemble: ONE policy call for all N x N proposals, ONE Q call for all candidates.
- per-env loop (the original's design): one env per task, collected in turn, so every env step
  loops over the N policies on that env's observation, then scores the N proposals with the
  task's critic: N x (N + 1) module calls per vector step. The targets are against this.
- network loop (a stronger baseline, for reference): the same N separate modules, but each
  actor proposes for all envs at once, then each env's critic scores: 2N calls per vector step.
All three use the same weights; the script checks that they choose the same policies.

    python benchmarks/qswitch_speed.py [--tasks 5 10 50] [--repeats 50] [--feature-dim 39]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from cleanrl_qmp.networks import LOG_STD_MAX, LOG_STD_MIN, EnsembleActor, TaskFeatures, TwinCritic
from qmp_harness.cli_types import at_least
from qmp_wrappers.vector import QMPBehaviorWrapper


class RandomTaskVectorEnv(gym.vector.VectorEnv):
    """A stand-in vector env: sub-env k shows random features and task k's one-hot."""

    def __init__(self, num_tasks: int, feature_dim: int, action_dim: int):
        self.num_envs = num_tasks
        self.single_observation_space = gym.spaces.Box(
            -10, 10, (feature_dim + num_tasks,), np.float32
        )
        self.single_action_space = gym.spaces.Box(-1, 1, (action_dim,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, num_tasks
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_tasks)
        self.metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}
        self.rng = np.random.default_rng(0)
        self.feature_dim, self.num_tasks = feature_dim, num_tasks

    def _obs(self):
        obs = self.rng.standard_normal((self.num_envs, self.feature_dim + self.num_tasks)).astype(
            np.float32
        )
        obs[:, self.feature_dim :] = np.eye(self.num_tasks, dtype=np.float32)
        return obs

    def reset(self, *, seed=None, options=None):
        return self._obs(), {}

    def step(self, actions):
        zeros = np.zeros(self.num_envs)
        return self._obs(), zeros, zeros.astype(bool), zeros.astype(bool), {}


class LoopActor(nn.Module):
    """One task's CleanRL-style actor, with weights copied from ensemble member k."""

    def __init__(self, ensemble: EnsembleActor, k: int):
        super().__init__()
        *hidden, out = [to_linear(layer, k) for layer in ensemble.net.layers]
        self.trunk = nn.Sequential(*[layer for lin in hidden for layer in (lin, nn.ReLU())])
        half = out.out_features // 2  # the ensemble's last layer holds mean, then log-std
        self.fc_mean, self.fc_logstd = (
            nn.Linear(out.in_features, half),
            nn.Linear(out.in_features, half),
        )
        with torch.no_grad():
            for head, rows in ((self.fc_mean, slice(0, half)), (self.fc_logstd, slice(half, None))):
                head.weight.copy_(out.weight[rows])
                head.bias.copy_(out.bias[rows])
        self.index = ensemble.features.index

    def forward(self, obs):
        h = self.trunk(obs.index_select(-1, self.index))
        mean, log_std = self.fc_mean(h), self.fc_logstd(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        sample = torch.tanh(mean + log_std.exp() * torch.randn_like(mean))
        return sample, torch.tanh(mean)


class LoopCritic(nn.Module):
    def __init__(self, ensemble_net, k: int, index: torch.Tensor):
        super().__init__()
        *hidden, out = [to_linear(layer, k) for layer in ensemble_net.layers]
        layers = [layer for lin in hidden for layer in (lin, nn.ReLU())] + [out]
        self.net, self.index = nn.Sequential(*layers), index

    def forward(self, obs, actions):
        return self.net(torch.cat([obs.index_select(-1, self.index), actions], dim=-1))


def to_linear(ensemble_linear, k: int) -> nn.Linear:
    weight = ensemble_linear.weight[k]
    layer = nn.Linear(weight.shape[0], weight.shape[1])
    with torch.no_grad():
        layer.weight.copy_(weight.T)
        layer.bias.copy_(ensemble_linear.bias[k, 0])
    return layer


def loop_select(obs, agent_actions, actors, critics1, critics2, scoring):
    """The original design: a Python loop over the N policies and the N critics."""
    num_tasks = len(actors)
    samples, means = [], []
    for j, actor in enumerate(actors):
        relabelled = obs.clone()
        relabelled[:, -num_tasks:] = 0
        relabelled[:, obs.shape[1] - num_tasks + j] = 1
        sample, mean = actor(relabelled)
        samples.append(sample)
        means.append(mean)
    samples, means = torch.stack(samples, 1), torch.stack(means, 1)  # (B, N, A)
    samples[torch.arange(num_tasks), torch.arange(num_tasks)] = agent_actions
    chosen = []
    for i in range(num_tasks):  # env i collects task i
        candidates = means[i] if scoring == "original" else samples[i]
        obs_i = obs[i].expand(num_tasks, -1)
        q = critics1[i](obs_i, candidates)
        if scoring == "min_twin":
            q = torch.min(q, critics2[i](obs_i, candidates))
        chosen.append(int(q.argmax()))
    return samples[torch.arange(num_tasks), torch.tensor(chosen)], chosen


def per_env_select(obs, agent_actions, actors, critics1, critics2, scoring):
    """The original's collection: for each env separately, loop over all N policies."""
    num_tasks = len(actors)
    executed, chosen = [], []
    for i in range(num_tasks):  # env i collects task i
        samples, means = [], []
        for j, actor in enumerate(actors):
            relabelled = obs[i : i + 1].clone()
            relabelled[:, -num_tasks:] = 0
            relabelled[0, obs.shape[1] - num_tasks + j] = 1
            sample, mean = actor(relabelled)
            samples.append(agent_actions[i] if j == i else sample[0])
            means.append(mean[0])
        candidates = torch.stack(means if scoring == "original" else samples)
        obs_i = obs[i].expand(num_tasks, -1)
        q = critics1[i](obs_i, candidates)
        if scoring == "min_twin":
            q = torch.min(q, critics2[i](obs_i, candidates))
        best = int(q.argmax())
        chosen.append(best)
        executed.append(samples[best])
    return torch.stack(executed), chosen


def time_per_call(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def bench(num_tasks: int, feature_dim: int, action_dim: int, repeats: int, scoring: str) -> dict:
    torch.manual_seed(0)
    features = TaskFeatures(feature_dim, np.ones(feature_dim, dtype=bool))
    actor = EnsembleActor(num_tasks, features, action_dim, (256, 256))
    critic = TwinCritic(num_tasks, features, action_dim, (256, 256))
    env = QMPBehaviorWrapper(
        RandomTaskVectorEnv(num_tasks, feature_dim, action_dim),
        num_tasks=num_tasks,
        scoring=scoring,
    )
    env.attach(policy=actor.act, q_function=critic.score, device="cpu")
    obs, _ = env.reset(seed=0)
    agent_actions = np.zeros((num_tasks, action_dim), dtype=np.float32)

    actors = [LoopActor(actor, k) for k in range(num_tasks)]
    # Members k and N + k of the twin ensemble are task k's two critics.
    critics1 = [LoopCritic(critic.net, k, features.index) for k in range(num_tasks)]
    critics2 = [LoopCritic(critic.net, num_tasks + k, features.index) for k in range(num_tasks)]
    obs_t = torch.as_tensor(obs)
    agent_t = torch.as_tensor(agent_actions)

    # Same weights, same rule: the choices must agree (the "original" rule scores means only).
    if scoring == "original":
        _, ours = env.qmp.select(agent_actions)
        with torch.no_grad():
            _, network_loop = loop_select(obs_t, agent_t, actors, critics1, critics2, scoring)
            _, per_env = per_env_select(obs_t, agent_t, actors, critics1, critics2, scoring)
        assert ours.tolist() == network_loop == per_env, (ours, network_loop, per_env)

    batched = time_per_call(lambda: env.qmp.select(agent_actions), repeats)

    def loop():
        with torch.no_grad():
            executed, _ = loop_select(
                torch.as_tensor(obs), agent_t, actors, critics1, critics2, scoring
            )
            executed.numpy()

    looped = time_per_call(loop, repeats)

    def per_env():
        with torch.no_grad():
            executed, _ = per_env_select(
                torch.as_tensor(obs), agent_t, actors, critics1, critics2, scoring
            )
            executed.numpy()

    per_env_s = time_per_call(per_env, max(3, repeats // 5))
    return {
        "tasks": num_tasks,
        "scoring": scoring,
        "batched_ms": batched * 1e3,
        "loop_ms": looped * 1e3,
        "per_env_ms": per_env_s * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=at_least(1), nargs="+", default=[5, 10, 50])
    parser.add_argument("--repeats", type=at_least(1), default=30)
    parser.add_argument(
        "--feature-dim", type=at_least(1), default=39, help="39 = a Meta-World observation"
    )
    parser.add_argument("--action-dim", type=at_least(1), default=4)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    header = f"{'N':>4} {'scoring':>9} {'batched ms':>11} {'per-env loop ms':>16} {'speed-up':>9}"
    print(header + f" {'target':>14} {'network loop ms':>16} {'speed-up':>9}")
    targets = {10: 3.0, 50: 2.0}
    for n in args.tasks:
        for scoring in ("original", "min_twin"):
            r = bench(n, args.feature_dim, args.action_dim, args.repeats, scoring)
            ratio = r["per_env_ms"] / r["batched_ms"]
            target = (
                f">= {targets[n]:.0f}x {'met' if ratio >= targets[n] else 'MISSED'}"
                if n in targets
                else "-"
            )
            print(
                f"{n:>4} {scoring:>9} {r['batched_ms']:>11.2f}"
                f" {r['per_env_ms']:>16.2f} {ratio:>8.1f}x"
                f" {target:>14} {r['loop_ms']:>16.2f} {r['loop_ms'] / r['batched_ms']:>8.1f}x"
            )


if __name__ == "__main__":
    main()
