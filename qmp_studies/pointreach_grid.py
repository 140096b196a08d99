"""Claim (c) of the illustrative example: judge PointReach designs by the README's criteria.

A *design* is one environment setting (the campaign's ``[overrides]`` value, e.g.
``--env-options start_bonus=0.02``, or none) read at one budget (env steps). For each design
and seed this reads, from the run folders of the two methods ``sac`` (plain SAC) and
``qmp_relevant`` (SAC + QMP with {up, right, up-right}):

- the share of collected episodes that reached the goal by the budget (from the run's
  collected positions: ``episodes.npz`` or its final replay buffer, see
  ``pointreach_figure.collected_episodes``), so one 50k run also gives its 20k design;
- the share of collected steps that executed each policy by the budget (``selection.jsonl``,
  equal 5k windows);
- the own policy's evaluation success at the budget (``metrics.csv``).

Then it judges the three claims exactly as the README states them (written before the grid
was run) and, with ``--choose``, picks the design to confirm on held-out seeds:

    python -m qmp_studies.pointreach_grid pointreach_grid --budgets 20000 50000 --choose
    python -m qmp_studies.pointreach_grid pointreach_v2_confirm --budgets 50000

Writes ``<root>/<campaign>/designs.md`` and ``designs.csv`` and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qmp_envs.point_reach import GOAL, GOAL_RADIUS
from qmp_experiments.campaign import Campaign, load_campaign
from qmp_experiments.sweep import is_finished
from qmp_harness.run_files import atomic_write_text
from qmp_studies.pointreach_figure import collected_episodes

BASELINE, SHARING = "sac", "qmp_relevant"
HELPERS = ("up", "right", "up-right")
# The README's thresholds ("Deciding claim (c)").
SAC_REACH_BELOW = 0.05
QMP_REACH_MEAN, QMP_REACH_EVERY_SEED, QMP_OVER_SAC = 0.10, 0.05, 2.0
UP_RIGHT_MARGIN, HELD_OUT_SEEDS_NEEDED = 0.02, 4


@dataclass
class SeedReading:
    seed: int
    sac_reach: float
    sac_success: float
    qmp_reach: float
    shares: dict[str, float]  # executed share per policy ("own" and each helper)

    @property
    def up_right_largest(self) -> bool:
        others = [self.shares[h] for h in HELPERS if h != "up-right"]
        return self.shares["up-right"] > max(others)


@dataclass
class Design:
    setting: str  # the override value, "" when the campaign has none
    budget: int
    seeds: list[SeedReading] = field(default_factory=list)

    @property
    def label(self) -> str:
        steps = f"{self.budget // 1000}k" if self.budget % 1000 == 0 else str(self.budget)
        return f"{self.setting or 'default'} @ {steps}"

    def mean(self, key: str) -> float:
        return float(np.mean([getattr(s, key) for s in self.seeds]))

    def mean_share(self, name: str) -> float:
        return float(np.mean([s.shares[name] for s in self.seeds]))

    @property
    def up_right_margin(self) -> float:
        """Mean share of up-right minus the larger mean share of the two other helpers."""
        return self.mean_share("up-right") - max(self.mean_share(h) for h in HELPERS[:2])

    @property
    def seeds_up_right_largest(self) -> int:
        return sum(s.up_right_largest for s in self.seeds)

    def claim_a(self) -> bool:
        return all(s.sac_reach < SAC_REACH_BELOW and s.sac_success == 0 for s in self.seeds)

    def claim_b(self) -> bool:
        qmp = [s.qmp_reach for s in self.seeds]
        return (
            float(np.mean(qmp)) >= QMP_REACH_MEAN
            and min(qmp) >= QMP_REACH_EVERY_SEED
            and float(np.mean(qmp)) >= QMP_OVER_SAC * self.mean("sac_reach")
        )

    def claim_c(self, seeds_needed: int) -> bool:
        return self.up_right_margin >= UP_RIGHT_MARGIN and self.seeds_up_right_largest >= (
            seeds_needed
        )


def _reach_by(run_dir: Path, budget: int) -> float:
    """Share of the episodes collected within ``budget`` steps that ended in the goal."""
    episodes = collected_episodes(run_dir)
    ends = np.cumsum([len(e) - 1 for e in episodes])
    if ends[-1] < budget:
        raise ValueError(f"{run_dir} collected {ends[-1]} steps, fewer than the budget {budget}")
    kept = [e for e, end in zip(episodes, ends, strict=True) if end <= budget]
    return float(np.mean([np.linalg.norm(e[-1] - GOAL) <= GOAL_RADIUS for e in kept]))


def _shares_by(run_dir: Path, budget: int) -> dict[str, float]:
    if not json.loads((run_dir / "args.json").read_text())["qmp"]:
        return {"own": 1.0, **dict.fromkeys(HELPERS, 0.0)}
    records = [json.loads(line) for line in (run_dir / "selection.jsonl").read_text().splitlines()]
    windows = [r for r in records if r["global_step"] <= budget]
    if not windows or windows[-1]["global_step"] != budget:
        raise ValueError(f"{run_dir}/selection.jsonl has no window ending at step {budget}")
    names = windows[-1]["names"]
    if sorted(names[1:]) != sorted(HELPERS):
        raise ValueError(f"{run_dir} ran helpers {names[1:]}, expected {list(HELPERS)}")
    share = np.mean([np.array(r["matrix"])[0] for r in windows], axis=0)
    return {
        "own": float(share[0]),
        **{n: float(v) for n, v in zip(names[1:], share[1:], strict=True)},
    }


def _success_at(run_dir: Path, budget: int) -> float:
    with (run_dir / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            if int(row["global_step"]) == budget:
                return float(row["eval/success_mean"])
    raise ValueError(f"{run_dir}/metrics.csv has no evaluation at step {budget}")


def _check_finished(run_dir: Path, total_timesteps: int) -> None:
    # A run still going must not be read: its positions would be cached short (episodes.npz).
    if not is_finished(run_dir, total_timesteps):
        raise ValueError(f"{run_dir} has not finished its {total_timesteps} steps")


def read_designs(campaign: Campaign, root: Path, budgets: list[int]) -> list[Design]:
    """Every (setting, budget) design of the campaign, each with one reading per seed."""
    for budget in budgets:
        if budget > campaign.total_timesteps:
            raise ValueError(f"budget {budget} exceeds {campaign.name}'s total_timesteps")
    by_method: dict[str, dict[str, dict[int, Path]]] = {}
    for run in campaign.runs():
        base = run.method.name.partition("__")[0]
        setting = " ".join(run.method.override_flags[1::2])
        _check_finished(root / run.folder, campaign.total_timesteps)
        by_method.setdefault(setting, {}).setdefault(base, {})[run.seed] = root / run.folder
    designs = []
    for setting, methods in by_method.items():
        if set(methods) != {BASELINE, SHARING}:
            raise ValueError(f"{campaign.name} needs methods {BASELINE!r} and {SHARING!r}")
        for budget in budgets:
            design = Design(setting, budget)
            for seed in campaign.seeds:
                sac, qmp = methods[BASELINE][seed], methods[SHARING][seed]
                design.seeds.append(
                    SeedReading(
                        seed,
                        sac_reach=_reach_by(sac, budget),
                        sac_success=_success_at(sac, budget),
                        qmp_reach=_reach_by(qmp, budget),
                        shares=_shares_by(qmp, budget),
                    )
                )
            designs.append(design)
    return designs


def choose(designs: list[Design]) -> tuple[Design, str]:
    """The README's choosing rule, with the reason it picked what it picked."""
    eligible = [d for d in designs if d.claim_a() and d.claim_b()]
    pool = eligible or designs
    why = "" if eligible else "no design meets (a) and (b); chosen among all. "
    if any(d.seeds_up_right_largest for d in pool):
        best = max(pool, key=lambda d: (d.seeds_up_right_largest, d.mean("qmp_reach")))
        return best, why + (
            f"up-right is the largest helper in {best.seeds_up_right_largest} of "
            f"{len(best.seeds)} seeds (ties broken by the QMP goal rate)"
        )
    best = max(pool, key=lambda d: d.up_right_margin)
    return best, why + (
        f"up-right is the largest helper in no seed of any design; largest margin "
        f"{100 * best.up_right_margin:+.1f} points"
    )


