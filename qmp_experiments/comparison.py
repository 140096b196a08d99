"""A campaign's methods compared: the paper's comparison figure and tables, from finished runs.

    python -m qmp_experiments.comparison reacher [--root results] [--last 3]

Writes, under ``<root>/<campaign>/``:

- ``comparison.png``: mean success over tasks against env steps, per method: IQM over seeds
  with a 95% bootstrap band (the paper's comparison figure, at our budget);
- ``comparison.md``: per method, the seeds finished and the final success of each task's own
  policy (each run's last ``--last`` evaluations, averaged over tasks; IQM over seeds with a 95%
  stratified-bootstrap CI), the deterministic Q-switch mixture's beside it for QMP runs that
  evaluated it, and the paper's value where spec section 10.3 gives one (read from its figures
  at its own, larger budget);
- ``complementary.md``: each framework with and without QMP (methods ``X`` and ``X_qmp``),
  the difference of the two IQMs and the paper's two values;
- ``partial.md``, while a method has finished fewer seeds than the others (one added to the
  campaign later): it beside every complete method on its own seeds, as in the two tables above.

Only finished runs (``timing.json`` present) count; the same seeds are used for every method
(the seeds every method has finished), so a partial campaign is still a fair comparison.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from qmp_envs.validation import integer  # noqa: E402
from qmp_experiments.aggregate import (  # noqa: E402
    final_per_task,
    markdown_table,
    mean_over_tasks_iqm,
    refuse_no_evaluations,
    task_columns,
)
from qmp_experiments.campaign import Campaign, load_campaign  # noqa: E402
from qmp_experiments.plot import group_curves  # noqa: E402
from qmp_experiments.stats import stratified_bootstrap_ci  # noqa: E402
from qmp_harness.run_files import atomic_write_text, folder_creation_problem  # noqa: E402
from qmp_harness.run_plots import fit_title, load_run, save_figure  # noqa: E402

#: How the methods of our campaigns are called in the paper.
DISPLAY_NAMES = {
    "no_sharing_qmp": "No-Sharing + QMP",
    "no_sharing": "No-Sharing",
    "parameter_sharing_qmp": "Parameter-Sharing + QMP",
    "parameter_sharing": "Parameter-Sharing",
    "data_sharing_qmp": "Data-Sharing + QMP",
    "data_sharing": "Data-Sharing (UDS)",
    "dnc_reg_only": "DnC (regularisation only)",
    "dnc_distill": "DnC",
    "fully_shared": "Fully-Shared-Behavior",
    "ctpg": "CTPG-style guidance (No-Sharing base)",
    "no_sharing_qmp_hold10": "No-Sharing + QMP (hold 10 steps)",
}

#: The paper's success in % at 25%, 50% and 100% of its plotted budget, per env id and method,
#: from ``shared/spec/paper-curves.json`` (read from the figures' vector paths, about +-0.3
#: points; mean over 5 seeds): Figure 7 ("complementary") for the framework pairs, Figure 6
#: ("other behaviour sharing") for Fully-Shared and DnC.
PAPER_CURVES: dict[str, dict[str, tuple[float, float, float]]] = {
    "qmp/MultistageReacher-v0": {
        "no_sharing_qmp": (96.7, 98.8, 98.3),
        "no_sharing": (68.1, 79.8, 79.9),
        "data_sharing_qmp": (22.0, 29.3, 32.2),
        "data_sharing": (6.1, 35.9, 35.3),
        "parameter_sharing_qmp": (68.4, 63.7, 82.5),
        "parameter_sharing": (50.2, 52.3, 46.5),
        "fully_shared": (52.4, 62.0, 74.9),
        "dnc_distill": (64.7, 80.4, 79.3),
        "dnc_reg_only": (79.8, 89.8, 100.0),
    },
    # Figure 7 only (the framework pairs) for the other suites.
    "qmp/MazeLarge10-v0": {
        "no_sharing_qmp": (25.8, 52.6, 72.1),
        "no_sharing": (25.6, 38.5, 59.4),
        "data_sharing": (22.6, 39.2, 54.5),
        "data_sharing_qmp": (16.3, 44.1, 62.3),
        "parameter_sharing": (63.0, 78.9, 89.9),
        "parameter_sharing_qmp": (94.0, 100.0, 100.1),
    },
    "qmp/MetaWorldCDS-v0": {
        "no_sharing_qmp": (37.8, 70.6, 89.0),
        "no_sharing": (33.8, 67.6, 89.9),
        "data_sharing": (32.3, 62.1, 82.5),
        "data_sharing_qmp": (41.8, 81.3, 97.5),
        "parameter_sharing": (47.6, 82.1, 96.9),
        "parameter_sharing_qmp": (54.2, 82.7, 98.4),
    },
    "qmp/KitchenMTEasy-v0": {
        "no_sharing_qmp": (26.4, 50.0, 75.9),
        "no_sharing": (12.7, 28.9, 51.9),
        "data_sharing": (16.8, 36.2, 62.9),
        "data_sharing_qmp": (17.3, 37.4, 53.4),
        "parameter_sharing": (15.6, 42.7, 27.6),
        "parameter_sharing_qmp": (35.6, 58.0, 47.6),
    },
    "qmp/MetaWorldMT10-v0": {
        "no_sharing_qmp": (37.2, 58.2, 79.8),
        "no_sharing": (35.8, 55.2, 71.5),
        "data_sharing": (44.1, 63.9, 79.9),
        "data_sharing_qmp": (44.4, 71.0, 83.8),
        "parameter_sharing": (55.3, 67.0, 68.3),
        "parameter_sharing_qmp": (58.0, 68.3, 69.3),
    },
    "qmp/MetaWorldMT50-v0": {
        "parameter_sharing": (8.1, 21.5, 35.9),
        "parameter_sharing_qmp": (14.8, 30.4, 42.0),
    },
}
#: The plotted budget (environment steps) of each suite's figures.
PAPER_BUDGETS: dict[str, int] = {
    "qmp/MultistageReacher-v0": 2_000_000,
    "qmp/MazeLarge10-v0": 12_000_000,
    "qmp/MetaWorldCDS-v0": 10_000_000,
    "qmp/KitchenMTEasy-v0": 5_000_000,
    "qmp/MetaWorldMT10-v0": 40_000_000,
    "qmp/MetaWorldMT50-v0": 30_000_000,
}


def paper_value(env_id: str, method: str, fraction_index: int) -> str:
    """The paper's value at 25% / 50% / 100% (index 0 / 1 / 2), or "-" where it has none."""
    values = PAPER_CURVES.get(env_id, {}).get(method)
    return "-" if values is None else f"{values[fraction_index]:.1f}"


