"""What does a campaign's variant setting change? Its runs beside the same seeds of a base campaign.

For every method and seed that both campaigns finished (e.g. the committed ``reacher`` runs and
the ``reacher_original_setup`` reruns with the original code's per-task warm-up and Xavier
initialisation), this reads each run's mean success over tasks (each task's own deterministic
policy) up to the shorter budget and puts the two runs of a seed side by side:

- **final**: the mean of the last ``--last`` evaluations (as the comparison tables);
- **curve mean**: the mean over every evaluation, i.e. the area under the learning curve;
- **reaches**: the first evaluated step at which the mean success is at least ``--reach``.

Same seed, same code but the variant's flags: the difference of a seed's two runs is the
variant's effect plus seed-level chance (a flag changes the random stream from its first use
on), so read it over seeds, with the spread the summary table gives.

    python -m qmp_studies.variant_effect reacher reacher_original_setup [--root results]

Writes ``<root>/<variant>/vs_<base>.md`` and ``vs_<base>.png`` (per method, each seed's two
curves) and prints the table.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from qmp_experiments.aggregate import (  # noqa: E402
    final_per_task,
    markdown_table,
    refuse_no_evaluations,
    task_columns,
)
from qmp_experiments.campaign import load_campaign  # noqa: E402
from qmp_experiments.comparison import (  # noqa: E402
    DISPLAY_NAMES,
    finished_runs,
    percent,
    steps_text,
)
from qmp_harness.run_files import atomic_write_text  # noqa: E402
from qmp_harness.run_plots import read_metrics, save_figure  # noqa: E402


@dataclass(frozen=True)
class RunCurve:
    """A run's mean success over tasks at each evaluation up to the compared budget."""

    steps: np.ndarray
    success: np.ndarray
    run_dir: Path

    @classmethod
    def read(cls, run_dir: Path, up_to: int) -> RunCurve:
        _, table = task_columns(run_dir)
        steps = np.array([int(r["global_step"]) for r in read_metrics(run_dir)])
        keep = steps <= up_to
        if not keep.any():
            raise ValueError(f"{run_dir / 'metrics.csv'}: no evaluation at or before step {up_to}")
        return cls(steps[keep], table[keep].mean(axis=1), run_dir)

    def final(self, last: int) -> float:
        return float(final_per_task(self.success[:, None], last, self.run_dir)[0])

    def curve_mean(self) -> float:
        return float(self.success.mean())

    def reaches(self, level: float) -> int | None:
        hits = np.flatnonzero(self.success >= level)
        return int(self.steps[hits[0]]) if hits.size else None


@dataclass(frozen=True)
class SeedPair:
    method: str
    seed: int
    base: RunCurve
    variant: RunCurve


def paired_runs(base: str, variant: str, root: Path) -> tuple[list[SeedPair], int]:
    """Every (method, seed) both campaigns finished, read up to the shorter budget."""
    a, b = load_campaign(base), load_campaign(variant)
    up_to = min(a.total_timesteps, b.total_timesteps)
    found_a, found_b = finished_runs(a, root), finished_runs(b, root)
    pairs = [
        SeedPair(
            method,
            seed,
            RunCurve.read(runs[seed], up_to),
            RunCurve.read(found_b[method][seed], up_to),
        )
        for method, runs in found_a.items()
        for seed in sorted(runs)
        if seed in found_b.get(method, {})
    ]
    if not pairs:
        raise ValueError(
            f"{a.name} and {b.name} share no finished run (method and seed) under {root}"
        )
    return pairs, up_to


def steps_or_dash(step: int | None) -> str:
    return "-" if step is None else steps_text(step)


def signed(difference: float) -> str:
    return f"{100 * difference:+.0f}"


def seed_rows(pairs: list[SeedPair], last: int, reach: float) -> list[list[str]]:
    rows = []
    for p in pairs:
        finals = p.base.final(last), p.variant.final(last)
        means = p.base.curve_mean(), p.variant.curve_mean()
        rows.append(
            [
                DISPLAY_NAMES.get(p.method, p.method),
                str(p.seed),
                percent(finals[0]),
                percent(finals[1]),
                signed(finals[1] - finals[0]),
                percent(means[0]),
                percent(means[1]),
                signed(means[1] - means[0]),
                steps_or_dash(p.base.reaches(reach)),
                steps_or_dash(p.variant.reaches(reach)),
            ]
        )
    return rows


