"""Training throughput of sac_qmp.py, measured side by side in one run.

1. QMP overhead: env steps/s after learning starts of ``sac_qmp.py --qmp`` vs ``--no-qmp``
   (target: ratio >= 0.90).
2. Batched ensemble vs the original's design: ``sac_qmp.py --no-qmp`` vs a reference that keeps
   N separate CleanRL-style SAC agents (one actor, twin critics, temperature and replay buffer
   each) and acts and updates them one after another, with the same hyperparameters and the
   same vector env (target: >= 3x).

Evaluation time is excluded. Steps are total env steps over all tasks.

    python benchmarks/script_speed.py [--env-ids qmp/MultistageReacher-v0] [--steps 3000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.buffers import ReplayBuffer
from torch import nn

import qmp_envs  # noqa: F401
from cleanrl_qmp import sac_qmp
from cleanrl_qmp.networks import LOG_STD_MAX, LOG_STD_MIN, soft_update, tanh_gaussian_sample
from qmp_harness.cli_types import at_least, qmp_env_id
from qmp_harness.config import PRESETS


def run_sac_qmp(env_id: str, qmp: bool, learning_starts: int, steps: int, out: Path) -> float:
    run_dir = out / f"{env_id.replace('/', '_')}_{'qmp' if qmp else 'noqmp'}"
    sac_qmp.main(
        sac_qmp.Args(
            env_id=env_id,
            qmp=qmp,
            learning_starts=learning_starts,
            total_timesteps=learning_starts + steps,
            eval_every=10**9,
            eval_episodes=1,
            progress=False,
            run_dir=str(run_dir),
        )
    )
    return json.loads((run_dir / "timing.json").read_text())["sps_after_learning_starts"]


class Actor(nn.Module):
    """One task's CleanRL-style actor."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        sizes = [obs_dim, *hidden]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.fc_mean = nn.Linear(hidden[-1], action_dim)
        self.fc_logstd = nn.Linear(hidden[-1], action_dim)

    def get_action(self, obs):
        h = self.trunk(obs)
        return tanh_gaussian_sample(
            self.fc_mean(h), self.fc_logstd(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        )


def q_network(obs_dim: int, action_dim: int, hidden: tuple[int, ...]) -> nn.Sequential:
    sizes = [obs_dim + action_dim, *hidden, 1]
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def run_separate_agents(env_id: str, learning_starts: int, steps: int) -> float:
    """N CleanRL-style SAC agents, acted and updated one after another."""
    preset = PRESETS[env_id]
    torch.manual_seed(0)
    envs = gym.make_vec(env_id, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    n = envs.num_envs
    mask = envs.get_attr("agent_feature_mask")[0]
    feature_dim = envs.get_attr("feature_dim")[0]
    index = torch.as_tensor(np.flatnonzero(mask))
    obs_dim, action_dim = len(index), envs.single_action_space.shape[0]
    hidden, lr, batch = preset.hidden, preset.learning_rate, preset.batch_size
    agents = []
    for _ in range(n):
        actor = Actor(obs_dim, action_dim, hidden)
        qf1, qf2 = q_network(obs_dim, action_dim, hidden), q_network(obs_dim, action_dim, hidden)
        qf1_t, qf2_t = (
            q_network(obs_dim, action_dim, hidden),
            q_network(obs_dim, action_dim, hidden),
        )
        qf1_t.load_state_dict(qf1.state_dict())
        qf2_t.load_state_dict(qf2.state_dict())
        log_alpha = torch.zeros(1, requires_grad=True)
        space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        agents.append(
            {
                "actor": actor,
                "qf1": qf1,
                "qf2": qf2,
                "qf1_t": qf1_t,
                "qf2_t": qf2_t,
                "log_alpha": log_alpha,
                "q_opt": torch.optim.Adam(
                    list(qf1.parameters()) + list(qf2.parameters()), lr=lr, foreach=True
                ),
                "a_opt": torch.optim.Adam(actor.parameters(), lr=lr, foreach=True),
                "alpha_opt": torch.optim.Adam([log_alpha], lr=lr, foreach=True),
                "rb": ReplayBuffer(
                    learning_starts + steps,
                    space,
                    envs.single_action_space,
                    "cpu",
                    handle_timeout_termination=False,
                ),
            }
        )

    def features(obs: np.ndarray) -> np.ndarray:
        return obs[..., :feature_dim][..., mask]

    obs, _ = envs.reset(seed=0)
    step, credit, clock = 0, 0.0, None
    while step < learning_starts + steps:
        with torch.no_grad():
            actions = np.stack(
                [
                    a["actor"].get_action(torch.as_tensor(features(obs[k : k + 1])))[0][0].numpy()
                    for k, a in enumerate(agents)
                ]
            )
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        real_next = next_obs.copy()
        done = terminations | truncations
        if done.any():
            real_next[done] = np.stack(infos["final_obs"][done])
        for k, a in enumerate(agents):
            a["rb"].add(
                features(obs[k]),
                features(real_next[k]),
                actions[k],
                rewards[k : k + 1],
                terminations[k : k + 1],
                [{}],
            )
        obs = next_obs
        step += n
        if step < learning_starts:
            continue
        if clock is None:
            clock = (time.perf_counter(), step)
        credit += preset.updates_per_step
        while credit >= 1:
            credit -= 1
            for a in agents:  # one task after another, as in the original
                data = a["rb"].sample(batch)
                alpha = a["log_alpha"].exp().detach()
                with torch.no_grad():
                    next_a, next_logp, _ = a["actor"].get_action(data.next_observations)
                    x = torch.cat([data.next_observations, next_a], 1)
                    target = torch.min(a["qf1_t"](x), a["qf2_t"](x)) - alpha * next_logp
                    y = data.rewards + (1 - data.dones) * 0.99 * target
                x = torch.cat([data.observations, data.actions], 1)
                q_loss = F.mse_loss(a["qf1"](x), y) + F.mse_loss(a["qf2"](x), y)
                a["q_opt"].zero_grad()
                q_loss.backward()
                a["q_opt"].step()
                pi, logp, _ = a["actor"].get_action(data.observations)
                x = torch.cat([data.observations, pi], 1)
                actor_loss = (alpha * logp - torch.min(a["qf1"](x), a["qf2"](x))).mean()
                a["a_opt"].zero_grad()
                actor_loss.backward()
                a["a_opt"].step()
                alpha_loss = (-a["log_alpha"].exp() * (logp.detach() - action_dim)).mean()
                a["alpha_opt"].zero_grad()
                alpha_loss.backward()
                a["alpha_opt"].step()
                soft_update(a["qf1"], a["qf1_t"], 0.005)
                soft_update(a["qf2"], a["qf2_t"], 0.005)
    envs.close()
    return (step - clock[1]) / (time.perf_counter() - clock[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--env-ids", nargs="+", type=qmp_env_id, default=["qmp/MultistageReacher-v0"]
    )
    parser.add_argument("--learning-starts", type=at_least(1), default=1000)
    parser.add_argument(
        "--steps", type=at_least(1), default=3000, help="env steps timed after learning starts"
    )
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; paper presets per env"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for env_id in args.env_ids:
            qmp = run_sac_qmp(env_id, True, args.learning_starts, args.steps, Path(tmp))
            no_qmp = run_sac_qmp(env_id, False, args.learning_starts, args.steps, Path(tmp))
            separate = run_separate_agents(env_id, args.learning_starts, args.steps)
            rows.append((env_id, qmp, no_qmp, separate))
    print(
        f"\n{'env':<28} {'--qmp SPS':>10} {'--no-qmp SPS':>13} {'ratio':>6} {'target':>12}"
        f" {'N separate SPS':>15} {'speed-up':>9} {'target':>11}"
    )
    for env_id, qmp, no_qmp, separate in rows:
        r1, r2 = qmp / no_qmp, no_qmp / separate
        verdict1 = ">=0.90 " + ("met" if r1 >= 0.9 else "MISSED")
        verdict2 = ">=3x " + ("met" if r2 >= 3 else "MISSED")
        print(
            f"{env_id:<28} {qmp:>10.0f} {no_qmp:>13.0f} {r1:>6.2f} {verdict1:>12}"
            f" {separate:>15.0f} {r2:>8.1f}x {verdict2:>11}"
        )


if __name__ == "__main__":
    main()
