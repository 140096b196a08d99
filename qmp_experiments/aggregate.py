"""Aggregate runs across seeds into a results table (CSV and Markdown).

    python -m qmp_experiments.aggregate runs/* --out results/summary [--last 3]

Runs are grouped by (environment, script, QMP on/off). Per group: the number of seeds, the
final mean success (each run's last ``--last`` evaluations averaged, then over tasks, then the
IQM over runs, with a 95% stratified-bootstrap CI of that same statistic: seeds resampled
within each task), env steps until the IQM curve first
reaches 0.5 and 0.8 mean success, and the normalised area under the IQM curve. Per-task final
success (IQM over runs) goes to a second CSV and Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections import defaultdict
from pathlib import Path

import numpy as np

from qmp_envs.validation import integer
from qmp_experiments.plot import distinguish_configurations
from qmp_experiments.stats import iqm, normalized_auc, steps_to_threshold, stratified_bootstrap_ci
from qmp_harness.run_files import atomic_write_text, folder_creation_problem
from qmp_harness.run_plots import load_run, read_metrics


def task_columns(run_dir: Path, prefix: str = "eval/") -> tuple[list[str], np.ndarray]:
    """Per-task success columns of a run's metrics.csv: names and a (evals, tasks) array
    (:class:`~qmp_harness.run_plots.RunDataError` naming the file when it is damaged).

    ``prefix``: ``"eval/"`` (each task's own policy) or ``"eval_mixture/"`` (the deterministic
    Q-switch mixture that QMP runs also evaluate; no columns, so an empty table, elsewhere)."""
    columns = [k for k in read_metrics(run_dir)[0] if k.startswith(f"{prefix}success/")]
    rows = read_metrics(run_dir, numeric=columns)
    names = [k.split("/", 2)[2] for k in columns]
    table = np.array([[float(r[f"{prefix}success/{n}"]) for n in names] for r in rows])
    return names, table


def final_per_task(table: np.ndarray, last: int, run_dir: Path) -> np.ndarray:
    """Each task's success averaged over the run's last ``last`` evaluations, from a
    :func:`task_columns` table.

    Raises:
        ValueError: the run has fewer evaluations than ``last``; the tables would otherwise
            label as "last N" an average over fewer (naming the run and the way on).
    """
    if len(table) < last:
        raise ValueError(
            f"{run_dir} has {len(table)} evaluation(s), fewer than the last {last} averaged for "
            f"its final score: lower --last to {len(table)} or less"
        )
    return table[-last:].mean(axis=0)


def mean_over_tasks_iqm(scores: np.ndarray) -> float:
    """IQM over runs of each run's mean score over tasks, for a ``(runs, tasks)`` matrix."""
    return float(iqm(scores.mean(axis=1)))


def summarize(run_dirs: list[Path], last: int = 3) -> tuple[list[dict], list[dict]]:
    """The summary and per-task rows, one per (env, method); runs configured differently are
    never pooled (:func:`~qmp_experiments.plot.distinguish_configurations`).

    Raises:
        ValueError: ``last`` is not an integer >= 1 (the evaluations averaged at the end).
    """
    last = integer("last (evaluations averaged at the end)", last, minimum=1)
    loaded = distinguish_configurations([load_run(d, "eval/success_mean") for d in run_dirs])
    groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
    by_dir = {}
    for run_dir, run in zip(run_dirs, loaded, strict=True):
        groups[(run["env_id"], run["label"])].append(run_dir)
        by_dir[run_dir] = run
    summary, per_task = [], []
    for (env_id, label), dirs in sorted(groups.items()):
        runs = [by_dir[d] for d in dirs]
        steps = sorted(set.intersection(*(set(r["steps"].tolist()) for r in runs)))
        curves = np.array(
            [[r["values"][r["steps"].tolist().index(s)] for s in steps] for r in runs]
        )
        task_names, _ = task_columns(dirs[0])
        finals = np.array([final_per_task(task_columns(d)[1], last, d) for d in dirs])
        # The CI is for the reported statistic (IQM over seeds of each run's mean over tasks),
        # resampling seeds within each task.
        low, high = stratified_bootstrap_ci(finals, statistic=mean_over_tasks_iqm)
        curve = iqm(curves)
        summary.append(
            {
                "env_id": env_id,
                "method": label,
                "seeds": len(dirs),
                "final_env_steps": steps[-1],
                f"final_success_iqm_last{last}": round(mean_over_tasks_iqm(finals), 4),
                "ci95_low": round(low, 4),
                "ci95_high": round(high, 4),
                "steps_to_0.5": steps_to_threshold(np.array(steps), curve, 0.5),
                "steps_to_0.8": steps_to_threshold(np.array(steps), curve, 0.8),
                "auc_normalized": round(normalized_auc(np.array(steps), curve), 4),
            }
        )
        for name, values in zip(task_names, finals.T, strict=True):
            per_task.append(
                {
                    "env_id": env_id,
                    "method": label,
                    "task": name,
                    "final_success_iqm": round(float(iqm(values)), 4),
                }
            )
    return summary, per_task


def write_outputs(summary: list[dict], per_task: list[dict], out: Path) -> list[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for rows, suffix in ((summary, ".csv"), (per_task, "_per_task.csv")):
        path = out.with_name(out.name + suffix)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, text.getvalue())
        paths.append(path)
    md = out.with_name(out.name + ".md")
    atomic_write_text(md, markdown_table(list(summary[0]), [list(row.values()) for row in summary]))
    # Per-task finals as one row per method, one column per task: the README's layout.
    tasks = list(dict.fromkeys(row["task"] for row in per_task))
    wide: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for row in per_task:
        wide[(row["env_id"], row["method"])][row["task"]] = row["final_success_iqm"]
    per_task_md = out.with_name(out.name + "_per_task.md")
    atomic_write_text(
        per_task_md,
        markdown_table(
            ["env_id", "method", *tasks],
            [[*key, *(values.get(t, "") for t in tasks)] for key, values in wide.items()],
        ),
    )
    return [*paths, md, per_task_md]


def markdown_table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def refuse_no_evaluations(parser: argparse.ArgumentParser, last: int) -> None:
    """Stop the command (exit 2) if ``--last`` would average the final score over no evaluation;
    the same rule :func:`summarize` applies as a library call."""
    if last < 1:
        parser.error(f"--last {last}: must be at least 1 (evaluations averaged at the end)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument(
        "--out", type=Path, default=Path("results/summary"), help="output path prefix"
    )
    parser.add_argument(
        "--last", type=int, default=3, help="evaluations averaged for the final score"
    )
    args = parser.parse_args(argv)
    refuse_no_evaluations(parser, args.last)
    problem = folder_creation_problem(args.out.parent)
    if problem is not None:
        parser.error(f"--out {args.out}: {problem}")
    try:
        summary, per_task = summarize(args.run_dirs, args.last)
    except ValueError as error:  # a damaged run file, too few evaluations: named, no traceback
        parser.error(str(error))
    for path in write_outputs(summary, per_task, args.out):
        print(path)
    print((args.out.with_name(args.out.name + ".md")).read_text())


if __name__ == "__main__":
    main()
