"""Meta-World MT50 end to end with QMP: build, train, the 50-episode evaluation, checkpoint, resume.

One ``sac_qmp.py --qmp`` run of ``--total-timesteps`` (default 20k, 400 steps per task) on
``qmp/MetaWorldMT50-v0`` with checkpoints every half of it and one evaluation at the end (each
task's own policy, 50 episodes per task: one per goal of the evaluation split, the v3 protocol).
Then a copy of the run folder is resumed from the half-way checkpoint and run to the end, and
its final evaluation row is compared with the uninterrupted run's (they must be equal: resume
reproduces a run exactly). Prints how long each part took; the run folders stay in --root.

    python benchmarks/mt50_pipeline.py --root /tmp/mt50_pipeline [--total-timesteps 20000]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from qmp_harness.cli_types import at_least

ENV_ID = "qmp/MetaWorldMT50-v0"
SCRIPT = Path(__file__).resolve().parents[1] / "cleanrl_qmp" / "sac_qmp.py"

BUILD = """
import time, gymnasium as gym, qmp_envs
start = time.perf_counter()
envs = gym.make_vec({env_id!r})
envs.reset(seed=0)
print(time.perf_counter() - start)
"""

LOAD = """
import time
from qmp_harness.checkpoints import load_checkpoint
start = time.perf_counter()
load_checkpoint({path!r})
print(time.perf_counter() - start)
"""


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(command)}\n{out.stderr[-3000:]}")
    return time.perf_counter() - start, out.stdout


def final_eval_row(run_dir: Path) -> dict:
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("eval/success_mean")]
    if not rows:
        raise SystemExit(f"{run_dir / 'metrics.csv'}: no evaluation row")
    return {key: value for key, value in rows[-1].items() if key != "time"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="folder for the two run folders")
    parser.add_argument("--total-timesteps", type=int, default=20_000)
    parser.add_argument("--seed", type=at_least(0), default=1)
    args = parser.parse_args()
    if args.total_timesteps < 100 or args.total_timesteps % 100:
        parser.error(f"--total-timesteps must be a multiple of 100, got {args.total_timesteps}")
    half = args.total_timesteps // 2
    run_dir, resumed_dir = args.root / "uninterrupted", args.root / "resumed"
    for folder in (run_dir, resumed_dir):
        if folder.exists():
            parser.error(f"{folder} exists: pass a fresh --root")
    args.root.mkdir(parents=True, exist_ok=True)
    threads = os.environ.get("OMP_NUM_THREADS", "unset")

    build_s, out = timed([sys.executable, "-c", BUILD.format(env_id=ENV_ID)])
    build_inner = float(out.strip().splitlines()[-1])
    train = [sys.executable, str(SCRIPT), "--env-id", ENV_ID, "--qmp", "--seed", str(args.seed)]
    train += ["--total-timesteps", str(args.total_timesteps), "--checkpoint-every", str(half)]
    train += ["--keep-checkpoints", "0", "--eval-every", str(args.total_timesteps)]
    run_s, _ = timed([*train, "--run-dir", str(run_dir), "--no-progress"])
    timing = json.loads((run_dir / "timing.json").read_text())
    eval_s = timing["last_eval_seconds"]

    final = run_dir / "checkpoints" / f"step_{args.total_timesteps}.pt"
    middle = run_dir / "checkpoints" / f"step_{half}.pt"
    load_s, out = timed([sys.executable, "-c", LOAD.format(path=str(final))])
    load_inner = float(out.strip().splitlines()[-1])

    # The copy holds what a run killed just after its half-way checkpoint would have left.
    shutil.copytree(run_dir, resumed_dir, ignore=shutil.ignore_patterns(".lock"))
    (resumed_dir / "timing.json").unlink()
    (resumed_dir / "checkpoints" / final.name).unlink()
    resume_s, _ = timed(
        [sys.executable, str(SCRIPT), "--resume", str(resumed_dir / "checkpoints" / middle.name)]
        + ["--no-progress"]
    )
    same = final_eval_row(run_dir) == final_eval_row(resumed_dir)

    success = float(final_eval_row(run_dir)["eval/success_mean"])
    print(f"{ENV_ID}, sac_qmp.py --qmp, {args.total_timesteps} steps, OMP_NUM_THREADS={threads}")
    print(f"{'part':<58} {'seconds':>8}")
    print(f"{'build (make_vec + first reset, fresh process)':<58} {build_inner:8.1f}")
    print(f"{'  the same with interpreter start and imports':<58} {build_s:8.1f}")
    print(f"{'training run, end to end (process wall time)':<58} {run_s:8.1f}")
    print(f"{'  of which the final evaluation, 50 episodes x 50 tasks':<58} {eval_s:8.1f}")
    sps = timing["sps_after_learning_starts"]
    print(f"{'  training env steps/s after learning starts (no eval)':<58} {sps:8.1f}")
    size_mb = final.stat().st_size / 2**20
    print(f"{f'checkpoint at {args.total_timesteps} steps: size (MiB)':<58} {size_mb:8.1f}")
    print(f"{'  load (fresh process, load only)':<58} {load_inner:8.1f}")
    print(f"{f'resume from step {half} to the end (process wall time)':<58} {resume_s:8.1f}")
    print(f"final evaluation success: {success:.3f}; resumed run's final row identical: {same}")
    if not same:
        raise SystemExit("the resumed run's final evaluation differs from the uninterrupted run's")


if __name__ == "__main__":
    main()
