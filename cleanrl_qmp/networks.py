"""Per-task SAC networks as one batched ensemble (stacked weights).

N task networks live in single ``(N, in, out)`` weight tensors, so acting or updating all N
tasks is one batched matmul per layer instead of a loop over N modules. Inputs are task-major
``(N, B, in)``; :func:`forward_by_task` serves flat rows ``(M, D)`` whose one-hot says which
member answers each row, which is how :class:`~qmp_wrappers.QMPBehaviorWrapper` calls them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # garage's clamp, used by the paper's SAC
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def tanh_gaussian_sample(mean: torch.Tensor, log_std: torch.Tensor):
    """SAC's squashed Gaussian: a reparameterised sample, its log-probability (with the tanh
    correction) and the deterministic action ``tanh(mean)``."""
    # Written out rather than via torch.distributions.Normal (whose argument checks cost more
    # than the arithmetic at these sizes); same reparameterisation and density.
    eps = torch.randn_like(mean)
    action = torch.tanh(mean + log_std.exp() * eps)
    log_prob = -0.5 * eps.pow(2) - log_std - _HALF_LOG_2PI - torch.log(1.0 - action.pow(2) + 1e-6)
    return action, log_prob.sum(-1, keepdim=True), torch.tanh(mean)


def soft_update(source: nn.Module, target: nn.Module, tau: float) -> None:
    """Polyak averaging: ``target <- (1 - tau) * target + tau * source``."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


#: Weight initialisations: torch's ``nn.Linear`` default (our scripts' default), or the
#: original code's garage defaults: Xavier-uniform actors and Xavier-normal critics, zero biases
#: (``learning/policies/multihead_policy.py:34-38``; garage's MLP modules for the critics).
INITS = ("torch", "xavier")


def initialise_linear(weight: torch.Tensor, bias: torch.Tensor, scheme: str) -> None:
    """Initialise ``weight (..., in, out)`` and ``bias`` in place, member by member.

    ``scheme``: ``"torch"`` (``nn.Linear``'s uniform +-1/sqrt(in) for both), ``"xavier_uniform"``
    or ``"xavier_normal"`` (Glorot, fans in and out of each member's matrix; zero biases).
    """
    fan_in, fan_out = weight.shape[-2], weight.shape[-1]
    with torch.no_grad():
        if scheme == "torch":
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)
            return
        if scheme == "xavier_uniform":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            nn.init.uniform_(weight, -bound, bound)
        elif scheme == "xavier_normal":
            nn.init.normal_(weight, 0.0, math.sqrt(2.0 / (fan_in + fan_out)))
        else:
            raise ValueError(f"unknown initialisation {scheme!r}")
        nn.init.zeros_(bias)