def steps_text(steps: int) -> str:
    return f"{steps / 1e6:g}M" if steps >= 1_000_000 else f"{steps // 1000}k"


def finished_runs(campaign: Campaign, root: Path) -> dict[str, dict[int, Path]]:
    """Per method, the run folders (by seed) that finished."""
    found: dict[str, dict[int, Path]] = {}
    for run in campaign.runs():
        folder = root / run.folder
        if (folder / "timing.json").is_file():
            found.setdefault(run.method.name, {})[run.seed] = folder
    return found


def common_seeds(found: dict[str, dict[int, Path]], methods: list[str]) -> list[int]:
    """The seeds every method has finished: each comparison uses the same seeds."""
    seed_sets = [set(found.get(m, {})) for m in methods]
    return sorted(set.intersection(*seed_sets)) if seed_sets else []


def method_result(run_dirs: list[Path], last: int) -> dict:
    """Final success (IQM over seeds, stratified-bootstrap CI) and the IQM curve with its band."""
    finals = np.array([final_per_task(task_columns(d)[1], last, d) for d in run_dirs])
    low, high = stratified_bootstrap_ci(finals, statistic=mean_over_tasks_iqm)
    # One method's runs share one label, so group_curves returns one curve.
    (curve,) = group_curves([load_run(d, "eval/success_mean") for d in run_dirs]).values()
    # QMP runs also evaluate the Q-switch mixture; shown beside the own policy where every run
    # has it (runs made before it existed do not).
    mixture_tables = [task_columns(d, prefix="eval_mixture/")[1] for d in run_dirs]
    mixture = None
    if all(t.size for t in mixture_tables):
        mixture = mean_over_tasks_iqm(
            np.array(
                [final_per_task(t, last, d) for t, d in zip(mixture_tables, run_dirs, strict=True)]
            )
        )
    return {
        "mixture": mixture,
        "final": mean_over_tasks_iqm(finals),
        "low": low,
        "high": high,
        "steps": curve["steps"],
        "curve": curve["iqm"],
        "band": (curve["low"], curve["high"]),
    }


def percent(value: float) -> str:
    return f"{100 * value:.0f}"


