"""Where the trainer stands against this CPU's matmul limit, per suite (one thread).

1. **Matmul throughput** for the exact shapes of each suite's SAC update: every layer of the
   actor ensemble (N members) and the twin-critic ensemble (2N members) as batched
   ``(members, B, in) x (members, in, out)`` products, forward (``baddbmm``) and backward (the
   two ``bmm`` of the input and weight gradients), timed on their own.
2. **FLOPs of one update** of ``sac_qmp.py`` (per task batch B, the suite's preset network):
   the target (actor and target critic forward on next states), the critic loss (forward and
   backward) and the actor loss (actor and critic forward, backward through both): 2 actor
   forwards + 1 backward, 3 critic forwards + 2 backwards.
3. **Measured** ``sac_qmp.py --qmp`` after learning starts, profiled by phase: the update loop
   (sampling, the three losses, Adam, Polyak), the Q-switch (``QSwitchState.select``), the env
   (the vector env's ``step``) and the rest (acting, replay writes, bookkeeping).

Printed per suite: time per update measured, the matmul-only lower bound (sum over the update's
matmuls of their measured time), their ratio, the sustained GFLOP/s, and the step profile.

    python benchmarks/roofline.py [--env-ids qmp/MultistageReacher-v0 ...] [--steps 2000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import torch

import qmp_envs  # noqa: F401
from cleanrl_qmp import sac_qmp
from cleanrl_qmp.networks import EnsembleMLP
from qmp_harness.cli_types import at_least, qmp_env_id
from qmp_harness.config import PRESETS
from qmp_harness.harness import TrainingRun
from qmp_harness.tasks import TaskSpec
from qmp_wrappers.switch import QSwitchState

SUITES = [
    "qmp/MultistageReacher-v0",
    "qmp/MazeLarge10-v0",
    "qmp/Walker2dMT4-v0",
    "qmp/MetaWorldCDS-v0",
    "qmp/MetaWorldMT10-v0",
]


def seconds(fn: Callable[[], object], repeats: int = 7, inner: int = 20) -> float:
    """Median seconds of one call of ``fn`` (after a warm-up)."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def layer_times(members: int, rows: int, n_in: int, n_out: int) -> tuple[float, float, float]:
    """(forward s, backward s, forward FLOPs) of one ensemble layer, called as
    ``EnsembleMLP`` calls it: large batches a group of members at a time (its ``max_rows``)."""
    group = min(members, max(1, EnsembleMLP(1, [1, 1]).max_rows // max(rows, 1)))
    calls = -(-members // group)
    x, w = torch.randn(group, rows, n_in), torch.randn(group, n_in, n_out)
    b, g = torch.randn(group, 1, n_out), torch.randn(group, rows, n_out)
    forward = seconds(lambda: torch.baddbmm(b, x, w))
    wt, xt = w.transpose(1, 2), x.transpose(1, 2)
    backward = seconds(lambda: (torch.bmm(g, wt), torch.bmm(xt, g)))
    return calls * forward, calls * backward, 2.0 * members * rows * n_in * n_out


def update_bound(tasks: TaskSpec, hidden: tuple[int, ...], batch: int) -> tuple[float, float]:
    """(matmul-only seconds, FLOPs) of one SAC update of ``sac_qmp.py``."""
    n, features, actions = tasks.num_tasks, int(tasks.feature_mask.sum()), tasks.action_dim
    actor = [n, [features, *hidden, 2 * actions]]
    critic = [2 * n, [features + actions, *hidden, 1]]
    total_s = total_flops = 0.0
    for (members, sizes), forwards, backwards in ((actor, 2, 1), (critic, 3, 2)):
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):  # type: ignore[index]
            f, b, flops = layer_times(members, batch, n_in, n_out)  # type: ignore[arg-type]
            total_s += forwards * f + backwards * b
            total_flops += flops * (forwards + 2 * backwards)
    return total_s, total_flops


class PhaseClock:
    """Accumulates wall time per phase of ``sac_qmp.py``'s loop by wrapping the methods that
    delimit them (only once learning has started)."""

    def __init__(self):
        self.total = defaultdict(float)
        self.updates = 0
        self._loop_mark: float | None = None
        self._update_mark: float | None = None
        self.learning = False

    def timed(self, phase: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            if self.learning:
                self.total[phase] += time.perf_counter() - start
            return out

        return wrapper

    def install(self, patch: Callable[[object, str, object], None]) -> None:
        clock = self
        updates_due, evaluation_due = TrainingRun.updates_due, TrainingRun.evaluation_due

        def on_updates_due(run):
            due = updates_due(run)
            clock.learning = due > 0 or clock.learning
            clock.updates += due if clock.learning else 0
            clock._update_mark = time.perf_counter()
            return due

        def on_evaluation_due(run):
            now = time.perf_counter()
            if clock.learning and clock._update_mark is not None:
                clock.total["update"] += now - clock._update_mark
            if clock.learning and clock._loop_mark is not None:
                clock.total["step"] += now - clock._loop_mark
            clock._loop_mark = now
            return evaluation_due(run)

        patch(TrainingRun, "updates_due", on_updates_due)
        patch(TrainingRun, "evaluation_due", on_evaluation_due)
        patch(QSwitchState, "select", self.timed("qswitch", QSwitchState.select))
        for cls in (gym.vector.SyncVectorEnv,):
            patch(cls, "step", self.timed("env", cls.step))


def profile_run(env_id: str, steps: int, out: Path) -> PhaseClock:
    preset = PRESETS[env_id]
    clock = PhaseClock()
    originals: list[tuple[object, str, object]] = []

    def patch(owner, name, value):
        originals.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    clock.install(patch)
    try:
        sac_qmp.main(sac_qmp.Args(
            env_id=env_id, qmp=True, learning_starts=preset.learning_starts,
            total_timesteps=preset.learning_starts + steps, eval_every=10**9, eval_episodes=1,
            progress=False, run_dir=str(out),
        ))  # fmt: skip
    finally:
        for owner, name, value in reversed(originals):
            setattr(owner, name, value)
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-ids", nargs="+", type=qmp_env_id, default=SUITES)
    parser.add_argument(
        "--steps", type=at_least(1), default=2000, help="env steps after learning starts"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    header = ("suite", "N", "B", "ms/update", "matmul bound ms", "ratio", "GFLOP/s",
              "update %", "Q-switch %", "env %", "rest %")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for env_id in args.env_ids:
            preset = PRESETS[env_id]
            envs = gym.make_vec(env_id)
            tasks = TaskSpec.of(envs)
            envs.close()
            bound_s, flops = update_bound(tasks, preset.hidden, preset.batch_size)
            clock = profile_run(env_id, args.steps, Path(tmp) / env_id.replace("/", "_"))
            total = clock.total["step"]
            per_update = clock.total["update"] / max(clock.updates, 1)
            shares = [clock.total[p] / total for p in ("update", "qswitch", "env")]
            rows.append((
                env_id, tasks.num_tasks, preset.batch_size, f"{1e3 * per_update:.2f}",
                f"{1e3 * bound_s:.2f}", f"{per_update / bound_s:.2f}",
                f"{flops / per_update / 1e9:.1f}",
                *(f"{100 * s:.0f}" for s in shares), f"{100 * (1 - sum(shares)):.0f}",
            ))  # fmt: skip
            print(" | ".join(map(str, rows[-1])), flush=True)
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    print(
        "\nratio = measured time per update / the time its matmuls alone take at the measured "
        "throughput of their shapes (1.0: nothing but matmuls)."
    )


if __name__ == "__main__":
    main()
