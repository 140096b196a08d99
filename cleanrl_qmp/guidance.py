"""What ``ctpg_sac.py`` needs besides its update: the guide's networks, its K-step data and
the hindsight relabelling of that data (our reading of CTPG, He et al., NeurIPS 2024).

- :class:`GuideAgent`: per task, a discrete SAC over the C candidate policies (actor logits,
  twin critics ``Q^g_i(s, j)``, their target, a temperature), one ensemble member per task like
  the control networks; it implements :class:`qmp_wrappers.guide.GuideNetworks`, so the QMP
  wrapper can sample from it and apply the gates.
- :class:`GuideSegments`: cuts each sub-env's stream into the guided segments the wrapper
  reports (a fresh choice, then up to K steps, ended early by an episode end) and keeps, per
  task, ``(s_0, j, sum_k gamma^k r_k, s_L, gamma^L (1 - terminated))`` plus the segment's
  states and executed actions for the relabelling.
- :func:`hindsight_choice`: the candidate whose CURRENT policy makes a segment's executed
  actions most likely, ``argmax_j sum_k log pi_j(a_k | s_k)``: the policies that acted have
  changed since the data was collected, so the guide learns from who would act like that now.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from cleanrl_qmp.networks import (
    EnsembleActor,
    EnsembleMLP,
    TaskFeatures,
    TwinCritic,
    forward_by_task,
    sac_parts,
    task_ids_of,
)


@dataclass
class GuideAgent:
    """The guide's networks and optimisers, and references to the control networks that the
    gates read (task i's value ``V_i(s)`` and the temperatures ``log alpha``)."""

    actor: EnsembleMLP  # (N members) features -> C logits
    qf: EnsembleMLP  # (2N members: task k's twins are k and N + k) features -> C values
    qf_target: EnsembleMLP
    log_alpha: torch.Tensor  # (N,) the guide's own temperatures
    q_optimizer: torch.optim.Adam
    actor_optimizer: torch.optim.Adam
    a_optimizer: torch.optim.Adam
    features: TaskFeatures
    control_actor: EnsembleActor
    control_qf: TwinCritic
    control_log_alpha: torch.Tensor
    value_samples: int = 5

    @classmethod
    def create(
        cls,
        tasks: Any,
        hidden: tuple[int, ...],
        learning_rate: float,
        alpha: float,
        control: Any,
        value_samples: int,
        device: torch.device,
    ) -> GuideAgent:
        """``tasks`` a :class:`qmp_harness.tasks.TaskSpec`, ``control`` the
        :class:`cleanrl_qmp.networks.PerTaskSAC` whose policies the guide chooses among."""
        n = tasks.num_tasks
        features = control.actor.features
        actor = EnsembleMLP(n, [features.num_features, *hidden, n]).to(device)
        qf = EnsembleMLP(2 * n, [features.num_features, *hidden, n]).to(device)
        return cls(
            **sac_parts(actor, qf, n, learning_rate, alpha, device),
            features=features,
            control_actor=control.actor,
            control_qf=control.qf,
            control_log_alpha=control.log_alpha,
            value_samples=value_samples,
        )

    def parts(self) -> dict[str, Any]:
        """The guide's own trained parts by name (checkpoints store them)."""
        owned = ("actor", "qf", "qf_target", "log_alpha", "q_optimizer", "actor_optimizer")
        return {f"guide_{name}": getattr(self, name) for name in (*owned, "a_optimizer")}

    # -- task-major batches (N, B, D), as the update uses them ---------------------------
    def twin_q(self, obs: torch.Tensor, target: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q1, q2)``, each ``(N, B, C)``, of task-major observations ``(N, B, D)``."""
        x = self.features(obs)
        out = (self.qf_target if target else self.qf)(torch.cat([x, x], dim=0))
        n = len(obs)
        return out[:n], out[n:]

    def task_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """``(N, B, C)`` guide-policy logits of task-major observations."""
        return self.actor(self.features(obs))

    # -- flat rows (B, D), row b answered by its one-hot's task: the wrapper's protocol ---
    def _rows(self, fn, obs_rows: torch.Tensor) -> torch.Tensor:
        n = self.control_actor.num_tasks
        return forward_by_task(fn, obs_rows, task_ids_of(obs_rows, n), n)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        return self._rows(self.task_logits, obs)

    def guide_values(self, obs: torch.Tensor) -> torch.Tensor:
        def both(grouped: torch.Tensor) -> torch.Tensor:
            q1, q2 = self.twin_q(grouped)
            return torch.min(q1, q2)

        return self._rows(both, obs)

    def own_values(self, obs: torch.Tensor) -> torch.Tensor:
        """``V_i(s)``: the mean over ``value_samples`` actions of task i's own policy of the
        smaller of task i's two control critics."""
        rows = obs.repeat_interleave(self.value_samples, dim=0)
        actions, _ = self.control_actor.act(rows)
        q1, q2 = self.control_qf.score(rows, actions)
        return torch.min(q1, q2).view(len(obs), self.value_samples).mean(dim=1)

    def log_temperatures(self) -> torch.Tensor:
        return self.control_log_alpha.detach()


def hindsight_choice(
    actor: EnsembleActor,
    seq_obs: torch.Tensor,
    seq_actions: torch.Tensor,
    seq_valid: torch.Tensor,
) -> torch.Tensor:
    """``(N, B)``: for each task-major segment ``(N, B, K, ...)``, the member of ``actor``
    under which the segment's valid executed actions are most likely (first on ties)."""
    n, batch, k, obs_dim = seq_obs.shape
    with torch.no_grad():
        log_prob = actor.log_prob_members(
            seq_obs.reshape(-1, obs_dim), seq_actions.reshape(n * batch * k, -1)
        )  # (members, N * B * K)
        per_segment = (log_prob.view(-1, n, batch, k) * seq_valid).sum(dim=-1)  # (C, N, B)
    return per_segment.argmax(dim=0)


@dataclass
class GuideBatch:
    """Task-major guide transitions: leading dims ``(N, B)``."""

    observations: torch.Tensor
    choices: torch.Tensor
    returns: torch.Tensor
    next_observations: torch.Tensor
    discounts: torch.Tensor
    seq_observations: torch.Tensor
    seq_actions: torch.Tensor
    seq_valid: torch.Tensor


class GuideSegments:
    """Per sub-env open segments and per task finished ones (a ring buffer of ``capacity``).

    Sub-env k runs task k (one sub-env per task, as ``gym.make_vec`` of a ``qmp/`` id gives).
    """

    def __init__(
        self,
        num_tasks: int,
        obs_dim: int,
        action_dim: int,
        guide_steps: int,
        capacity: int,
        gamma: float,
        device: torch.device,
    ):
        n, k = num_tasks, guide_steps
        self.num_tasks, self.guide_steps, self.capacity = n, k, capacity
        self.gamma, self.device = gamma, device
        self.observations = np.zeros((n, capacity, obs_dim), dtype=np.float32)
        self.next_observations = np.zeros((n, capacity, obs_dim), dtype=np.float32)
        self.choices = np.zeros((n, capacity), dtype=np.int64)
        self.returns = np.zeros((n, capacity), dtype=np.float32)
        self.discounts = np.zeros((n, capacity), dtype=np.float32)
        self.seq_observations = np.zeros((n, capacity, k, obs_dim), dtype=np.float32)
        self.seq_actions = np.zeros((n, capacity, k, action_dim), dtype=np.float32)
        self.seq_valid = np.zeros((n, capacity, k), dtype=np.float32)
        self.pos, self.full = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        # The open segment of every sub-env: its slot's arrays are written in place.
        self.open_length = np.full(n, -1, dtype=np.int64)  # -1: no open segment
        self.open_choice = np.zeros(n, dtype=np.int64)
        self.open_return = np.zeros(n, dtype=np.float64)

    def size(self, task: int) -> int:
        return self.capacity if self.full[task] else int(self.pos[task])

    # Arrays with a capacity axis (axis 1), kept in place when a resumed run grows them.
    _STORAGE = ("observations", "next_observations", "choices", "returns", "discounts",
                "seq_observations", "seq_actions", "seq_valid")  # fmt: skip

    def grow(self, capacity: int) -> None:
        """Raise the capacity to ``capacity`` (never lower it), every segment (and the open one)
        kept in its slot, so a run resumed with a larger budget continues as an uninterrupted
        one."""
        if capacity <= self.capacity:  # a larger buffer than needed samples the same
            return
        if self.full.any():
            raise ValueError(
                f"the guide's segment buffer is full ({self.capacity} per task) and overwrote "
                f"its oldest segments, so it cannot grow to {capacity} as if it never had"
            )
        for name in self._STORAGE:
            array = getattr(self, name)
            grown = np.zeros((array.shape[0], capacity, *array.shape[2:]), dtype=array.dtype)
            grown[:, : self.capacity] = array
            setattr(self, name, grown)
        self.capacity = capacity

    def add(
        self,
        obs: np.ndarray,
        executed_actions: np.ndarray,
        rewards: np.ndarray,
        real_next_obs: np.ndarray,
        terminations: np.ndarray,
        truncations: np.ndarray,
        choice_made: np.ndarray,
        chosen: np.ndarray,
    ) -> None:
        """Record one vector step (one row per sub-env = task)."""
        for task in range(self.num_tasks):
            slot = self.pos[task]
            if choice_made[task]:
                self.open_length[task], self.open_choice[task] = 0, chosen[task]
                self.open_return[task] = 0.0
                self.observations[task, slot] = obs[task]
                self.seq_valid[task, slot] = 0.0
            length = self.open_length[task]
            if length < 0:  # no guided segment open (guidance off): nothing to record
                continue
            self.seq_observations[task, slot, length] = obs[task]
            self.seq_actions[task, slot, length] = executed_actions[task]
            self.seq_valid[task, slot, length] = 1.0
            self.open_return[task] += self.gamma**length * float(rewards[task])
            length += 1
            self.open_length[task] = length
            if length == self.guide_steps or terminations[task] or truncations[task]:
                self.choices[task, slot] = self.open_choice[task]
                self.returns[task, slot] = self.open_return[task]
                self.next_observations[task, slot] = real_next_obs[task]
                self.discounts[task, slot] = 0.0 if terminations[task] else self.gamma**length
                self.open_length[task] = -1
                self.pos[task] = (slot + 1) % self.capacity
                self.full[task] |= self.pos[task] == 0

    def _indices(self, task: int, batch_size: int) -> np.ndarray:
        if not self.full[task]:
            return np.random.randint(0, self.pos[task], size=batch_size)
        # Full: every slot but the one an open segment is being written into.
        offsets = np.random.randint(0, self.capacity - 1, size=batch_size)
        return (self.pos[task] + 1 + offsets) % self.capacity

    def can_sample(self) -> bool:
        return all(self.size(t) > 0 for t in range(self.num_tasks))

    def sample(self, batch_size: int) -> GuideBatch:
        """``batch_size`` finished segments of every task (uniform, with replacement; the
        global NumPy stream, which checkpoints carry)."""
        index = np.stack([self._indices(t, batch_size) for t in range(self.num_tasks)])
        rows = np.arange(self.num_tasks)[:, None]

        def take(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(array[rows, index], device=self.device)

        return GuideBatch(**{f.name: take(getattr(self, f.name)) for f in fields(GuideBatch)})