@dataclass(frozen=True)
class Headers:
    """The column headers of a campaign's tables: our budget as a fraction of the paper's, and
    the paper at 25% of its budget (the nearest fraction it reports at or above ours) and at
    its end."""

    ours: str
    at25: str
    at100: str
    steps_label: str

    @classmethod
    def of(cls, campaign: Campaign) -> Headers:
        budget = PAPER_BUDGETS.get(campaign.env_ids[0])
        steps_label = f"{campaign.total_timesteps // 1000}k"
        if budget is None:
            return cls(
                f"success % at {steps_label} (IQM [95% CI])",
                "paper at 25%",
                "paper at 100%",
                steps_label,
            )
        return cls(
            f"success % at {steps_label}, {100 * campaign.total_timesteps / budget:.0f}% of "
            "the paper's budget (IQM [95% CI])",
            f"paper at 25% ({steps_text(budget // 4)})",
            f"paper at 100% ({steps_text(budget)})",
            steps_label,
        )

    def methods(self) -> list[str]:
        return [
            "method",
            "seeds",
            self.ours,
            "QMP runs: Q-switch mixture % (IQM)",
            self.at25,
            self.at100,
        ]

    def pairs(self) -> list[str]:
        return [
            "framework",
            f"without QMP % ({self.steps_label})",
            f"with QMP % ({self.steps_label})",
            "with QMP: Q-switch mixture %",
            "QMP's change (points)",
            f"{self.at25}: without -> with",
            f"{self.at100}: without -> with",
        ]


def interval(r: dict) -> str:
    return f"{percent(r['final'])} [{percent(r['low'])}, {percent(r['high'])}]"


def mixture(r: dict) -> str:
    return "-" if r["mixture"] is None else percent(r["mixture"])


def method_rows(
    env_id: str, methods: list[str], results: dict[str, dict], seeds: str
) -> list[list]:
    """One row per method, in the given order: our final success and mixture, the paper's."""
    return [
        [
            DISPLAY_NAMES.get(m, m),
            seeds,
            interval(results[m]),
            mixture(results[m]),
            paper_value(env_id, m, 0),
            paper_value(env_id, m, 2),
        ]
        for m in methods
    ]


def pair_rows(env_id: str, methods: list[str], results: dict[str, dict]) -> list[tuple[str, list]]:
    """Each framework ``X`` with ``X_qmp`` among ``methods``: (``X``, its row)."""
    rows = []
    for base in [m for m in methods if f"{m}_qmp" in methods]:
        without, with_qmp = results[base], results[f"{base}_qmp"]
        rows.append(
            (
                base,
                [
                    DISPLAY_NAMES.get(base, base),
                    interval(without),
                    interval(with_qmp),
                    mixture(with_qmp),
                    f"{100 * (with_qmp['final'] - without['final']):+.0f}",
                    f"{paper_value(env_id, base, 0)} -> {paper_value(env_id, f'{base}_qmp', 0)}",
                    f"{paper_value(env_id, base, 2)} -> {paper_value(env_id, f'{base}_qmp', 2)}",
                ],
            )
        )
    return rows


def draw_curves(
    methods: list[str],
    results: dict[str, dict],
    title: str,
    path: Path,
    legend_loc: Literal["upper left", "lower right"] = "upper left",
) -> None:
    """Each method's IQM success curve with its 95% band (solid: with QMP)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for method in methods:
        r = results[method]
        style = "-" if method.endswith("_qmp") else "--"
        ax.plot(r["steps"], r["curve"], style, label=DISPLAY_NAMES.get(method, method))
        ax.fill_between(r["steps"], *r["band"], alpha=0.12)
    ax.set(
        xlabel="environment steps (all tasks)",
        ylabel="mean success over tasks (IQM over seeds, 95% CI)",
        ylim=(-0.02, 1.02),
        title=fit_title(title, fig.get_figwidth()),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=legend_loc)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def report(campaign: Campaign, root: Path, last: int = 3) -> list[Path]:
    last = integer("last (evaluations averaged at the end)", last, minimum=1)
    env_id = campaign.env_ids[0]
    found = finished_runs(campaign, root)
    # A method added later, not yet run on every seed the others were, must not shrink their
    # comparison to its seeds: it joins once it has started as many seeds as the most started
    # method (until then it is compared on its own seeds in partial.md). A seed still running
    # holds the comparison at the seeds every method has finished.
    started: dict[str, int] = {m.name: 0 for m in campaign.methods}
    for run in campaign.runs():
        started[run.method.name] += (root / run.folder).is_dir()
    most = max(started.values(), default=0)
    methods = [m for m, count in started.items() if count == most]
    partial = [m for m, count in started.items() if 0 < count < most and found.get(m)]
    for runs in found.values():  # a run too short for --last is refused before any write
        for run_dir in runs.values():
            final_per_task(task_columns(run_dir)[1], last, run_dir)
    seeds = common_seeds(found, methods)
    if not seeds:
        raise SystemExit(nothing_to_compare(campaign, root, started, found))
    results = {m: method_result([found[m][s] for s in seeds], last) for m in methods}
    out = root / campaign.name
    steps_label = f"{campaign.total_timesteps // 1000}k"

    figure = out / "comparison.png"
    title = f"{env_id}, {len(seeds)} seeds ({', '.join(map(str, seeds))}), {steps_label} steps"
    draw_curves(methods, results, title, figure)

    headers = Headers.of(campaign)
    comparison = out / "comparison.md"
    atomic_write_text(
        comparison,
        markdown_table(
            headers.methods(),
            method_rows(
                env_id,
                sorted(methods, key=lambda m: -results[m]["final"]),
                results,
                str(len(seeds)),
            ),
        ),
    )
    complementary = out / "complementary.md"
    atomic_write_text(
        complementary,
        markdown_table(headers.pairs(), [row for _, row in pair_rows(env_id, methods, results)]),
    )
    written = [figure, comparison, complementary]
    # A campaign complete again leaves no same-seed report of an earlier partial state behind.
    for stale in [out / "partial.md", *out.glob("partial_seeds_*.png")]:
        stale.unlink(missing_ok=True)
    if partial:
        written += partial_report(campaign, partial, methods, found, out, last)
    return written


def nothing_to_compare(
    campaign: Campaign, root: Path, started: dict[str, int], found: dict[str, dict[int, Path]]
) -> str:
    """Why there is no seed to compare on, and where to look: a --root that holds none of the
    campaign's run folders is named as such, not reported as runs still to finish."""
    if not any(started.values()):
        return (
            f"{campaign.name}: no run folder under {root / campaign.name} (the sweep writes "
            f"<root>/{campaign.name}/<method>/seed_<n>); pass the --root the sweep was given"
        )
    finished = ", ".join(f"{m} {len(found.get(m, {}))}" for m in started)
    return (
        f"{campaign.name}: no seed has finished for every method yet (finished runs: "
        f"{finished}); `python -m qmp_experiments.sweep {campaign.name} --root {root} "
        "--status` shows where each run stands"
    )


