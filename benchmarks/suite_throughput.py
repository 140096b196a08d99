"""What the paper's campaigns cost: training throughput of one run per suite, and CPU-hours.

For each suite, ``sac_qmp.py`` (QMP on, the suite's paper preset: batch, updates per step,
network size) runs on ONE CPU thread, as the results driver runs it, for a short budget after a
short warm-up; its ``timing.json`` gives env steps/s after learning starts (evaluation
excluded). The table adds the paper's budget and the CPU-hours of 5 seeds of one method at that
rate (a method pair, e.g. "X" and "X + QMP", doubles it).

    python benchmarks/suite_throughput.py [--env-ids qmp/MultistageReacher-v0 ...]
    python benchmarks/suite_throughput.py --script mtsac_qmp.py --env-ids qmp/MazeLarge10-v0

``--script`` times another script of ``cleanrl_qmp`` (``mtsac_qmp.py``: Parameter-Sharing) the
same way; ``--steps`` overrides the timed env steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from qmp_envs.suites import suite_facts
from qmp_harness.cli_types import at_least
from qmp_harness.config import PRESETS

SCRIPTS = Path(__file__).resolve().parent.parent / "cleanrl_qmp"
# Timed env steps (over all tasks) per suite: a few hundred gradient steps at its update ratio.
TIMED_STEPS = {
    "qmp/MultistageReacher-v0": 3_000,
    "qmp/MazeLarge10-v0": 12_000,
    "qmp/Walker2dMT4-v0": 2_000,
    "qmp/MetaWorldCDS-v0": 4_000,
    "qmp/MetaWorldMT10-v0": 4_000,
    "qmp/MetaWorldMT50-v0": 5_000,
    "qmp/KitchenMTEasy-v0": 2_000,
}
# The paper's budgets (spec 10.2 / 10.3: the plotted horizon where it differs from the code's).
PAPER_STEPS = {
    "qmp/MultistageReacher-v0": 2_000_000,
    "qmp/MazeLarge10-v0": 12_000_000,
    "qmp/Walker2dMT4-v0": 8_000_000,
    "qmp/MetaWorldCDS-v0": 10_000_000,
    "qmp/MetaWorldMT10-v0": 50_000_000,
    "qmp/MetaWorldMT50-v0": 30_000_000,
    "qmp/KitchenMTEasy-v0": 5_000_000,
}


def measure(
    env_id: str, warmup: int, steps: int, folder: Path, script: str = "sac_qmp.py"
) -> float:
    run_dir = folder / env_id.replace("/", "_")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [
        sys.executable, str(SCRIPTS / script),
        "--env-id", env_id,
        "--qmp",
        "--learning-starts", str(warmup),
        "--total-timesteps", str(warmup + steps),
        "--eval-every", str(10**12),
        "--eval-episodes", "1",
        "--run-dir", str(run_dir),
        "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{env_id} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads((run_dir / "timing.json").read_text())["sps_after_learning_starts"]


def schedule(script: str, env_id: str) -> tuple[str, str]:
    """The script's update schedule per vector step (one env step of every task), spec 10.1.

    The per-task scripts make ``updates_per_step`` updates per vector step, each on ``batch``
    rows of every task; Parameter-Sharing (``mtsac_qmp.py``) makes N times as many, each on ONE
    minibatch of ``batch`` rows mixed across tasks (``TrainingRun.update_scale``).
    """
    preset = PRESETS[env_id]
    if script == "mtsac_qmp.py":
        tasks = suite_facts(env_id).num_tasks
        return f"{preset.updates_per_step * tasks:.3g}", f"{preset.batch_size} mixed"
    return f"{preset.updates_per_step:.3g}", f"{preset.batch_size} per task"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-ids", nargs="+", default=list(TIMED_STEPS))
    parser.add_argument(
        "--warmup", type=at_least(1), default=2_000, help="env steps before updates"
    )
    parser.add_argument("--seeds", type=at_least(1), default=5)
    parser.add_argument("--script", default="sac_qmp.py", help="a script of cleanrl_qmp")
    parser.add_argument("--steps", type=at_least(1), help="timed env steps (default: per suite)")
    args = parser.parse_args()
    if not (SCRIPTS / args.script).is_file():
        parser.error(f"--script {args.script!r}: no such script in {SCRIPTS}")
    unknown = [env_id for env_id in args.env_ids if env_id not in TIMED_STEPS]
    if unknown:
        parser.error(f"--env-ids {unknown}: not a paper suite; choose from {list(TIMED_STEPS)}")
    print(f"script: {args.script}")
    folder = Path(tempfile.mkdtemp(prefix="suite_throughput_"))
    print(
        "| env | updates per vector step | rows per update | env steps/s (1 thread) | paper budget "
        f"| hours per run | CPU-hours, {args.seeds} seeds |"
    )
    print("|---|---|---|---|---|---|---|")
    for env_id in args.env_ids:
        updates, rows = schedule(args.script, env_id)
        steps = args.steps or TIMED_STEPS[env_id]
        sps = measure(env_id, args.warmup, steps, folder, args.script)
        hours = PAPER_STEPS[env_id] / sps / 3600
        print(
            f"| `{env_id}` | {updates} | {rows} | {sps:.0f} "
            f"| {PAPER_STEPS[env_id] / 1e6:g}M | {hours:,.0f} | {hours * args.seeds:,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
