"""Run (and resume) the README's result experiments, then write their tables and plots.

    python -m cleanrl_qmp.reproduce reacher --jobs 2      # 9 methods x 5 seeds x 300k steps
    python -m cleanrl_qmp.reproduce mt10 --jobs 2         # sac_qmp +-QMP, 1 seed, 200k steps
    python -m cleanrl_qmp.reproduce reacher --seeds 1 2   # only those seeds, then the report
    python -m cleanrl_qmp.reproduce reacher --report-only --readme README.md
                                                          # tables, plots, README's copies

Every run lives in ``results/<experiment>/<method>/seed_<k>``. The command is idempotent: a
finished run (its final checkpoint exists) is skipped, an interrupted one resumes from its
newest checkpoint, so the experiments can be carried across sessions or machines. Runs start
seed by seed, so an interrupted campaign still holds complete method comparisons for the first
seeds. Each run uses one CPU thread (``--threads-per-run`` for more); ``--jobs`` runs that many
side by side. ``--seeds`` and ``--methods`` split a campaign across machines: each machine runs
its share, and the finished run folders are copied into one ``results/`` for the report.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cleanrl_qmp.common import checkpoint_step, saved_checkpoints

SCRIPTS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Method:
    """One curve of an experiment: a training script and its flags."""

    name: str
    script: str
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Experiment:
    env_id: str
    total_timesteps: int
    seeds: tuple[int, ...]
    methods: tuple[Method, ...]
    checkpoint_every: int
    common_flags: tuple[str, ...] = field(default=())


EXPERIMENTS = {
    # The paper's Figure 4 pairs on Multistage Reacher, at the budget 2 CPU cores allow.
    "reacher": Experiment(
        env_id="qmp/MultistageReacher-v0",
        total_timesteps=300_000,
        seeds=(1, 2, 3, 4, 5),
        methods=(
            Method("no_sharing_qmp", "sac_qmp.py", ("--qmp",)),
            Method("no_sharing", "sac_qmp.py", ("--no-qmp",)),
            Method("parameter_sharing_qmp", "mtsac_qmp.py", ("--qmp",)),
            Method("parameter_sharing", "mtsac_qmp.py", ("--no-qmp",)),
            # The paper's other ways to share behaviour (its second figure) and QMP on the
            # Data-Sharing framework (its third). DnC's distillation period was not recovered
            # (spec 10.2); every 50k steps gives 6 distillations within the 300k budget.
            Method("dnc_reg_only", "dnc_sac.py", ("--no-qmp", "--exp-name", "dnc_reg_only")),
            Method(
                "dnc_distill",
                "dnc_sac.py",
                ("--no-qmp", "--distill-every", "50000", "--exp-name", "dnc_distill"),
            ),
            Method("data_sharing_qmp", "uds_qmp.py", ("--qmp",)),
            Method("data_sharing", "uds_qmp.py", ("--no-qmp",)),
            Method(
                "fully_shared",
                "mtsac_qmp.py",
                ("--no-qmp", "--fully-shared", "--exp-name", "fully_shared_behavior"),
            ),
        ),
        checkpoint_every=20_000,
    ),
    # A pipeline check on Meta-World MT10: the paper's run is 50M steps. Evaluations use 10 of
    # the 50 eval-split goals per task, every 40k steps, to keep a curve affordable.
    "mt10": Experiment(
        env_id="qmp/MetaWorldMT10-v0",
        total_timesteps=200_000,
        seeds=(1,),
        methods=(
            Method("no_sharing_qmp", "sac_qmp.py", ("--qmp",)),
            Method("no_sharing", "sac_qmp.py", ("--no-qmp",)),
        ),
        checkpoint_every=20_000,
        common_flags=("--eval-every", "40000", "--eval-episodes", "10"),
    ),
}


def newest_checkpoint(run_dir: Path) -> Path | None:
    saved = saved_checkpoints(run_dir / "checkpoints")
    return saved[-1] if saved else None


def run_command(experiment: Experiment, method: Method, seed: int, run_dir: Path) -> list[str]:
    """The training command for one run: a fresh start, or a resume from its newest checkpoint."""
    script = [sys.executable, str(SCRIPTS_DIR / method.script)]
    checkpoint = newest_checkpoint(run_dir)
    if checkpoint is not None:
        return [*script, "--resume", str(checkpoint), "--no-progress"]
    return [
        *script,
        "--env-id", experiment.env_id,
        "--seed", str(seed),
        "--total-timesteps", str(experiment.total_timesteps),
        "--checkpoint-every", str(experiment.checkpoint_every),
        "--keep-checkpoints", "1",
        "--run-dir", str(run_dir),
        "--no-progress",
        *method.flags,
        *experiment.common_flags,
    ]  # fmt: skip


def is_finished(experiment: Experiment, run_dir: Path) -> bool:
    """A run is finished when its final checkpoint exists or, in a clone where checkpoints
    are not committed, when its ``timing.json`` (written at the end) says so."""
    checkpoint = newest_checkpoint(run_dir)
    if checkpoint is not None and checkpoint_step(checkpoint) >= experiment.total_timesteps:
        return True
    timing = run_dir / "timing.json"
    return timing.is_file() and (
        json.loads(timing.read_text())["env_steps"] >= experiment.total_timesteps
    )


def launch(command: list[str], log_path: Path, threads: int = 1) -> int:
    # A fixed thread count per run: side-by-side runs would otherwise oversubscribe the machine.
    # Headless rendering for the demo GIFs, unless the caller chose a backend (or "disable").
    env = {
        "MUJOCO_GL": "egl",
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode


def check_subset(experiment: str, kind: str, chosen: list | None, available: list) -> None:
    unknown = sorted(set(chosen or ()) - set(available))
    if unknown:
        raise ValueError(f"{experiment} has {kind} {available}, not {unknown}")


def run_all(
    name: str,
    root: Path,
    jobs: int,
    seeds: list[int] | None = None,
    methods: list[str] | None = None,
    threads_per_run: int = 1,
) -> list[str]:
    """Run every unfinished run of an experiment (or of some of its seeds and methods);
    returns the failed runs."""
    experiment = EXPERIMENTS[name]
    check_subset(name, "seeds", seeds, list(experiment.seeds))
    check_subset(name, "methods", methods, [m.name for m in experiment.methods])
    pending = [
        (method, seed, root / name / method.name / f"seed_{seed}")
        for seed in experiment.seeds
        if seeds is None or seed in seeds
        for method in experiment.methods
        if methods is None or method.name in methods
    ]
    pending = [p for p in pending if not is_finished(experiment, p[2])]
    print(f"{name}: {len(pending)} runs to do, {jobs} at a time", flush=True)

    def one(item: tuple[Method, int, Path]) -> str | None:
        method, seed, run_dir = item
        start = time.perf_counter()
        command = run_command(experiment, method, seed, run_dir)
        code = launch(command, run_dir / "train.log", threads_per_run)
        minutes = (time.perf_counter() - start) / 60
        status = "done" if code == 0 else f"FAILED (exit {code}, see {run_dir / 'train.log'})"
        print(f"{method.name} seed {seed}: {status} in {minutes:.1f} min", flush=True)
        return None if code == 0 else f"{method.name} seed {seed}"

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return [f for f in pool.map(one, pending) if f is not None]


def report(name: str, root: Path) -> None:
    """Aggregate table, per-task table, learning curves and selection outputs of the finished
    runs."""
    from cleanrl_qmp.aggregate import summarize, write_outputs
    from cleanrl_qmp.plot import plot_runs

    out = root / name
    started = sorted(p.parent for p in out.glob("*/seed_*/metrics.csv"))
    # Only finished runs: a partial run would cut every curve of its method to its length.
    run_dirs = [d for d in started if is_finished(EXPERIMENTS[name], d)]
    if len(run_dirs) < len(started):
        print(f"{name}: {len(started) - len(run_dirs)} unfinished runs left out of the report")
    if not run_dirs:
        print(f"{name}: no finished runs under {out} yet")
        return
    summary, per_task = summarize(run_dirs)
    written = [*write_outputs(summary, per_task, out / "summary"), *plot_runs(run_dirs, out)]
    written += plot_runs(run_dirs, out, "eval/return_mean", selection=False)
    for path in written:
        print(f"wrote {path}")


COPY_BLOCK = re.compile(r"(<!-- copied from (\S+) -->\n)(.*?)(<!-- end of copy -->)", re.S)


def refresh_readme_copies(readme: Path) -> list[str]:
    """Replace every ``<!-- copied from PATH -->`` block of ``readme`` by PATH's current text.

    PATH is relative to the README's folder. Returns the paths copied; a missing file is an
    error rather than a stale table.
    """
    text = readme.read_text()
    copied = []

    def fill(match: re.Match) -> str:
        source = readme.parent / match.group(2)
        if not source.is_file():
            raise FileNotFoundError(f"{readme} copies {match.group(2)}, which does not exist")
        copied.append(match.group(2))
        return match.group(1) + source.read_text() + match.group(4)

    readme.write_text(COPY_BLOCK.sub(fill, text))
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--root", type=Path, default=Path("results"), help="results folder")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side")
    parser.add_argument("--threads-per-run", type=int, default=1, help="CPU threads of each run")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these of the experiment's seeds")
    parser.add_argument("--methods", nargs="+", help="only these of the experiment's methods")
    parser.add_argument("--report-only", action="store_true", help="skip training")
    parser.add_argument(
        "--readme", type=Path, help="refresh this README's tables copied from results/ files"
    )
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.threads_per_run < 1:
        parser.error(f"--threads-per-run must be at least 1, got {args.threads_per_run}")
    if args.report_only:
        failures = []
    else:
        try:
            failures = run_all(
                args.experiment,
                args.root,
                args.jobs,
                args.seeds,
                args.methods,
                args.threads_per_run,
            )
        except ValueError as error:
            parser.error(str(error))
    report(args.experiment, args.root)
    if args.readme is not None:
        for path in refresh_readme_copies(args.readme):
            print(f"{args.readme}: refreshed the copy of {path}")
    if failures:
        sys.exit(f"failed runs: {', '.join(failures)}")


if __name__ == "__main__":
    main()