def summary_rows(pairs: list[SeedPair], last: int) -> list[list[str]]:
    rows = []
    for method in dict.fromkeys(p.method for p in pairs):
        mine = [p for p in pairs if p.method == method]
        final = np.array([p.variant.final(last) - p.base.final(last) for p in mine])
        area = np.array([p.variant.curve_mean() - p.base.curve_mean() for p in mine])
        rows.append(
            [
                DISPLAY_NAMES.get(method, method),
                ", ".join(str(p.seed) for p in mine),
                f"{signed(final.mean())} ({signed(final.min())} to {signed(final.max())})",
                f"{signed(area.mean())} ({signed(area.min())} to {signed(area.max())})",
                f"{int((final > 0).sum())} of {len(mine)}",
            ]
        )
    return rows


def draw(pairs: list[SeedPair], base: str, variant: str, path: Path) -> None:
    """One panel per method: each seed's base run dashed, its variant run solid, one colour."""
    methods = list(dict.fromkeys(p.method for p in pairs))
    fig, axes = plt.subplots(1, len(methods), figsize=(6 * len(methods), 4.5), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        for i, p in enumerate(q for q in pairs if q.method == method):
            colour = f"C{i}"
            ax.plot(
                p.base.steps, p.base.success, "--", color=colour, label=f"seed {p.seed}, {base}"
            )
            ax.plot(
                p.variant.steps,
                p.variant.success,
                "-",
                color=colour,
                label=f"seed {p.seed}, {variant}",
            )
        ax.set(
            title=DISPLAY_NAMES.get(method, method),
            xlabel="environment steps (all tasks)",
            ylabel="mean success over tasks",
            ylim=(-0.02, 1.02),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def report(
    base: str, variant: str, root: Path, last: int = 3, reach: float = 0.5
) -> tuple[str, Path]:
    """The markdown report (seed table and summary) and the figure written beside it."""
    pairs, up_to = paired_runs(base, variant, root)
    b, v = load_campaign(base).name, load_campaign(variant).name
    level = percent(reach)
    seed_table = markdown_table(
        [
            "method", "seed", "final: base", "final: variant", "change",
            "curve mean: base", "curve mean: variant", "change",
            f"reaches {level}%: base", f"reaches {level}%: variant",
        ],
        seed_rows(pairs, last, reach),
    )  # fmt: skip
    summary = markdown_table(
        [
            "method", "seeds", "final, change: mean (range)", "curve mean, change: mean (range)",
            "seeds where the variant ends higher",
        ],
        summary_rows(pairs, last),
    )  # fmt: skip
    text = (
        f"# {v} vs {b}, same seeds, up to step {up_to:,}\n\n"
        f"Base: `{b}`; variant: `{v}`. Mean success over tasks in % (each task's own "
        f"deterministic policy). Final: the last {last} evaluations; curve mean: every "
        f"evaluation (area under the curve); change: variant - base, in points.\n\n"
        f"{seed_table}\n{summary}"
    )
    figure = root / v / f"vs_{b}.png"
    draw(pairs, b, v, figure)
    atomic_write_text(root / v / f"vs_{b}.md", text)
    return text, figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base", help="the campaign compared against (e.g. the committed runs)")
    parser.add_argument("variant", help="the campaign whose setting is measured")
    parser.add_argument("--root", type=Path, default=Path("results"))
    parser.add_argument("--last", type=int, default=3, help="evaluations averaged at the end")
    parser.add_argument("--reach", type=float, default=0.5, help="success level for 'reaches'")
    args = parser.parse_args(argv)
    refuse_no_evaluations(parser, args.last)
    if not 0 < args.reach <= 1:
        parser.error(f"--reach {args.reach}: must be a success level in (0, 1]")
    try:
        text, _ = report(args.base, args.variant, args.root, args.last, args.reach)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"variant_effect: {error}") from None
    print(text)


if __name__ == "__main__":
    main()
