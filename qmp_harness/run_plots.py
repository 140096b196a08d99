"""Pictures of one training run's folder, drawn by the run itself (``--demo``) and by the
campaign plots (``qmp_experiments.plot``) alike: the run files read back and checked, a
learning-curve figure, and the QMP selection heatmap, table and curves over training.

It sits beside the run files it reads, below the campaign layer: a script that plots its own
run never imports the campaign library.
"""

from __future__ import annotations

import csv
import json
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from qmp_harness.run_files import (  # noqa: E402
    atomic_write_text,
    commit_temporary,
    temporary_path,
)

DEFAULT_METRIC = "eval/success_mean"


def save_figure(fig, path: Path) -> None:
    """Save atomically: a temporary file, then a rename."""
    tmp = temporary_path(Path(path))
    fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip("."))
    commit_temporary(tmp, Path(path))


def fit_title(text: str, width_inches: float, fontsize: float = 12.0) -> str:
    r"""``text`` wrapped at spaces so that each line fits ``width_inches`` at ``fontsize`` points.

    Matplotlib cuts a title wider than its figure instead of wrapping it. A character of
    DejaVu Sans, the default font, is taken as 0.6 em on average, more than most are, so
    the lines fit; words (an env id such as ``qmp/PointReach-v1``) are never broken.

    Args:
        text: The title; its own line breaks are kept.
        width_inches: The width the lines must fit, usually the figure's.
        fontsize: The title's font size in points (12 for Matplotlib's titles).

    Returns:
        The title with line breaks added where needed.

    >>> fit_title("QMP selection over training (5 seeds)", 3.0)
    'QMP selection over training\n(5 seeds)'
    >>> fit_title("short\nqmp/PointReach-v1", 3.0)
    'short\nqmp/PointReach-v1'
    """
    chars = max(10, int(0.9 * width_inches * 72 / (0.6 * fontsize)))
    return "\n".join(
        textwrap.fill(line, chars, break_long_words=False, break_on_hyphens=False)
        for line in text.split("\n")
    )


def steps_tick(value: float, _position: float | None = None) -> str:
    """An axis tick for a step count: ``'150k'``, ``'2.5M'``, ``'500'``.

    >>> [steps_tick(v) for v in (500, 150000, 2500000, 0)]
    ['500', '150k', '2.5M', '0']
    """
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    return f"{value / 1e3:g}k" if abs(value) >= 1e3 else f"{value:g}"


def seeds_text(count: int) -> str:
    """``'1 seed'``, ``'5 seeds'``."""
    return f"{count} seed" if count == 1 else f"{count} seeds"


def run_label(args: dict) -> str:
    """The group a run's seeds are pooled under: its exp name, QMP on or off, any Q-switch
    option that differs from the paper's and any fixed helpers, so that differently configured
    runs never pool.

    >>> run_label({"exp_name": "sac_qmp", "qmp": True, "qmp_scoring": "min_twin"})
    'sac_qmp + QMP (min_twin scoring)'
    >>> run_label({"exp_name": "sac_qmp", "qmp": True, "qmp_helpers": ["up", "right"]})
    'sac_qmp + QMP (helpers up/right)'
    >>> run_label({"exp_name": "ctpg_sac", "qmp": True, "guide_filter": True})
    'ctpg_sac + guide'
    """
    qmp = args.get("qmp", False)
    if "guide_filter" in args:  # ctpg_sac.py: --qmp turns the learned guide on
        return f"{args.get('exp_name', 'run')} {'+ guide' if qmp else '(no guide)'}"
    label = f"{args.get('exp_name', 'run')} {'+ QMP' if qmp else '(no QMP)'}"
    if qmp:
        options = [
            f"{args[key]} {name}"
            for key, name, paper in (
                ("qmp_scoring", "scoring", "original"),
                ("qmp_mixture", "mixture", "qswitch"),
            )
            if args.get(key, paper) != paper
        ]
        if args.get("qmp_hold_steps", 1) != 1:
            options.append(f"hold {args['qmp_hold_steps']}")
        if args.get("qmp_helpers"):
            options.append(f"helpers {'/'.join(args['qmp_helpers'])}")
        if options:
            label += f" ({', '.join(options)})"
    return label


class RunDataError(ValueError):
    """A run folder's file that cannot be read as a run wrote it; the message names the file
    (and line) and what is wrong."""


def read_args(run_dir: Path) -> dict:
    """A run's ``args.json`` as a dict with a string ``env_id``, or :class:`RunDataError`."""
    path = Path(run_dir) / "args.json"
    try:
        args = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # missing, a folder, not UTF-8, not JSON
        raise RunDataError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(args, dict) or not isinstance(args.get("env_id"), str):
        raise RunDataError(f"{path}: not a run's arguments (no env_id)")
    return args


