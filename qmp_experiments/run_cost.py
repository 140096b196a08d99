"""What the committed runs cost: wall-clock hours per finished run, read from the run folders.

    python -m qmp_experiments.run_cost results/maze_ps results/cds results/walker
    python -m qmp_experiments.run_cost results/maze_ps --out results/maze_ps/run_cost.md

Every training process writes a TensorBoard file named ``events.out.tfevents.<start time>...``
when it starts, and stamps every evaluation row of ``metrics.csv`` with the wall clock. A run
that was interrupted and resumed has one event file per process (a "segment"). A segment's
time is from its start to the last evaluation it wrote before the next segment started: the
work a kill threw away after that evaluation is not counted, as it is not in the result.

Campaign runs use one CPU thread each, two side by side on this project's 2-core machine, so
a run's wall-clock hours are its CPU-hours, unless it shared its core (then they overstate it;
the README says where). Only finished runs (``timing.json`` present) are counted.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from qmp_experiments.aggregate import markdown_table
from qmp_harness.run_files import atomic_write_text, folder_creation_problem

EVENT_PREFIX = "events.out.tfevents."


@dataclass(frozen=True)
class RunCost:
    env_steps: int  # from timing.json
    segments: int  # training processes that wrote into it
    wall_seconds: float  # summed over segments (see the module docstring)


def segment_starts(run_dir: Path) -> list[float]:
    """Start times (Unix seconds) of the processes that trained ``run_dir``, oldest first."""
    starts = []
    for path in run_dir.glob(EVENT_PREFIX + "*"):
        stamp = path.name[len(EVENT_PREFIX) :].split(".", 1)[0]
        if not stamp.isdigit():
            raise ValueError(
                f"{path}: expected {EVENT_PREFIX}<unix time>.<host>..., got {path.name}"
            )
        starts.append(float(stamp))
    return sorted(starts)


def evaluation_times(metrics: Path) -> list[float]:
    with metrics.open() as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "time" not in reader.fieldnames:
            raise ValueError(f"{metrics}: no 'time' column (columns: {reader.fieldnames})")
        return sorted(float(row["time"]) for row in reader)


def run_cost(run_dir: Path) -> RunCost:
    """The wall-clock time of one finished run folder; a clear error if it cannot be read."""
    timing = run_dir / "timing.json"
    try:
        env_steps = int(json.loads(timing.read_text())["env_steps"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{timing}: not a finished run's timing file ({error})") from error
    starts = segment_starts(run_dir)
    if not starts:
        raise ValueError(f"{run_dir}: no {EVENT_PREFIX}* file, so no start time")
    times = evaluation_times(run_dir / "metrics.csv")
    wall = 0.0
    for start, next_start in zip(starts, [*starts[1:], float("inf")], strict=True):
        # A segment's own rows: written after it started and before the next one started.
        # Event-file names carry whole seconds, so a row in the same second still counts.
        own = [t for t in times if start <= t + 1.0 and t < next_start]
        if own:
            wall += max(own) - start
    return RunCost(env_steps, len(starts), wall)


def finished_runs(root: Path) -> list[Path]:
    """Every run folder below ``root`` (or ``root`` itself) that has a ``timing.json``."""
    return sorted(path.parent for path in root.rglob("timing.json"))


def cost_table(roots: list[Path]) -> str:
    """One row per method folder: runs, env steps, hours per run, env steps/s of wall time."""
    groups: dict[Path, list[RunCost]] = {}
    for root in roots:
        runs = finished_runs(root)
        if not runs:
            raise ValueError(f"{root}: no finished run (no timing.json below it)")
        for run_dir in runs:
            groups.setdefault(run_dir.parent, []).append(run_cost(run_dir))
    rows = []
    for method_dir, costs in sorted(groups.items()):
        hours = [c.wall_seconds / 3600 for c in costs]
        steps = sorted({c.env_steps for c in costs})
        resumed = sum(c.segments > 1 for c in costs)
        rows.append(
            [
                method_dir.as_posix(),
                len(costs),
                "/".join(f"{s:,}" for s in steps),
                f"{statistics.median(hours):.2f}",
                f"{min(hours):.2f}-{max(hours):.2f}",
                f"{sum(c.env_steps for c in costs) / sum(c.wall_seconds for c in costs):.0f}",
                resumed,
            ]
        )
    columns = [
        "runs of",
        "runs",
        "env steps",
        "hours per run (median)",
        "min-max",
        "env steps/s (wall, evaluation included)",
        "resumed runs",
    ]
    return markdown_table(columns, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("roots", nargs="+", type=Path, help="campaign result folders")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    problem = args.out and (
        f"{args.out} is a folder; give a file name (run_cost.md)"
        if args.out.is_dir()
        else folder_creation_problem(args.out.parent)
    )
    if problem:
        parser.error(f"--out {args.out}: {problem}")
    try:
        table = cost_table(args.roots)
    except ValueError as error:  # a folder with no finished run: named
        parser.error(str(error))
    print(table, end="")
    if args.out is not None:
        atomic_write_text(args.out, table)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
