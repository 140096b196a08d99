"""What pinning the float profile costs: a script's steps/s (``--qmp``) with and without
:data:`qmp_harness.float_profile.PINNED_ENVIRONMENT`, measured side by side in one run.

Each setting runs as its own process (the settings are read when torch, MKL and NumPy load),
one torch thread, alternating ``--repeats`` times so drift on a shared machine hits both alike.
On an AVX2-only processor the pinned code paths are the ones used anyway, so the ratio should
be about 1; on an AVX-512 processor it is what portability costs.

    python benchmarks/float_profile_speed.py [--env-id qmp/MultistageReacher-v0] [--steps 3000]
    python benchmarks/float_profile_speed.py --script mtsac_qmp.py    # Parameter-Sharing, 512x512

The default script is ``sac_qmp.py``; ``--script`` names another of ``cleanrl_qmp``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from qmp_harness.cli_types import at_least, qmp_env_id
from qmp_harness.float_profile import cpu_features, pinned_environment

ROOT = Path(__file__).resolve().parent.parent


def steps_per_second(
    env_id: str, steps: int, learning_starts: int, pinned: bool, out: Path, script: str
) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if pinned:
        env.update(pinned_environment())
    command = [
        sys.executable, str(ROOT / "cleanrl_qmp" / script), "--env-id", env_id, "--qmp",
        "--learning-starts", str(learning_starts),
        "--total-timesteps", str(learning_starts + steps),
        "--eval-every", str(10**9), "--eval-episodes", "1", "--no-progress", "--run-dir", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, env=env)
    return json.loads((out / "timing.json").read_text())["sps_after_learning_starts"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-id", type=qmp_env_id, default="qmp/MultistageReacher-v0")
    parser.add_argument(
        "--steps", type=at_least(1), default=3000, help="env steps after learning starts"
    )
    parser.add_argument("--learning-starts", type=at_least(1), default=1000)
    parser.add_argument("--repeats", type=at_least(1), default=2)
    parser.add_argument("--script", default="sac_qmp.py", help="a script of cleanrl_qmp")
    args = parser.parse_args()
    if not (ROOT / "cleanrl_qmp" / args.script).is_file():
        parser.error(f"--script {args.script}: no such script in cleanrl_qmp/")
    if not pinned_environment():
        print("this processor has no AVX2+FMA: there is no pinned profile to measure")
        return
    print(f"cpu features: {' '.join(cpu_features())}")
    rates: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for pinned in (False, True):
                out = Path(tmp) / f"{'pinned' if pinned else 'native'}_{repeat}"
                rate = steps_per_second(
                    args.env_id, args.steps, args.learning_starts, pinned, out, args.script
                )
                rates[pinned].append(rate)
                print(f"  {'pinned' if pinned else 'native'} repeat {repeat}: {rate:.1f} steps/s")
    native, pinned = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"{args.script} on {args.env_id}: native {native:.1f} steps/s, "
          f"pinned {pinned:.1f} steps/s, pinned/native = {pinned / native:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
