"""Construction time and peak memory of the Meta-World suites, each in a fresh process.

Compares ``gym.make_vec("qmp/MetaWorldMT10-v0" / "qmp/MetaWorldMT50-v0")`` (lazy per-task
construction, per-task goal sampling) with Meta-World's own ``gym.make_vec("Meta-World/MT10")``,
and a single pinned MT50 task. Time includes the first reset.

    python benchmarks/metaworld_build.py
"""

from __future__ import annotations

import json
import subprocess
import sys

CASES = {
    "qmp/MetaWorldMT10-v0 (make_vec)": "gym.make_vec('qmp/MetaWorldMT10-v0', seed=0)",
    "Meta-World/MT10 (make_vec)": "gym.make_vec('Meta-World/MT10', seed=0, use_one_hot=True)",
    "qmp/MetaWorldMT50-v0 (make_vec)": "gym.make_vec('qmp/MetaWorldMT50-v0', seed=0)",
    "Meta-World/MT50 (make_vec)": "gym.make_vec('Meta-World/MT50', seed=0, use_one_hot=True)",
    "qmp/MetaWorldMT50-v0 task=31 (make)": "gym.make('qmp/MetaWorldMT50-v0', task=31, seed=0)",
}

PROGRAM = """
import json, resource, time
import gymnasium as gym, metaworld, qmp_envs
start = time.perf_counter()
env = {expr}
env.reset(seed=0)
elapsed = time.perf_counter() - start
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": elapsed, "peak_rss_mb": peak_mb}}))
"""


def main() -> None:
    print(f"{'construction':<40} {'seconds':>8} {'peak RSS MB':>12}")
    for label, expr in CASES.items():
        out = subprocess.run(
            [sys.executable, "-c", PROGRAM.format(expr=expr)], capture_output=True, text=True
        )
        if out.returncode != 0:
            print(f"{label:<40} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{label:<40} {result['seconds']:>8.1f} {result['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    main()