def layer_scheme(init: str, role: str) -> str:
    """The scheme of a network of ``role`` ("actor" or "critic") under the ``--init`` flag."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "torch":
        return "torch"
    return "xavier_uniform" if role == "actor" else "xavier_normal"


class EnsembleLinear(nn.Module):
    """``num_members`` independent linear layers applied to ``(num_members, B, in)``."""

    def __init__(
        self, num_members: int, in_features: int, out_features: int, scheme: str = "torch"
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_features))
        # "torch": the same initialisation as nn.Linear, member by member.
        initialise_linear(self.weight, self.bias, scheme)

    def forward(self, x: torch.Tensor, members: slice = slice(None)) -> torch.Tensor:
        """``x`` holds the inputs of ``members`` (all by default), stacked on axis 0."""
        return torch.baddbmm(self.bias[members], x, self.weight[members])


class EnsembleMLP(nn.Module):
    """``num_members`` independent ReLU MLPs with stacked weights, on ``(members, B, in)``.

    A large call is run a group of members at a time through all layers: one batched
    activation of members x B x hidden floats falls out of the CPU cache (a ReLU over ten
    2560 x 256 blocks at once is ~10x slower than over each), while per-member results are
    unchanged. ``max_rows`` bounds the rows of one group.
    """

    def __init__(
        self, num_members: int, sizes: Sequence[int], max_rows: int = 4096, scheme: str = "torch"
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            EnsembleLinear(num_members, n_in, n_out, scheme)
            for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.num_members, self.max_rows = num_members, max_rows

    def _run(self, x: torch.Tensor, members: slice) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, members)
            if i < last:
                x = torch.relu(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, rows = x.shape[0], x.shape[1]
        group = max(1, self.max_rows // max(rows, 1))
        if group >= members:
            return self._run(x, slice(None))
        chunks = [
            self._run(x[start : start + group], slice(start, start + group))
            for start in range(0, members, group)
        ]
        return torch.cat(chunks, dim=0)


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
        self.index: torch.Tensor
        self.register_buffer("index", torch.nonzero(mask).flatten(), persistent=False)
        self.num_features = int(mask.sum())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.index_select(-1, self.index)


def task_ids_of(obs: torch.Tensor, num_tasks: int) -> torch.Tensor:
    return obs[:, -num_tasks:].argmax(dim=1)


class EnsembleActor(nn.Module):
    """N tanh-Gaussian SAC actors (CleanRL's ``Actor``, one member per task)."""

    def __init__(
        self,
        num_tasks: int,
        features: TaskFeatures,
        action_dim: int,
        hidden: Sequence[int],
        init: str = "torch",
    ):
        super().__init__()
        self.num_tasks = num_tasks
        self.features = features
        # One output layer for mean and log-std (columns :A and A:).
        sizes = [features.num_features, *hidden, 2 * action_dim]
        self.net = EnsembleMLP(num_tasks, sizes, scheme=layer_scheme(init, "actor"))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(self.features(obs)).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def get_action(self, obs: torch.Tensor):
        """Sampled action, its log-probability and the deterministic action ``tanh(mean)``."""
        return tanh_gaussian_sample(*self(obs))

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

    def log_prob_members(self, obs_rows: torch.Tensor, action_rows: torch.Tensor) -> torch.Tensor:
        """``(N, M)``: every member's log-density of the executed ``action_rows (M, A)`` on
        ``obs_rows (M, D)`` (the squashed Gaussian's, actions inside (-1, 1) after a clamp)."""
        x = self.features(obs_rows).expand(self.num_tasks, -1, -1)
        mean, log_std = self.net(x).chunk(2, dim=-1)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        action = action_rows.clamp(-1.0 + 1e-6, 1.0 - 1e-6)
        u = torch.atanh(action)
        z = (u - mean) * torch.exp(-log_std)
        log_prob = -0.5 * z.pow(2) - log_std - _HALF_LOG_2PI - torch.log(1.0 - action.pow(2) + 1e-6)
        return log_prob.sum(-1)

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
        self,
        num_tasks: int,
        features: TaskFeatures,
        action_dim: int,
        hidden: Sequence[int],
        init: str = "torch",
    ):
        super().__init__()
        self.num_tasks = num_tasks
        self.features = features
        sizes = [features.num_features + action_dim, *hidden, 1]
        self.net = EnsembleMLP(2 * num_tasks, sizes, scheme=layer_scheme(init, "critic"))

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


class MultiHeadMLP(nn.Module):
    """A shared trunk with one output head per task (multi-head MT-SAC).

    Every head is computed in one matmul and each row keeps its own task's head, so a batch
    mixing tasks costs one call. ``num_heads=1`` gives a single shared head.
    """

    def __init__(
        self, in_dim: int, hidden: Sequence[int], out_dim: int, num_heads: int, scheme: str
    ):
        super().__init__()
        layers: list[nn.Module] = []
        for n_in, n_out in zip([in_dim, *hidden[:-1]], hidden, strict=True):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.Linear(hidden[-1], num_heads * out_dim)
        self.num_heads, self.out_dim = num_heads, out_dim
        if scheme != "torch":  # nn.Linear weights are (out, in): initialise their transpose
            for layer in layers[::2]:
                assert isinstance(layer, nn.Linear)
                initialise_linear(layer.weight.T, layer.bias, scheme)
            # Each head as its own (hidden, out) layer, as the original's separate heads are
            # (one fused (hidden, heads x out) matrix would get a smaller Xavier bound).
            per_head = self.heads.weight.T.view(hidden[-1], num_heads, out_dim).transpose(0, 1)
            initialise_linear(per_head, self.heads.bias, scheme)

    def forward(self, x: torch.Tensor, head_ids: torch.Tensor) -> torch.Tensor:
        out = self.heads(self.trunk(x)).view(len(x), self.num_heads, self.out_dim)
        return out[torch.arange(len(x), device=x.device), head_ids]


