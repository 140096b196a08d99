"""Where a campaign stands: each run's state, step, last evaluation and time left.

    python -m qmp_experiments.sweep maze_ps --root /work/runs --status
    python -m qmp_experiments.progress maze_ps --root /work/runs

Reads the run folders and writes nothing, so it is safe beside a running driver (on a shared
filesystem too). A run is

- ``finished``: its ``timing.json`` reached the campaign's budget;
- ``running``: a process holds its folder's lock (probed by taking and dropping it);
- ``stopped``: it has files but nobody holds it; the driver resumes it from its newest checkpoint
  (the work after that checkpoint is redone);
- ``not started``: no folder.

The rate is the wall-clock env steps/s between the last two evaluations (evaluation included),
once the process training now has written both, and the time left is the rest of the budget at
that rate, for running runs.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass
from pathlib import Path

from qmp_experiments.campaign import Campaign, Run, load_campaign
from qmp_experiments.run_cost import segment_starts
from qmp_harness.checkpoints import checkpoint_step, saved_checkpoints
from qmp_harness.run_files import finished_steps, folder_is_busy

SUCCESS = "eval/success_mean"
MIXTURE_SUCCESS = "eval_mixture/success_mean"


@dataclass(frozen=True)
class RunProgress:
    """What one run folder says about its run (``None``: not known from its files)."""

    run: Run
    state: str  # "finished", "running", "stopped" or "not started"
    evaluated_step: int | None = None  # the last row of metrics.csv
    checkpointed_step: int | None = None  # the newest checkpoint's step
    success: float | None = None  # the last evaluation's mean success over tasks
    mixture_success: float | None = None  # the same for the Q-switch mixture (QMP runs)
    steps_per_second: float | None = None
    note: str = ""  # a damaged file, named

    def hours_left(self, total_timesteps: int) -> float | None:
        if self.state != "running" or not self.steps_per_second or self.evaluated_step is None:
            return None
        return (total_timesteps - self.evaluated_step) / self.steps_per_second / 3600


def last_evaluations(metrics: Path) -> tuple[list[dict[str, str]], str]:
    """The last two rows of ``metrics.csv`` (fewer if it has fewer), and a note naming the
    file if it cannot be read."""
    if not metrics.is_file():
        return [], ""
    try:
        with metrics.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        return [], f"{metrics} unreadable ({type(error).__name__})"
    return rows[-2:], ""


def number(row: dict[str, str], column: str) -> float | None:
    try:
        value = float(row.get(column) or "nan")
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def latest_rate(run_dir: Path, rows: list[dict[str, str]]) -> tuple[float | None, str]:
    """Env steps/s between the last two evaluations, if the process training now (the newest
    TensorBoard file's start) wrote both: across a resume the gap between sessions would count.
    Returns the rate (None when unknown) and a note naming a file that could not be read."""
    if len(rows) < 2:
        return None, ""
    try:
        starts = segment_starts(run_dir)
    except ValueError as error:
        return None, str(error)
    values = [number(row, column) for row in rows for column in ("global_step", "time")]
    if any(value is None for value in values):
        return None, ""
    step0, time0, step1, time1 = (float(value or 0) for value in values)
    if starts and time0 + 1.0 < starts[-1]:  # event-file names carry whole seconds
        return None, ""
    steps, seconds = step1 - step0, time1 - time0
    return (steps / seconds if steps > 0 and seconds > 0 else None), ""


def run_progress(run: Run, root: Path, total_timesteps: int) -> RunProgress:
    """Read one run's folder under ``root``."""
    run_dir = root / run.folder
    if not run_dir.is_dir():
        return RunProgress(run, "not started")
    rows, note = last_evaluations(run_dir / "metrics.csv")
    checkpoints = saved_checkpoints(run_dir / "checkpoints")
    finished = finished_steps(run_dir, say=lambda _: None)
    if finished is not None and finished >= total_timesteps:
        state = "finished"
    else:
        state = "running" if folder_is_busy(run_dir) else "stopped"
    last = rows[-1] if rows else {}
    step = number(last, "global_step")
    rate, rate_note = latest_rate(run_dir, rows)
    note = "; ".join(n for n in (note, rate_note) if n)
    return RunProgress(
        run,
        state,
        evaluated_step=None if step is None else int(step),
        checkpointed_step=checkpoint_step(checkpoints[-1]) if checkpoints else None,
        success=number(last, SUCCESS),
        mixture_success=number(last, MIXTURE_SUCCESS),
        steps_per_second=rate,
        note=note,
    )


def campaign_progress(
    campaign: Campaign, root: Path, seeds: list[int] | None = None, methods: list[str] | None = None
) -> list[RunProgress]:
    """Every run of the campaign (or of the chosen seeds and methods), in the driver's order."""
    return [
        run_progress(run, root, campaign.total_timesteps) for run in campaign.runs(seeds, methods)
    ]


def progress_table(campaign: Campaign, progress: list[RunProgress]) -> str:
    """A Markdown table of :func:`campaign_progress`, one row per run, and a line of totals."""

    def show(value: float | int | None, form: str) -> str:
        return "" if value is None else format(value, form)

    columns = ["run", "state", "evaluated at", "checkpoint", "success", "mixture"]
    columns += ["env steps/s", "hours left"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for p in progress:
        state = f"{p.state} ({p.note})" if p.note else p.state
        lines.append(
            f"| {p.run.folder} | {state} | {show(p.evaluated_step, ',')} "
            f"| {show(p.checkpointed_step, ',')} | {show(p.success, '.2f')} "
            f"| {show(p.mixture_success, '.2f')} | {show(p.steps_per_second, '.0f')} "
            f"| {show(p.hours_left(campaign.total_timesteps), '.1f')} |"
        )
    counts = {s: sum(p.state == s for p in progress) for s in ("finished", "running", "stopped")}
    started = sum(counts.values())
    lines.append(
        f"\n{campaign.name}: {counts['finished']} finished, {counts['running']} running, "
        f"{counts['stopped']} stopped, {len(progress) - started} not started "
        f"(budget {campaign.total_timesteps:,} env steps per run)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("campaign", help="a bundled campaign (reacher, mt10) or a .toml file")
    parser.add_argument("--root", type=Path, default=Path("results"), help="results folder")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these of the campaign's seeds")
    parser.add_argument("--methods", nargs="+", help="only these of the campaign's methods")
    args = parser.parse_args(argv)
    try:
        campaign = load_campaign(args.campaign)
        progress = campaign_progress(campaign, args.root, args.seeds, args.methods)
    except ValueError as error:
        parser.error(str(error))
    print(progress_table(campaign, progress))


if __name__ == "__main__":
    main()
