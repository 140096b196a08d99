"""A tiny campaign (2 methods x 2 seeds of a few hundred steps) shared by the sweep tests."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from qmp_studies.local_cluster import processes_matching as training_processes  # noqa: F401
from qmp_studies.local_cluster import wait_for  # noqa: F401

TINY_CAMPAIGN = """
env_ids = ["qmp/MultistageReacher-v0"]
total_timesteps = {total}
seeds = [1, 2]
checkpoint_every = {every}
flags = ["--learning-starts", "100", "--batch-size", "16", "--hidden", "32", "32",
         "--eval-every", "{every}", "--eval-episodes", "1", "--log-every", "100"]

[[methods]]
name = "with_qmp"
script = "sac_qmp.py"
flags = ["--qmp"]

[[methods]]
name = "without_qmp"
script = "sac_qmp.py"
flags = ["--no-qmp"]
"""


def write_campaign(folder: Path, total: int = 600, every: int = 300, name: str = "tiny") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(TINY_CAMPAIGN.format(total=total, every=every))
    return path


def sweep_command(campaign: Path, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "qmp_experiments.sweep", str(campaign), "--root", str(root), *extra
    ]  # fmt: skip


def run_sweep(campaign: Path, root: Path, *extra: str, timeout: float = 600):
    command = sweep_command(campaign, root, *extra)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def metrics_rows(run_dir: Path) -> list[dict]:
    """metrics.csv without the wall-clock column."""
    with (Path(run_dir) / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.fixture(scope="session")
def reference_campaign(tmp_path_factory):
    """The tiny campaign run once, uninterrupted, on the local backend: the outputs every
    other backend and every interrupted run must reproduce."""
    folder = tmp_path_factory.mktemp("reference")
    campaign = write_campaign(folder)
    done = run_sweep(campaign, folder / "results", "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    return campaign, folder / "results"
