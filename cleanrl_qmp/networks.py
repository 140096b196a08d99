"""Per-task SAC networks as one batched ensemble (stacked weights).

N task networks live in single ``(N, in, out)`` weight tensors, so acting or updating all N
tasks is one batched matmul per layer instead of a loop over N modules. Inputs are task-major
``(N, B, in)``; :func:`forward_by_task` serves flat rows ``(M, D)`` whose one-hot says which
member answers each row, which is how :class:`~qmp_wrappers.QMPBehaviorWrapper` calls them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # garage's clamp, used by the paper's SAC


class EnsembleLinear(nn.Module):
    """``num_members`` independent linear layers applied to ``(num_members, B, in)``."""

    def __init__(self, num_members: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_features))
        # Same initialisation as nn.Linear, member by member.
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def ensemble_mlp(num_members: int, sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(EnsembleLinear(num_members, n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def forward_by_task(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    task_ids: torch.Tensor,
    num_tasks: int,
) -> torch.Tensor:
    """Apply a task-major ensemble ``fn: (N, C, D) -> (N, C, O)`` to rows ``x (M, D)``.

    Row m is answered by member ``task_ids[m]``. Rows already grouped task by task in equal
    blocks (how the Q-switch lays out proposals) are a plain reshape; any other mix is grouped
    with one stable sort and padded to the largest group. Either way: one batched call.
    """
    rows = len(x)
    if rows % num_tasks == 0:
        block = rows // num_tasks
        grouped_ids = torch.arange(num_tasks, device=x.device).repeat_interleave(block)
        if torch.equal(task_ids, grouped_ids):
            return fn(x.view(num_tasks, block, -1)).reshape(rows, -1)
    counts = torch.bincount(task_ids, minlength=num_tasks)
    capacity = int(counts.max())
    order = torch.argsort(task_ids, stable=True)
    sorted_tasks = task_ids[order]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(rows, device=x.device) - starts[sorted_tasks]
    grouped = x.new_zeros(num_tasks, capacity, x.shape[1])
    grouped[sorted_tasks, slot] = x[order]
    out = fn(grouped)
    result = out.new_empty(rows, out.shape[-1])
    result[order] = out[sorted_tasks, slot]
    return result


class TaskFeatures(nn.Module):
    """Selects what the paper's per-task agents saw: ``obs[..., :feature_dim][mask]``."""

    def __init__(self, feature_dim: int, feature_mask: np.ndarray):
        super().__init__()
        mask = torch.as_tensor(np.asarray(feature_mask, dtype=bool))
        if mask.shape != (feature_dim,):
            raise ValueError(
                f"feature mask has shape {tuple(mask.shape)}, expected ({feature_dim},)"
            )
        self.register_buffer("index", torch.nonzero(mask).flatten(), persistent=False)
        self.num_features = int(mask.sum())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.index_select(-1, self.index)


def task_ids_of(obs: torch.Tensor, num_tasks: int) -> torch.Tensor:
    return obs[:, -num_tasks:].argmax(dim=1)


class EnsembleActor(nn.Module):
    """N tanh-Gaussian SAC actors (CleanRL's ``Actor``, one member per task)."""

    def __init__(
        self, num_tasks: int, features: TaskFeatures, action_dim: int, hidden: Sequence[int]
    ):
        super().__init__()
        self.num_tasks = num_tasks
        self.features = features
        self.trunk = nn.Sequential(
            ensemble_mlp(num_tasks, [features.num_features, *hidden]), nn.ReLU()
        )
        self.fc_mean = EnsembleLinear(num_tasks, hidden[-1], action_dim)
        self.fc_logstd = EnsembleLinear(num_tasks, hidden[-1], action_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(self.features(obs))
        log_std = self.fc_logstd(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return self.fc_mean(h), log_std

    def get_action(self, obs: torch.Tensor):
        """Sampled action, its log-probability and the deterministic action ``tanh(mean)``."""
        mean, log_std = self(obs)
        normal = torch.distributions.Normal(mean, log_std.exp())
        x_t = normal.rsample()
        action = torch.tanh(x_t)
        log_prob = normal.log_prob(x_t) - torch.log(1.0 - action.pow(2) + 1e-6)
        return action, log_prob.sum(-1, keepdim=True), torch.tanh(mean)

    def act(self, obs_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sampled, mean)`` for flat rows; each row is answered by its one-hot's member."""
        task_ids = task_ids_of(obs_rows, self.num_tasks)

        def both(grouped: torch.Tensor) -> torch.Tensor:
            # Acting needs no log-probability: sample tanh(mean + std * eps) directly.
            mean, log_std = self(grouped)
            sampled = torch.tanh(mean + log_std.exp() * torch.randn_like(mean))
            return torch.cat([sampled, torch.tanh(mean)], dim=-1)

        out = forward_by_task(both, obs_rows, task_ids, self.num_tasks)
        half = out.shape[1] // 2
        return out[:, :half], out[:, half:]

    def deterministic_act(self, obs_rows: torch.Tensor) -> torch.Tensor:
        """``tanh(mean)`` for flat rows, without drawing random numbers (evaluation)."""
        task_ids = task_ids_of(obs_rows, self.num_tasks)
        return forward_by_task(lambda g: torch.tanh(self(g)[0]), obs_rows, task_ids, self.num_tasks)


class TwinCritic(nn.Module):
    """Twin soft Q-functions for all N tasks as ONE ensemble of 2N members.

    Members ``k`` and ``N + k`` are task k's two critics, so both twins of every task are
    evaluated in one batched matmul per layer. ``score`` returns ``(q1, q2)`` for the Q-switch.
    """

    def __init__(
        self, num_tasks: int, features: TaskFeatures, action_dim: int, hidden: Sequence[int]
    ):
        super().__init__()
        self.num_tasks = num_tasks
        self.features = features
        self.net = ensemble_mlp(2 * num_tasks, [features.num_features + action_dim, *hidden, 1])

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Task-major ``(N, B, D)`` and ``(N, B, A)`` to ``(q1, q2)``, each ``(N, B, 1)``."""
        x = torch.cat([self.features(obs), action], dim=-1)
        out = self.net(torch.cat([x, x], dim=0))
        return out[: self.num_tasks], out[self.num_tasks :]

    def score(self, obs_rows: torch.Tensor, action_rows: torch.Tensor):
        task_ids = task_ids_of(obs_rows, self.num_tasks)
        obs_dim = obs_rows.shape[1]
        rows = torch.cat([obs_rows, action_rows], dim=1)

        def both(g: torch.Tensor) -> torch.Tensor:
            q1, q2 = self(g[..., :obs_dim], g[..., obs_dim:])
            return torch.cat([q1, q2], dim=-1)

        out = forward_by_task(both, rows, task_ids, self.num_tasks)
        return out[:, :1], out[:, 1:]