def _range(values: list[float]) -> str:
    return f"{np.mean(values):.1%} [{min(values):.1%}, {max(values):.1%}]"


def table(designs: list[Design], seeds_needed: int) -> tuple[str, list[dict]]:
    """Markdown table and CSV rows: one row per design."""
    head = (
        "| design | SAC episodes reaching the goal | SAC own success | QMP episodes reaching "
        "the goal | executed own / up / right / up-right | up-right largest (seeds) | "
        "margin (points) | (a) | (b) | (c) |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines, rows = [head], []
    for d in designs:
        a, b, c = d.claim_a(), d.claim_b(), d.claim_c(seeds_needed)
        shares = " / ".join(f"{d.mean_share(n):.1%}" for n in ("own", *HELPERS))
        sac_success = ", ".join(f"{s.sac_success:.1f}" for s in d.seeds)
        lines.append(
            f"| {d.label} | {_range([s.sac_reach for s in d.seeds])} | {sac_success} | "
            f"{_range([s.qmp_reach for s in d.seeds])} | {shares} | "
            f"{d.seeds_up_right_largest} of {len(d.seeds)} | {100 * d.up_right_margin:+.1f} | "
            f"{'yes' if a else 'no'} | {'yes' if b else 'no'} | {'yes' if c else 'no'} |\n"
        )
        for s in d.seeds:
            rows.append(
                {
                    "setting": d.setting,
                    "budget": d.budget,
                    "seed": s.seed,
                    "sac_reach": round(s.sac_reach, 4),
                    "sac_success": s.sac_success,
                    "qmp_reach": round(s.qmp_reach, 4),
                    **{f"executed/{n}": round(v, 4) for n, v in s.shares.items()},
                    "up_right_largest": s.up_right_largest,
                }
            )
    return "".join(lines), rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("campaign", help="a campaign with methods 'sac' and 'qmp_relevant'")
    parser.add_argument("--root", type=Path, default=Path("results"))
    parser.add_argument("--budgets", type=int, nargs="+", help="default: total_timesteps")
    parser.add_argument(
        "--choose", action="store_true", help="choosing seeds: pick a design by the README rule"
    )
    args = parser.parse_args(argv)
    try:
        campaign = load_campaign(args.campaign)
        designs = read_designs(campaign, args.root, args.budgets or [campaign.total_timesteps])
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"pointreach_grid: {error}") from None
    # On choosing seeds, (c) counts per seed; on the held-out seeds it needs 4 of 5.
    seeds_needed = len(campaign.seeds) if args.choose else HELD_OUT_SEEDS_NEEDED
    text, rows = table(designs, seeds_needed)
    seeds = ", ".join(map(str, campaign.seeds))
    report = f"`{campaign.name}`: {campaign.env_ids[0]}, seeds {seeds}.\n\n{text}"
    if args.choose:
        best, why = choose(designs)
        report += f"\nChosen: **{best.label}**: {why}.\n"
    out = args.root / campaign.name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "designs.md", report)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "designs.csv", buffer.getvalue())
    print(report)


if __name__ == "__main__":
    main()
