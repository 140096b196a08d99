"""torchrl: a data collector and a replay buffer that store the actions QMP executed.

torchrl's ``GymWrapper`` takes the QMP vector wrapper like any Gymnasium vector env (one
sub-env per task, ``autoreset_mode=SAME_STEP``, which torchrl requires) and reads the wrapper's
``info`` into the step's ``"next"`` tensordict: ``("next", "qmp_action")`` is the executed action,
``("next", "qmp_policy")`` the policy that proposed it. torchrl's collector writes the policy's
proposal at ``"action"``; QMP asks the learner to store the executed one, so each batch gets
``data["action"] = data["next", "qmp_action"]`` before it goes into the buffer. The agent here is
a task-conditioned tanh-Gaussian actor and twin critics (CleanRL's layout) with one TD update of
the critics per batch, enough to show the loop; put torchrl's ``SACLoss`` there for real runs.

    python examples/torchrl_qmp.py
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.envs import GymWrapper

import qmp_envs  # noqa: F401  (registers the qmp/ ids)
from qmp_wrappers.vector import QMPBehaviorWrapper


class Actor(nn.Module):
    """One network for all tasks, conditioned on the observation's one-hot (CleanRL's actor)."""

    def __init__(self, obs_dim: int, action_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, 64), nn.ReLU(), nn.Linear(64, 2 * action_dim))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sampled, mean)``, both squashed into [-1, 1]: what ``attach`` takes."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        sampled = mean + log_std.clamp(-5, 2).exp() * torch.randn_like(mean)
        return torch.tanh(sampled), torch.tanh(mean)


class Sampled(nn.Module):
    """The collector's policy: the actor's sampled action only."""

    def __init__(self, actor: Actor):
        super().__init__()
        self.actor = actor

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)[0]


class Critic(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim + action_dim, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1))


class Result(NamedTuple):
    qmp: QMPBehaviorWrapper
    buffer: ReplayBuffer
    critic_losses: list[float]
    proposed: torch.Tensor  # the collector's (the agent's) actions, in collection order


def run(
    env_id: str = "qmp/MultistageReacher-v0",
    total_frames: int = 2000,
    frames_per_batch: int = 500,
    seed: int = 0,
) -> Result:
    torch.manual_seed(seed)
    same_step = gym.vector.AutoresetMode.SAME_STEP  # torchrl refuses next-step autoreset
    qmp = QMPBehaviorWrapper(gym.make_vec(env_id, autoreset_mode=same_step), seed=seed)
    env = GymWrapper(qmp)
    env.set_seed(seed)
    obs_dim = qmp.single_observation_space.shape[0]
    action_dim = qmp.single_action_space.shape[0]
    actor = Actor(obs_dim, action_dim)
    qf1, qf2 = Critic(obs_dim, action_dim), Critic(obs_dim, action_dim)
    qmp.attach(policy=actor, q_function=[qf1, qf2])  # the Q-switch uses the agent's own networks

    policy = TensorDictModule(Sampled(actor), in_keys=["observation"], out_keys=["action"])
    collector = Collector(
        env,
        policy,
        frames_per_batch=frames_per_batch,
        total_frames=total_frames,
        auto_register_policy_transforms=False,  # the policy is stateless
    )
    buffer = ReplayBuffer(storage=LazyTensorStorage(total_frames))
    q_optimizer = torch.optim.Adam([*qf1.parameters(), *qf2.parameters()], lr=3e-4)
    proposed: list[torch.Tensor] = []  # the collector's actions, kept for the test
    critic_losses = []
    for data in collector:
        proposed.append(data["action"].clone())
        data["action"] = data["next", "qmp_action"]  # QMP: store the action that was executed
        buffer.extend(data.reshape(-1))
        batch = buffer.sample(128)
        with torch.no_grad():  # a plain TD(0) target; SACLoss adds the entropy term
            next_action = actor(batch["next", "observation"])[0]
            next_q = torch.min(
                qf1(batch["next", "observation"], next_action),
                qf2(batch["next", "observation"], next_action),
            )
            target = batch["next", "reward"] + 0.99 * (~batch["next", "terminated"]) * next_q
        loss = sum(
            nn.functional.mse_loss(q(batch["observation"], batch["action"]), target)
            for q in (qf1, qf2)
        )
        q_optimizer.zero_grad()
        loss.backward()
        q_optimizer.step()
        critic_losses.append(float(loss.detach()))
    collector.shutdown()
    return Result(qmp, buffer, critic_losses, torch.cat(proposed))


if __name__ == "__main__":
    result = run()
    losses = np.round(result.critic_losses, 3)
    print(f"stored {len(result.buffer)} transitions; critic loss per batch: {losses}")
    print("selection matrix (rows: task collected; columns: policy executed):")
    print(np.round(result.qmp.selection_matrix(), 2))