def partial_report(
    campaign: Campaign,
    partial: list[str],
    complete: list[str],
    found: dict[str, dict[int, Path]],
    out: Path,
    last: int,
) -> list[Path]:
    """``partial.md``: each method that has not finished every seed yet, beside every complete
    method on the same seeds (a same-seed comparison, not the campaign's), with the Q-switch
    mixture and the paper's values as in ``comparison.md``, and its pair with or without QMP
    where both have those seeds; ``partial_seeds_<seeds>.png``: their curves."""
    env_id = campaign.env_ids[0]
    headers = Headers.of(campaign)
    # Partial methods on the same seeds share one comparison (a framework's pair, typically).
    groups: dict[tuple[int, ...], list[str]] = {}
    for method in partial:
        groups.setdefault(tuple(sorted(found[method])), []).append(method)
    rows, pairs, written = [], [], []
    for seeds, members in groups.items():
        others = [m for m in complete if set(seeds) <= set(found.get(m, {}))]
        results = {
            m: method_result([found[m][s] for s in seeds], last) for m in [*members, *others]
        }
        order = members + sorted(others, key=lambda m: -results[m]["final"])
        label = ", ".join(map(str, seeds))
        figure = out / f"partial_seeds_{'_'.join(map(str, seeds))}.png"
        # The figure keeps to the late methods and the complete framework pairs (with and
        # without QMP), the references a reader compares them with; the table has every method.
        paired = [
            m
            for m in others
            if f"{m}_qmp" in others or (m.endswith("_qmp") and m.removesuffix("_qmp") in others)
        ]
        title = f"{env_id}, seed(s) {label}: methods not yet on every seed, framework pairs"
        draw_curves([*members, *paired], results, title, figure, legend_loc="lower right")
        written.append(figure)
        for row, method in zip(method_rows(env_id, order, results, label), order, strict=True):
            if method in members:
                row[0] = f"**{row[0]}** (not yet on every seed)"
            rows.append(row)
        pairs += [
            [label, *row]
            for base, row in pair_rows(env_id, list(results), results)
            if {base, f"{base}_qmp"} & set(members)
        ]
    text = (
        "Methods not yet on every seed (in bold), each beside every complete method on the same "
        "seeds: a same-seed comparison, not the campaign's.\n\n"
        + markdown_table(headers.methods(), rows)
    )
    if pairs:
        text += "\n" + markdown_table(["seeds", *headers.pairs()], pairs)
    path = out / "partial.md"
    atomic_write_text(path, text)
    return [path, *written]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("campaign", help="a bundled campaign name or a TOML file")
    parser.add_argument("--root", type=Path, default=Path("results"))
    parser.add_argument("--last", type=int, default=3, help="evaluations averaged at the end")
    args = parser.parse_args(argv)
    refuse_no_evaluations(parser, args.last)
    try:
        campaign = load_campaign(args.campaign)
    except ValueError as error:
        parser.error(str(error))
    problem = folder_creation_problem(args.root / campaign.name)
    if problem is not None:
        parser.error(f"--root {args.root}: {problem}")
    try:
        written = report(campaign, args.root, args.last)
    except ValueError as error:  # e.g. a run with fewer evaluations than --last
        parser.exit(2, f"error: {error}\n")
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