class MultiHeadActor(nn.Module):
    """MT-SAC actor, the paper's multi-head policy: a shared trunk on the task-agnostic
    features (one-hot removed, the separate networks' input) and one head per task, selected by
    the row's one-hot (``learning/policies/multihead_policy.py:77-81`` in the original).

    ``fully_shared=True`` is the Fully-Shared-Behavior baseline: ONE policy (a single head) for
    every task, which never sees the task id.
    """

    def __init__(
        self,
        features: TaskFeatures,
        num_tasks: int,
        action_dim: int,
        hidden: Sequence[int],
        fully_shared: bool,
        init: str = "xavier",
    ):
        super().__init__()
        self.num_tasks, self.fully_shared = num_tasks, fully_shared
        self.features = features
        heads = 1 if fully_shared else num_tasks
        scheme = layer_scheme(init, "actor")
        self.net = MultiHeadMLP(features.num_features, hidden, 2 * action_dim, heads, scheme)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        task_ids = task_ids_of(obs, self.num_tasks)
        if self.fully_shared:
            task_ids = torch.zeros_like(task_ids)
        mean, log_std = self.net(self.features(obs), task_ids).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def get_action(self, obs: torch.Tensor):
        """Sampled action, its log-probability and ``tanh(mean)``, for rows ``(M, D)``."""
        return tanh_gaussian_sample(*self(obs))

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self(obs)
        return torch.tanh(mean + log_std.exp() * torch.randn_like(mean)), torch.tanh(mean)

    def deterministic_act(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(obs)[0])


class MultiHeadTwinCritic(nn.Module):
    """MT-SAC twin critics: each a shared trunk on (task-agnostic features, action) with one
    head per task, selected by the row's one-hot (``multihead_continuous_q_function.py:113-116``
    in the original)."""

    def __init__(
        self,
        features: TaskFeatures,
        num_tasks: int,
        action_dim: int,
        hidden: Sequence[int],
        init: str = "xavier",
    ):
        super().__init__()
        self.num_tasks = num_tasks
        self.features = features
        scheme = layer_scheme(init, "critic")
        in_dim = features.num_features + action_dim
        self.qf1 = MultiHeadMLP(in_dim, hidden, 1, num_tasks, scheme)
        self.qf2 = MultiHeadMLP(in_dim, hidden, 1, num_tasks, scheme)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        task_ids = task_ids_of(obs, self.num_tasks)
        x = torch.cat([self.features(obs), action], dim=1)
        return self.qf1(x, task_ids), self.qf2(x, task_ids)

    def score(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self(obs, action)


def sac_parts(
    actor: nn.Module,
    qf: nn.Module,
    num_tasks: int,
    learning_rate: float,
    alpha: float,
    device: torch.device,
) -> dict[str, Any]:
    """A SAC agent's parts around its actor and critic: the target critic, one temperature per
    task and the three Adam optimisers (one learning rate, as in the paper's runs)."""
    log_alpha = torch.full((num_tasks,), float(np.log(alpha)), device=device, requires_grad=True)
    return {
        "actor": actor,
        "qf": qf,
        "qf_target": copy.deepcopy(qf),
        "log_alpha": log_alpha,
        # foreach: one multi-tensor kernel per Adam step instead of a loop over parameters.
        "q_optimizer": torch.optim.Adam(qf.parameters(), lr=learning_rate, foreach=True),
        "actor_optimizer": torch.optim.Adam(actor.parameters(), lr=learning_rate, foreach=True),
        "a_optimizer": torch.optim.Adam([log_alpha], lr=learning_rate, foreach=True),
    }  # fmt: skip


@dataclass
class PerTaskSAC:
    """The No-Sharing SAC agent of the per-task scripts: ensemble actor, twin critics and their
    target, one temperature per task, and their Adam optimisers (one learning rate, as in the
    paper's runs)."""

    actor: EnsembleActor
    qf: TwinCritic
    qf_target: TwinCritic
    log_alpha: torch.Tensor
    q_optimizer: torch.optim.Adam
    actor_optimizer: torch.optim.Adam
    a_optimizer: torch.optim.Adam

    @classmethod
    def create(
        cls,
        tasks,
        hidden: Sequence[int],
        learning_rate: float,
        alpha: float,
        device: torch.device,
        init: str = "torch",
    ) -> PerTaskSAC:
        """``tasks`` is a :class:`qmp_harness.tasks.TaskSpec`; ``init`` one of :data:`INITS`."""
        n = tasks.num_tasks
        features = TaskFeatures(tasks.feature_dim, tasks.feature_mask)
        actor = EnsembleActor(n, features, tasks.action_dim, hidden, init).to(device)
        qf = TwinCritic(n, features, tasks.action_dim, hidden, init).to(device)
        return cls(**sac_parts(actor, qf, n, learning_rate, alpha, device))

    def parts(self) -> dict[str, Any]:
        """Every part by name, as checkpoints store them."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def deterministic_policy(act: Callable[[torch.Tensor], torch.Tensor], device: torch.device):
    """Wrap a torch ``rows -> actions`` function as the numpy policy the evaluator calls."""

    def policy(obs_batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            rows = torch.as_tensor(obs_batch, dtype=torch.float32, device=device)
            return act(rows).cpu().numpy()

    return policy
