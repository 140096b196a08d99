"""A run's memory, estimated from its flags before anything is allocated, and the machine's.

The scripts' flag validation refuses a run whose estimate exceeds what the machine can ever
give it, so ``--batch-size 10**12`` or ``--hidden 10**9`` end in a message with the estimate,
not in the allocator after the run folder was created. The estimate is a deliberate upper
bound, simple enough to check by hand (4-byte floats throughout; N tasks, observation size D
with the one-hot, action size A, hidden sizes H, per-task minibatch B):

* networks: per-task ensembles of an actor (D -> H -> 2A) and a twin critic (D + A -> H -> 1),
  plus a target twin critic, each parameter counted four times (weights, gradients, two Adam
  moments; the target is counted as trained too, which covers DnC's central actor and CTPG's
  guide);
* minibatch: 2 N B rows (a task's own batch and, with data sharing, one from other tasks), each
  holding its transition (2D + A + 2 floats) and the activations autograd keeps for backward in
  8 network passes (ΣH + D + 3A floats each);
* replay buffer: what the run's budget can store, ``min(buffer_size, total_timesteps // N + 1)``
  transitions per task of 2D + A + 3 floats (SB3's layout: observation, next observation,
  action, reward, done, timeout);
* evaluation: 4 float64 arrays of N x ``eval_episodes`` (success, return, length, extras);
* 0.5 GiB for the interpreter, torch, MuJoCo and the environments.

It is compared with the machine's memory (RAM + swap, from ``/proc/meminfo``), not with what is
free now: the replay buffer, the largest part, is zero-filled lazily and committed as it fills,
so memory other processes hold at the start does not decide whether the run fits, and comparing
with it would refuse real runs while a campaign runs beside them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLOAT_BYTES = 4
#: Network passes whose activations one gradient update keeps (critic, target, actor, ...).
PASSES_PER_UPDATE = 8
#: The interpreter, torch, MuJoCo and the environments.
BASELINE_BYTES = 512 * 2**20


def mlp_parameters(inputs: int, hidden: Sequence[int], outputs: int) -> int:
    """Weights and biases of a fully connected network ``inputs -> hidden... -> outputs``.

    >>> mlp_parameters(3, [4], 2)  # (3 + 1) * 4 + (4 + 1) * 2
    26
    """
    sizes = [inputs, *hidden, outputs]
    return sum((n_in + 1) * n_out for n_in, n_out in zip(sizes, sizes[1:], strict=False))


@dataclass(frozen=True)
class RunMemory:
    """Estimated bytes of each part of a run (see the module's docstring)."""

    networks: int
    minibatch: int
    replay_buffer: int
    evaluation: int
    baseline: int = BASELINE_BYTES

    @property
    def total(self) -> int:
        return self.networks + self.minibatch + self.replay_buffer + self.evaluation + self.baseline

    #: The flags that size each part, named in a refusal.
    FLAGS = {
        "networks": "--hidden",
        "minibatch": "--batch-size",
        "replay_buffer": "--buffer-size",
        "evaluation": "--eval-episodes",
    }

    def largest_part(self) -> str:
        parts = {name: getattr(self, name) for name in self.FLAGS}
        return max(parts, key=lambda name: parts[name])

    def breakdown(self) -> str:
        return ", ".join(
            f"{name.replace('_', ' ')} {gib(getattr(self, name))}" for name in self.FLAGS
        )


def estimate_run_memory(args: Any) -> RunMemory:
    """The estimate for a script's ``args`` (presets filled in, every flag in range)."""
    from qmp_envs.suites import suite_facts  # no env is built

    facts = suite_facts(args.env_id)
    n, a = facts.num_tasks, facts.action_dim
    d = facts.feature_dim + n
    hidden = list(args.hidden)
    actor = mlp_parameters(d, hidden, 2 * a)
    critic = mlp_parameters(d + a, hidden, 1)
    trained_copies = 4  # weights, gradients, two Adam moments
    networks = FLOAT_BYTES * trained_copies * n * (actor + 4 * critic)
    rows = 2 * n * args.batch_size
    per_row = (2 * d + a + 2) + PASSES_PER_UPDATE * (sum(hidden) + d + 3 * a)
    capacity = min(args.buffer_size, args.total_timesteps // n + 1)
    replay = FLOAT_BYTES * n * capacity * (2 * d + a + 3)
    evaluation = 8 * 4 * n * args.eval_episodes
    return RunMemory(networks, FLOAT_BYTES * rows * per_row, replay, evaluation)


@dataclass(frozen=True)
class MachineMemory:
    """Bytes of RAM + swap (the most a process can ever get) and of memory available now."""

    total: int
    available: int


def machine_memory(meminfo: Path = Path("/proc/meminfo")) -> MachineMemory:
    """The machine's memory from ``/proc/meminfo`` (Linux), else ``os.sysconf`` (POSIX)."""
    try:
        fields = {}
        for line in meminfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = int(value.split()[0]) * 1024  # kB
        total = fields["MemTotal"] + fields.get("SwapTotal", 0)
        return MachineMemory(total, fields.get("MemAvailable", fields["MemTotal"]))
    except (OSError, KeyError, ValueError, IndexError):
        page = os.sysconf("SC_PAGE_SIZE")
        total = page * os.sysconf("SC_PHYS_PAGES")
        try:
            available = page * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError):  # not on every POSIX system
            available = total
        return MachineMemory(total, available)


def gib(size: int) -> str:
    """``size`` bytes in the unit that reads best (MiB, GiB, TiB...).

    >>> gib(3 * 2**30), gib(5 * 2**20), gib(2**50)
    ('3.0 GiB', '5.0 MiB', '1024.0 TiB')
    """
    for unit, power in (("TiB", 40), ("GiB", 30), ("MiB", 20)):
        if size >= 2**power or unit == "MiB":
            return f"{size / 2**power:.1f} {unit}"
    raise AssertionError("unreachable")


def memory_problems(args: Any, machine: MachineMemory | None = None) -> list[str]:
    """A refusal naming the estimate, the machine's memory and the flag that sizes the largest
    part, if the run cannot fit; empty otherwise."""
    estimate = estimate_run_memory(args)
    machine = machine or machine_memory()
    if estimate.total <= machine.total:
        return []
    flag = RunMemory.FLAGS[estimate.largest_part()]
    value = getattr(args, flag[2:].replace("-", "_"))
    return [
        f"{flag} {value!r}: the run would need about {gib(estimate.total)} of memory "
        f"({estimate.breakdown()}), more than this machine's {gib(machine.total)} (RAM + swap; "
        f"{gib(machine.available)} available now): lower {flag}"
        + (" or --total-timesteps" if flag == "--buffer-size" else "")
    ]
