"""The paper's illustrative PointReach figure from a campaign of three methods.

The campaign (default ``qmp_experiments/campaigns/pointreach.toml``) has three methods run with
the same seeds and hyperparameters: (a) plain SAC, (b) SAC + QMP with the diverse helpers
{up, right, down-left}, (c) SAC + QMP with the relevant helpers {up, right, up-right}. This
command runs what is missing through the results driver (local pool), then draws the
trajectories one seed collected (read back from its final replay buffer) and, per panel, the
share of collected episodes that reached the goal, how often each policy was executed and the
own policy's final success, as mean and range over the seeds.

    python -m qmp_studies.pointreach_figure                     # the bundled campaign
    python -m qmp_studies.pointreach_figure my_pointreach.toml --report-only

Each run's collected positions are saved as ``episodes.npz`` in its folder the first time they
are read, so the figure can be redrawn from committed run folders without checkpoints.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from qmp_envs.point_reach import ARENA_SIZE, GOAL, GOAL_RADIUS, START_CENTRE  # noqa: E402
from qmp_experiments import sweep  # noqa: E402
from qmp_experiments.campaign import Campaign, load_campaign  # noqa: E402
from qmp_harness.checkpoints import (  # noqa: E402
    CHECKPOINT_LOAD_ERRORS,
    load_checkpoint,
    saved_checkpoints,
)
from qmp_harness.run_files import atomic_write_text, commit_temporary, temporary_path  # noqa: E402
from qmp_harness.run_plots import fit_title, save_figure  # noqa: E402

TITLES = {
    "sac": "(a) SAC",
    "qmp_diverse": "(b) SAC + QMP, diverse helpers",
    "qmp_relevant": "(c) SAC + QMP, relevant helpers",
}


class FigureInputError(ValueError):
    """A run the figure needs is missing or cannot be read; the message names it and the way
    on."""


def collected_episodes(run_dir: Path) -> list[np.ndarray]:
    """Positions of every episode the run collected, in collection order: from its
    ``episodes.npz`` if present, else from its final replay buffer (then saved as npz)."""
    saved = run_dir / "episodes.npz"
    if saved.is_file():
        with np.load(saved) as data:
            return np.split(data["positions"], data["splits"])
    checkpoints = saved_checkpoints(run_dir / "checkpoints")
    if not checkpoints:
        raise FigureInputError(
            f"{run_dir} has neither episodes.npz nor a checkpoint, so its trajectories cannot be "
            "read (it was made before runs saved them); rerun the campaign into a new folder: "
            "--root <empty folder>, without --report-only"
        )
    rb = load_checkpoint(checkpoints[-1])["rb"]
    stored = rb.num_transitions()
    obs = rb.observations[:stored, 0, :2] * ARENA_SIZE
    next_obs = rb.next_observations[:stored, 0, :2] * ARENA_SIZE
    # A new episode starts where a step does not continue from the previous step's outcome.
    starts = [0] + [t for t in range(1, stored) if not np.array_equal(obs[t], next_obs[t - 1])]
    ends = starts[1:] + [stored]
    episodes = [
        np.vstack([obs[a:b], next_obs[b - 1 : b]]) for a, b in zip(starts, ends, strict=True)
    ]
    splits = np.cumsum([len(e) for e in episodes])[:-1]
    tmp = temporary_path(saved)
    with tmp.open("wb") as f:
        np.savez_compressed(f, positions=np.concatenate(episodes), splits=splits)
    commit_temporary(tmp, saved)
    return episodes


def selection_frequencies(run_dir: Path) -> tuple[list[str], np.ndarray]:
    """Share of collection steps that executed each candidate, over the whole run."""
    records = [json.loads(line) for line in (run_dir / "selection.jsonl").read_text().splitlines()]
    if not json.loads((run_dir / "args.json").read_text())["qmp"]:
        # Without sharing the wrapper keeps no counts: the own policy always acts.
        return records[-1]["names"][:1], np.ones(1)
    return records[-1]["names"], np.mean([np.array(r["matrix"])[0] for r in records], axis=0)


def final_success(run_dir: Path) -> float:
    with (run_dir / "metrics.csv").open() as f:
        return float(list(csv.DictReader(f))[-1]["eval/success_mean"])


def read_run(run_dir: Path) -> tuple[list[np.ndarray], float, tuple[list[str], np.ndarray]]:
    """A finished run's episodes, final success and selection shares; a run that is missing,
    unfinished or damaged raises :class:`FigureInputError` naming it."""
    if not (run_dir / "timing.json").is_file():
        raise FigureInputError(
            f"{run_dir} is not a finished run; run the campaign first (the same command "
            "without --report-only runs what is missing)"
        )
    try:
        return collected_episodes(run_dir), final_success(run_dir), selection_frequencies(run_dir)
    except FigureInputError:
        raise
    except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as error:
        raise FigureInputError(
            f"{run_dir} cannot be read ({type(error).__name__}: {error}); restore the run "
            "folder (from git, for committed runs) or rerun it"
        ) from error
    except CHECKPOINT_LOAD_ERRORS as error:
        raise FigureInputError(f"{run_dir}: {error}") from error


def spread(values: Sequence[float] | Sequence[np.floating] | np.ndarray) -> dict[str, float]:
    return {
        "mean": float(np.mean(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
    }


def draw(campaign: Campaign, root: Path, seed_shown: int, episodes_shown: int) -> list[dict]:
    """The figure and its numbers (mean and range over the campaign's seeds)."""
    methods = campaign.expanded_methods()
    fig, axes = plt.subplots(
        2, len(methods), figsize=(4.4 * len(methods), 8), gridspec_kw={"height_ratios": [3, 1.2]}
    )
    axes = np.asarray(axes).reshape(2, len(methods))
    rows = []
    for col, method in enumerate(methods):
        runs = [root / r.folder for r in campaign.runs(methods=[method.name])]
        reached, success, shares = [], [], []
        names: list[str] = []
        for run_dir in runs:
            episodes, final, (names, freqs) = read_run(run_dir)
            reached.append(np.mean([np.linalg.norm(e[-1] - GOAL) <= GOAL_RADIUS for e in episodes]))
            success.append(final)
            shares.append(freqs)
            if run_dir.name == f"seed_{seed_shown}":
                for episode in episodes[-episodes_shown:]:
                    axes[0, col].plot(episode[:, 0], episode[:, 1], lw=0.8, alpha=0.6)
        share = np.array(shares)
        ax = axes[0, col]
        ax.add_patch(plt.Circle(tuple(GOAL), GOAL_RADIUS, color="tab:green", alpha=0.3))
        ax.add_patch(plt.Rectangle((0, 0), 1, 1, color="tab:blue", alpha=0.15))
        if campaign.env_ids[0] == "qmp/PointReach-v1":  # the local optimum: the start bonus
            ax.add_patch(plt.Circle(tuple(START_CENTRE), 1.5, color="tab:orange", alpha=0.2))
        title = TITLES.get(method.name, method.name)
        ax.set(xlim=(0, ARENA_SIZE), ylim=(0, ARENA_SIZE), aspect="equal", title=title)
        r = spread(reached)
        label = f"{r['mean']:.0%} [{r['min']:.0%}, {r['max']:.0%}] over {len(runs)} seed(s)"
        ax.text(0.3, 9.3, f"episodes reaching the goal: {label}", fontsize=8)
        axes[1, col].bar(range(len(names)), share.mean(0), color="tab:gray")
        low, high = share.mean(0) - share.min(0), share.max(0) - share.mean(0)
        axes[1, col].errorbar(range(len(names)), share.mean(0), yerr=[low, high], fmt="none", c="k")
        axes[1, col].set_xticks(range(len(names)), ["own policy", *names[1:]], fontsize=8)
        axes[1, col].set(ylim=(0, 1), ylabel="share of steps executed")
        row = {"panel": title, "seeds": len(runs)}
        for key, values in (("episodes_reaching_goal", reached), ("final_success_own", success)):
            row.update({f"{key}_{stat}": round(v, 4) for stat, v in spread(values).items()})
        for j, name in enumerate(["own policy", *names[1:]]):
            row.update(
                {f"executed/{name}_{s}": round(v, 4) for s, v in spread(share[:, j]).items()}
            )
        rows.append(row)
    env = campaign.env_ids[0]
    title = (
        f"{env}: trajectories collected by seed {seed_shown} (last {episodes_shown} episodes) "
        f"and executed policies ({campaign.total_timesteps} steps; bars: mean and range over seeds)"
    )
    fig.suptitle(fit_title(title, fig.get_figwidth()))
    fig.tight_layout()
    out = root / campaign.name
    save_figure(fig, out / "pointreach.png")
    plt.close(fig)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "pointreach.csv", text.getvalue())
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("campaign", nargs="?", default="pointreach")
    parser.add_argument("--root", type=Path, default=Path("results"))
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side")
    parser.add_argument("--report-only", action="store_true", help="only draw")
    parser.add_argument("--seed-shown", type=int, help="whose trajectories are drawn (first)")
    parser.add_argument("--episodes-shown", type=int, default=40, help="last N episodes drawn")
    args = parser.parse_args(argv)
    try:
        campaign = load_campaign(args.campaign)
    except ValueError as error:
        parser.error(str(error))
    if not args.report_only:
        outcomes = sweep.run_local(campaign, campaign.runs(), args.root, args.jobs, threads=1)
        failed = [o.folder for o in outcomes if o.status in ("failed", "busy")]
        if failed:
            raise SystemExit(f"runs not finished: {', '.join(failed)}")
    seed_shown = campaign.seeds[0] if args.seed_shown is None else args.seed_shown
    if seed_shown not in campaign.seeds:
        seeds = ", ".join(map(str, campaign.seeds))
        parser.error(f"--seed-shown {seed_shown}: the campaign's seeds are {seeds}")
    if args.episodes_shown < 1:
        parser.error(f"--episodes-shown {args.episodes_shown}: must be >= 1")
    try:
        rows = draw(campaign, args.root, seed_shown, args.episodes_shown)
    except FigureInputError as error:
        parser.exit(2, f"error: {error}\n")
    print(args.root / campaign.name / "pointreach.png")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
