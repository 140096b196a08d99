"""Golden runs: short seeded runs of every training script, compared with recorded outputs.

Restructuring the scripts must not change what a seeded run computes, or the committed results
under ``results/`` would no longer describe the code. Each case runs a script from the command
line (as the results driver does, one torch thread) and compares its ``metrics.csv`` (every
column but wall time) and ``selection.jsonl`` with the files in ``tests/golden/`` byte for byte.

Float results differ across processors, so the comparison runs on the processor that recorded
the files (``tests/golden/cpu.txt``) and is skipped, naming both, on another one. To record
anew, deliberately (say why in the commit):

    QMP_RECORD_GOLDEN=1 python -m pytest tests/test_golden_runs.py
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cleanrl_qmp.run_logging import cpu_model

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
RECORD = os.environ.get("QMP_RECORD_GOLDEN") == "1"

COMMON = [
    "--env-id", "qmp/MultistageReacher-v0",
    "--seed", "3",
    "--total-timesteps", "600",
    "--learning-starts", "200",
    "--batch-size", "16",
    "--hidden", "32", "32",
    "--eval-every", "300",
    "--eval-episodes", "1",
    "--log-every", "100",
    "--no-progress",
]  # fmt: skip

CASES = {
    "sac_qmp": ["sac_qmp.py", "--qmp"],
    "sac_noqmp": ["sac_qmp.py", "--no-qmp"],
    "mtsac_qmp": ["mtsac_qmp.py", "--qmp"],
    "mtsac_fully_shared": ["mtsac_qmp.py", "--no-qmp", "--fully-shared"],
    "uds_qmp": ["uds_qmp.py", "--qmp", "--share-q-quantile", "0.3"],
    "dnc_sac": ["dnc_sac.py", "--qmp", "--distill-every", "300", "--distill-steps", "5"],
}


def metrics_without_wall_time(path: Path) -> str:
    """``metrics.csv`` as text with the ``time`` column removed (it is the wall clock)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = io.StringIO()
    columns = [c for c in rows[0] if c != "time"]
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def run_case(name: str, run_dir: Path) -> dict[str, str]:
    script, *flags = CASES[name]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "cleanrl_qmp" / script), *COMMON, *flags]
    done = subprocess.run(
        [*command, "--run-dir", str(run_dir)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return {
        "metrics.csv": metrics_without_wall_time(run_dir / "metrics.csv"),
        "selection.jsonl": (run_dir / "selection.jsonl").read_text(),
    }


@pytest.mark.parametrize("name", sorted(CASES))
def test_seeded_run_matches_its_recorded_output(name, tmp_path):
    cpu_file = GOLDEN / "cpu.txt"
    recorded_cpu = cpu_file.read_text().strip() if cpu_file.is_file() else ""
    if not RECORD and recorded_cpu != cpu_model():
        pytest.skip(f"golden files were recorded on {recorded_cpu!r}, this is {cpu_model()!r}")
    outputs = run_case(name, tmp_path / name)
    for file_name, text in outputs.items():
        golden = GOLDEN / name / file_name
        if RECORD:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
            (GOLDEN / "cpu.txt").write_text(cpu_model() + "\n")
            continue
        assert golden.is_file(), f"{golden} is missing: record it with QMP_RECORD_GOLDEN=1"
        assert text == golden.read_text(), (
            f"{name}: {file_name} differs from {golden}; the seeded computation changed"
        )


def test_metrics_comparison_ignores_only_wall_time(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("global_step,time,eval/success_mean\n300,17.5,0.25\n600,99.0,0.5\n")
    assert metrics_without_wall_time(path) == "global_step,eval/success_mean\n300,0.25\n600,0.5\n"