def read_metrics(run_dir: Path, numeric: Sequence[str] = ()) -> list[dict[str, str]]:
    """A run's ``metrics.csv`` rows, each checked: every field present, ``global_step`` an
    integer and the ``numeric`` columns numbers; else :class:`RunDataError` naming the line."""
    path = Path(run_dir) / "metrics.csv"
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise RunDataError(f"{path}: not a readable CSV file ({error})") from None
    if not rows:
        raise RunDataError(f"{path}: no evaluation rows")
    for missing in ("global_step", *numeric):
        if missing not in rows[0]:
            raise RunDataError(f"{path}: no column {missing!r}")
    for line, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            raise RunDataError(f"{path} line {line}: {len(rows[0])} fields expected")
        try:
            int(row["global_step"])
            for column in numeric:
                float(row[column])
        except ValueError as error:
            raise RunDataError(f"{path} line {line}: not a number ({error})") from None
    return rows


def read_selection(run_dir: Path) -> list[dict]:
    """A run's ``selection.jsonl`` records ([] without the file), each checked."""
    path = Path(run_dir) / "selection.jsonl"
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise RunDataError(f"{path}: not a readable file ({error})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            matrix = np.asarray(record["matrix"], dtype=float)
            ok = isinstance(record["global_step"], int) and isinstance(record["names"], list)
            if not ok or matrix.ndim != 2 or matrix.shape[1] != len(record["names"]):
                raise ValueError("not a selection record (global_step, names, matrix)")
        except (ValueError, KeyError, TypeError) as error:
            raise RunDataError(f"{path} line {number}: {error}") from None
        records.append(record)
    return records


def load_run(run_dir: Path, metric: str) -> dict:
    """A run's configuration, ``metric`` curve and selection records; a damaged file raises
    :class:`RunDataError` naming it."""
    run_dir = Path(run_dir)
    args = read_args(run_dir)
    rows = read_metrics(run_dir, numeric=(metric,))
    selection = read_selection(run_dir)
    qmp = args.get("qmp", False)
    return {
        "env_id": args["env_id"],
        "label": run_label(args),
        "args": args,
        "qmp": qmp,
        "steps": np.array([int(r["global_step"]) for r in rows]),
        "values": np.array([float(r[metric]) for r in rows]),
        "selection": selection,
    }


def plot_selection_heatmap(histories: list[list[dict]], env: str, path: Path) -> Path:
    """Mean selection matrix over every logged interval of every seed."""
    matrix = np.mean([np.array(r["matrix"]) for history in histories for r in history], axis=0)
    cols = histories[0][-1]["names"]
    # At least 3 inches tall: with one task collected (PointReach) the rotated policy names
    # and the axis label did not fit.
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(cols), max(3.0, 1.0 + 0.6 * len(matrix))))
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(matrix)), cols[: len(matrix)])
    ax.set_xlabel("policy executed")
    ax.set_ylabel("task collected")
    title = f"QMP selection ({seeds_text(len(histories))})\n{env}"
    # The padding keeps the title clear of the colour bar's top label.
    ax.set_title(fit_title(title, fig.get_figwidth()), pad=10)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color="w", fontsize=7)
    # As tall as the matrix (a common Matplotlib recipe), not the figure: a full-height bar
    # ran into the title of a one-row matrix.
    fig.colorbar(image, ax=ax, fraction=0.046 * matrix.shape[0] / matrix.shape[1], pad=0.04)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def selection_by_interval(histories: list[list[dict]]) -> tuple[list[int], np.ndarray]:
    """The steps every seed logged, and the selection matrices at those steps averaged over
    seeds: an ``(intervals, tasks, candidates)`` array."""
    steps = sorted(set.intersection(*({r["global_step"] for r in h} for h in histories)))
    per_seed = [[np.array(r["matrix"]) for r in h if r["global_step"] in steps] for h in histories]
    return steps, np.array(per_seed).mean(axis=0)


