"""Learning curves and QMP selection heatmaps from run folders.

    python -m qmp_experiments.plot runs/A runs/B ... [--out plots/] [--metric eval/success_mean]

Runs are grouped by (environment, script, QMP on/off); each group's curve is the interquartile
mean over its seeds with a 95% bootstrap band. Writes ``learning_curves.png`` and, for QMP runs,
``selection_<group>.png`` (rows: task being collected; columns: policy executed) and
``selection_over_time_<group>.png`` (one panel per task, one line per policy) and
``selection_<group>.md`` (the shares as a table, with the own policy's early and late share).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qmp_experiments.stats import bootstrap_ci, iqm
from qmp_harness.run_files import folder_creation_problem

# One run's files and pictures live with the run harness (a script plots its own run with
# them); the campaign layer pools runs into curves and draws them with the same functions.
from qmp_harness.run_plots import (
    DEFAULT_METRIC,
    RunDataError,
    draw_learning_curves,
    load_run,
    write_selection_outputs,
)

# args.json fields that say how a run was run, shown or kept, not what was run: runs that differ
# only in these pool as seeds of one method (exp_name is in the label already).
RUN_ONLY_FIELDS = frozenset(
    {
        "seed", "run_dir", "resume", "overwrite", "progress", "track", "wandb_project_name",
        "wandb_entity", "total_timesteps", "checkpoint_every", "keep_checkpoints", "log_every",
        "capture_video", "cuda", "demo", "exp_name",
    }
)  # fmt: skip


def distinguish_configurations(runs: list[dict]) -> list[dict]:
    """Give runs that share a label but were configured differently (a campaign's
    ``[overrides]``: ``--batch-size 8`` and ``16``) labels of their own, the differing fields
    appended, so they are never pooled as seeds of one method. A field only some runs record
    (written by an older version) does not split them.

    >>> runs = [{"env_id": "e", "label": "m", "args": {"batch_size": b, "seed": s}}
    ...         for b, s in ((8, 1), (16, 1), (8, 2))]
    >>> [r["label"] for r in distinguish_configurations(runs)]
    ['m [batch_size=8]', 'm [batch_size=16]', 'm [batch_size=8]']
    """
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["env_id"], run["label"])].append(run)
    out = {id(run): run for run in runs}
    for members in groups.values():
        shared = set.intersection(*(set(m.get("args", {})) for m in members)) - RUN_ONLY_FIELDS
        differ = sorted(k for k in shared if len({json.dumps(m["args"][k]) for m in members}) > 1)
        for member in members if differ else ():
            values = ", ".join(f"{k}={_shown(member['args'][k])}" for k in differ)
            out[id(member)] = {**member, "label": f"{member['label']} [{values}]"}
    return [out[id(run)] for run in runs]


def _shown(value) -> str:
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def group_curves(runs: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (env, label): the eval steps all its runs share, and IQM with a 95% band."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in distinguish_configurations(runs):
        groups[(run["env_id"], run["label"])].append(run)
    curves = {}
    for key, members in groups.items():
        steps = sorted(set.intersection(*(set(m["steps"].tolist()) for m in members)))
        table = np.array(
            [[m["values"][m["steps"].tolist().index(s)] for s in steps] for m in members]
        )
        low, high = bootstrap_ci(table)
        curves[key] = {
            "steps": np.array(steps),
            "iqm": iqm(table),
            "low": low,
            "high": high,
            "n": len(members),
        }
    return curves


def plot_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    metric: str = DEFAULT_METRIC,
    selection: bool = True,
) -> list[Path]:
    """Learning curves of ``metric``; with ``selection``, also the QMP selection outputs."""
    runs = distinguish_configurations([load_run(Path(d), metric) for d in run_dirs])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [draw_learning_curves(group_curves(runs), metric, out_dir)]
    by_group: dict[tuple[str, str], list[list[dict]]] = defaultdict(list)
    for run in runs:
        if selection and run["qmp"] and run["selection"]:
            by_group[(run["env_id"], run["label"])].append(run["selection"])
    return written + write_selection_outputs(by_group, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dirs", nargs="+", help="run folders holding args.json and metrics.csv")
    parser.add_argument("--out", default="plots", help="output folder for the PNGs")
    parser.add_argument("--metric", default=DEFAULT_METRIC, help="CSV column to plot")
    args = parser.parse_args(argv)
    problem = folder_creation_problem(args.out)
    if problem is not None:
        parser.error(f"--out {args.out}: {problem}")
    try:
        written = plot_runs(args.run_dirs, args.out, args.metric)
    except RunDataError as error:  # a damaged run file: named, no traceback
        parser.error(str(error))
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
