"""Does a longer rerun reproduce its committed shorter run? Compare the shared prefix.

For every method and seed two campaigns share (e.g. the committed 300k ``reacher`` runs and
their 500k reruns ``reacher_500k``), this compares the evaluation rows of ``metrics.csv`` up to
the shorter budget, column by column (wall-clock columns excepted). A seeded run is
bit-reproducible on one processor (see the README's "Seeded floats across x86 processors"), so
the rows are identical where this processor computes the same floats as the one that made the
committed run; otherwise this says how far apart they are and from which evaluation on.

    python -m qmp_studies.compare_prefix reacher reacher_500k
    python -m qmp_studies.compare_prefix reacher reacher_500k --up-to 300000

Writes ``<root>/<second campaign>/prefix_vs_<first campaign>.md`` and prints it.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass
from pathlib import Path

from qmp_experiments.campaign import load_campaign
from qmp_harness.run_files import atomic_write_text

IGNORED = {"time"}  # wall clock: differs between any two runs


@dataclass(frozen=True)
class PrefixComparison:
    folder: str  # "<method>/seed_<k>"
    rows: int  # evaluations compared
    identical: bool
    first_difference: int | None  # global_step of the first row that differs
    max_abs_success: float  # largest |difference| of eval/success_mean
    max_abs_return: float  # largest |difference| of eval/return_mean
    max_rel: float  # largest relative difference over every compared column
    added_columns: int = 0  # columns only the rerun has (an evaluation added since, e.g. the
    # Q-switch mixture's eval_mixture/): reported, not compared


def read_rows(path: Path, up_to: int) -> dict[int, dict[str, str]]:
    with path.open() as f:
        rows = {int(r["global_step"]): r for r in csv.DictReader(f)}
    return {step: row for step, row in rows.items() if step <= up_to}


def compare(first: Path, second: Path, up_to: int, folder: str) -> PrefixComparison:
    """Compare two runs' ``metrics.csv`` rows with ``global_step <= up_to``."""
    a, b = read_rows(first / "metrics.csv", up_to), read_rows(second / "metrics.csv", up_to)
    if not a:
        # Zero rows compared would read as "identical".
        raise ValueError(f"{folder}: no evaluation at or before step {up_to} to compare")
    if sorted(a) != sorted(b):
        missing = sorted(set(a) ^ set(b))
        raise ValueError(
            f"{folder}: the runs evaluated at different steps up to {up_to}: {missing}"
        )
    first_difference, max_abs = None, {"eval/success_mean": 0.0, "eval/return_mean": 0.0}
    max_rel, added = 0.0, set()
    for step in sorted(a):
        # Every column of the committed run must be reproduced; the rerun may log more.
        added |= set(b[step]) - set(a[step]) - IGNORED
        for column in set(a[step]) - IGNORED:
            if a[step].get(column) == b[step].get(column):
                continue
            if first_difference is None:
                first_difference = step
            x, y = float(a[step].get(column, "nan")), float(b[step].get(column, "nan"))
            diff = abs(x - y)
            if column in max_abs:
                max_abs[column] = max(max_abs[column], diff)
            scale = max(abs(x), abs(y))
            rel = math.inf if math.isnan(diff) else (diff / scale if scale else 0.0)
            max_rel = max(max_rel, rel)
    return PrefixComparison(
        folder,
        len(a),
        first_difference is None,
        first_difference,
        max_abs["eval/success_mean"],
        max_abs["eval/return_mean"],
        max_rel,
        len(added),
    )


def report(first: str, second: str, root: Path, up_to: int | None) -> tuple[str, list]:
    a, b = load_campaign(first), load_campaign(second)
    limit = min(a.total_timesteps, b.total_timesteps) if up_to is None else up_to
    if limit < 1:
        raise ValueError(f"--up-to {limit}: must be a step >= 1")
    folders_a = {r.folder.split("/", 1)[1]: root / r.folder for r in a.runs()}
    comparisons = []
    for run in b.runs():
        folder = run.folder.split("/", 1)[1]
        if folder in folders_a and (root / run.folder / "metrics.csv").is_file():
            comparisons.append(compare(folders_a[folder], root / run.folder, limit, folder))
    if not comparisons:
        raise ValueError(f"{first} and {second} share no run with a metrics.csv under {root}")
    lines = [
        f"# {second} vs {first}: evaluation rows up to step {limit}\n\n",
        "| run | evaluations | identical | first differing step | max abs diff success | "
        "max abs diff return | max relative diff | columns only in the rerun |\n"
        "|---|---|---|---|---|---|---|---|\n",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.folder} | {c.rows} | {'yes' if c.identical else 'no'} | "
            f"{c.first_difference if c.first_difference is not None else '-'} | "
            f"{c.max_abs_success:.3g} | {c.max_abs_return:.3g} | {c.max_rel:.3g} | "
            f"{c.added_columns} |\n"
        )
    same = sum(c.identical for c in comparisons)
    lines.append(
        f"\n{same} of {len(comparisons)} runs identical over the shared prefix (every column of "
        f"the {first} run; columns only the rerun logs are counted, not compared).\n"
    )
    return "".join(lines), comparisons


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("first", help="the committed (shorter) campaign")
    parser.add_argument("second", help="the rerun (longer) campaign")
    parser.add_argument("--root", type=Path, default=Path("results"))
    parser.add_argument("--up-to", type=int, help="last global_step compared (default: shorter)")
    args = parser.parse_args(argv)
    if args.up_to is not None and args.up_to < 1:
        parser.error(f"--up-to {args.up_to}: must be a step >= 1 (the last global_step compared)")
    try:
        text, _ = report(args.first, args.second, args.root, args.up_to)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"compare_prefix: {error}") from None
    first, second = load_campaign(args.first).name, load_campaign(args.second).name
    atomic_write_text(args.root / second / f"prefix_vs_{first}.md", text)
    print(text)


if __name__ == "__main__":
    main()