def selection_table(histories: list[list[dict]]) -> str:
    """Markdown: per task collected, the share of each executed policy over all of training,
    then the own policy's share in the first and last third of the logged intervals."""
    names = histories[0][-1]["names"]
    steps, stacked = selection_by_interval(histories)
    third = max(1, len(steps) // 3)
    early, late = stacked[:third].mean(axis=0), stacked[-third:].mean(axis=0)
    overall = stacked.mean(axis=0)
    header = ["task collected \\ policy executed", *names, "own: first third", "own: last third"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task in range(overall.shape[0]):
        cells = [f"{v:.3f}" for v in overall[task]]
        cells += [f"{early[task, task]:.3f}", f"{late[task, task]:.3f}"]
        lines.append(f"| {names[task]} | " + " | ".join(cells) + " |")
    return (
        f"Executed-policy shares, mean over {len(histories)} seed(s) and the {len(steps)} logged "
        f"intervals up to step {steps[-1]}.\n\n" + "\n".join(lines) + "\n"
    )


def plot_selection_over_time(histories: list[list[dict]], env: str, path: Path) -> Path:
    """One panel per task: how often each policy was executed for it, per logged interval.

    Lines are the mean over seeds at the steps all seeds logged. This shows whether sharing
    fades as a task's own policy improves, and which policies a task avoids.
    """
    steps, mean = selection_by_interval(histories)
    names = histories[0][-1]["names"]
    n_tasks = mean.shape[1]
    cols = min(n_tasks, 5)
    rows = -(-n_tasks // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for task, ax in enumerate(axes.flat):
        if task >= n_tasks:
            ax.axis("off")
            continue
        for j, name in enumerate(names):
            own = j == task
            ax.plot(steps, mean[:, task, j], label=name, lw=2.2 if own else 1.0)
        ax.set_title(f"collecting {names[task]}", fontsize=8)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("environment steps", fontsize=7)
        # '150k', at most 5 ticks: full step counts ran into each other on 3-inch panels.
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(steps_tick))
        ax.tick_params(labelsize=7)
    axes.flat[0].set_ylabel("fraction executed")
    axes.flat[0].legend(fontsize=6)
    title = f"QMP selection over training ({seeds_text(len(histories))}; thick: own policy)\n{env}"
    fig.suptitle(fit_title(title, fig.get_figwidth()))
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def draw_learning_curves(curves: dict[tuple[str, str], dict], metric: str, out_dir: Path) -> Path:
    """One panel per environment, one line per (env, label) curve with its band; ``curves`` as
    ``qmp_experiments.plot.group_curves`` returns them (``steps``, ``iqm``, ``low``,
    ``high``, ``n``). Returns the PNG written into ``out_dir``."""
    envs = sorted({env for env, _ in curves})
    fig, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs), 4), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        for (curve_env, label), c in sorted(curves.items()):
            if curve_env != env:
                continue
            ax.plot(c["steps"], c["iqm"], label=f"{label} (n={c['n']})")
            ax.fill_between(c["steps"], c["low"], c["high"], alpha=0.2)
        ax.set_title(env)
        ax.set_xlabel("environment steps (all tasks)")
        ax.set_ylabel(f"{metric} (IQM, 95% CI)")
        if "success" in metric:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    # The default metric keeps the plain name; others are named after their column.
    suffix = "" if metric == DEFAULT_METRIC else "_" + metric.replace("eval/", "").replace("/", "_")
    path = Path(out_dir) / f"learning_curves{suffix}.png"
    save_figure(fig, path)
    plt.close(fig)
    return path


def write_selection_outputs(
    histories_by_group: dict[tuple[str, str], list[list[dict]]], out_dir: Path
) -> list[Path]:
    """Per (env, label) group of QMP runs: the selection heatmap, its table and the selection
    over training, named after the group."""
    written = []
    for (env, label), histories in histories_by_group.items():
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{env}_{label}".replace("+", "plus")).strip("_")
        written.append(plot_selection_heatmap(histories, env, out_dir / f"selection_{slug}.png"))
        table = out_dir / f"selection_{slug}.md"
        atomic_write_text(table, selection_table(histories))
        written.append(table)
        written.append(
            plot_selection_over_time(histories, env, out_dir / f"selection_over_time_{slug}.png")
        )
    return written


def plot_run(run_dir: str | Path, out_dir: str | Path, metric: str = DEFAULT_METRIC) -> list[Path]:
    """One run's learning curve and, for a QMP run, its selection outputs: what
    ``qmp_experiments.plot.plot_runs`` draws for a single run (one seed: the curve is the
    run's own values, its band collapsed onto it). Raises :class:`RunDataError` for a damaged
    run file."""
    run = load_run(Path(run_dir), metric)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    values = run["values"]
    curve = {"steps": run["steps"], "iqm": values, "low": values, "high": values, "n": 1}
    written = [draw_learning_curves({(run["env_id"], run["label"]): curve}, metric, out_dir)]
    if run["qmp"] and run["selection"]:
        groups = {(run["env_id"], run["label"]): [run["selection"]]}
        written += write_selection_outputs(groups, out_dir)
    return written
