"""Campaign overhead of the Ray backend against the local process pool, side by side.

The same tiny campaign (2 methods x 2 seeds of Multistage Reacher, small networks) runs through
``python -m qmp_experiments.sweep`` on the local pool (``--jobs 2``) and on a local Ray cluster
of two 1-CPU nodes (same parallelism), alternating, ``--repeats`` times each, each time into a
fresh results folder. The cluster is started once beforehand (starting a cluster is the
cluster's cost, not the campaign's). Prints each wall time, the medians and their ratio.

    python benchmarks/sweep_overhead.py [--steps 3000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qmp_harness.cli_types import at_least
from qmp_studies.local_cluster import LocalRayCluster

CAMPAIGN = """
env_ids = ["qmp/MultistageReacher-v0"]
total_timesteps = {steps}
seeds = [1, 2]
checkpoint_every = {every}
flags = ["--learning-starts", "500", "--batch-size", "32", "--hidden", "64", "64",
         "--eval-every", "{every}", "--eval-episodes", "1"]

[[methods]]
name = "with_qmp"
script = "sac_qmp.py"
flags = ["--qmp"]

[[methods]]
name = "without_qmp"
script = "sac_qmp.py"
flags = ["--no-qmp"]
"""


def timed_sweep(prefix: list[str], campaign: Path, root: Path, *extra: str) -> float:
    command = [*prefix, sys.executable, "-m", "qmp_experiments.sweep", str(campaign)]
    start = time.perf_counter()
    done = subprocess.run([*command, "--root", str(root), *extra], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=at_least(1), default=3000, help="env steps of each run")
    parser.add_argument("--repeats", type=at_least(1), default=2)
    args = parser.parse_args()
    # A SIGTERM unwinds through the cluster's context manager, which stops the cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    folder = Path(tempfile.mkdtemp(prefix="sweep_bench_"))
    campaign = folder / "tiny.toml"
    campaign.write_text(CAMPAIGN.format(steps=args.steps, every=args.steps // 2))
    times: dict[str, list[float]] = {"local pool (--jobs 2)": [], "Ray, 2 nodes x 1 CPU": []}
    with LocalRayCluster(nodes=2, cpus_per_node=1) as cluster:
        for k in range(args.repeats):
            local = timed_sweep(cluster.prefix, campaign, folder / f"local_{k}", "--jobs", "2")
            ray = timed_sweep(
                cluster.prefix, campaign, folder / f"ray_{k}", "--ray-address", cluster.address
            )
            times["local pool (--jobs 2)"].append(local)
            times["Ray, 2 nodes x 1 CPU"].append(ray)
            print(f"repeat {k + 1}: local {local:.1f} s, Ray {ray:.1f} s", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"\ncampaign: 2 methods x 2 seeds x {args.steps} env steps, {args.repeats} repeats")
    print("| backend | median wall time s |")
    print("|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {value:.1f} |")
    ratio = medians["Ray, 2 nodes x 1 CPU"] / medians["local pool (--jobs 2)"]
    print(f"\nRay / local wall-time ratio: {ratio:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
