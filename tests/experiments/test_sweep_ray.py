"""The Ray backend on a real local cluster: a head and a second node, each a `ray start`
process of its own, so runs execute in other processes on another node (inside a loopback-only
network namespace where the tests run as root: see qmp_studies.local_cluster)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (
    metrics_rows,
    parent_pid,
    run_sweep,
    sweep_command,
    training_processes,
    wait_for,
    write_campaign,
)
from qmp_studies.local_cluster import LocalRayCluster

RUNS = [f"{m}/seed_{s}" for s in (1, 2) for m in ("with_qmp", "without_qmp")]


@pytest.fixture(scope="module")
def ray_cluster():
    with LocalRayCluster(nodes=2) as cluster:
        yield cluster
    assert not training_processes(str(cluster.folder)), "the test cluster was left running"


def ray_sweep(cluster: LocalRayCluster, campaign: Path, root: Path, *extra: str):
    command = [*cluster.prefix, *sweep_command(campaign, root, "--ray-address", cluster.address)]
    return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=600)


def nodes_used(output: str) -> set[str]:
    return set(re.findall(r"on node (\w+)", output))


def test_ray_campaign_equals_the_local_campaign(ray_cluster, reference_campaign, tmp_path):
    campaign, reference = reference_campaign
    root = tmp_path / "results"
    done = ray_sweep(ray_cluster, campaign, root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(nodes_used(done.stdout)) == 2, done.stdout  # both nodes trained runs
    for run in RUNS:
        assert metrics_rows(root / "tiny" / run) == metrics_rows(reference / "tiny" / run)
        assert (root / "tiny" / run / "selection.jsonl").read_text() == (
            reference / "tiny" / run / "selection.jsonl"
        ).read_text()
    again = ray_sweep(ray_cluster, campaign, root)
    assert again.returncode == 0 and "0 of 4 runs to do" in again.stdout


def test_without_a_shared_filesystem_run_folders_come_back_through_ray(
    ray_cluster, reference_campaign, tmp_path
):
    campaign, reference = reference_campaign
    root = tmp_path / "results"
    done = ray_sweep(ray_cluster, campaign, root, "--seeds", "1", "--ray-collect")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("collected through Ray") == 2
    for run in RUNS[:2]:
        assert metrics_rows(root / "tiny" / run) == metrics_rows(reference / "tiny" / run)
        assert json.loads((root / "tiny" / run / "timing.json").read_text())["env_steps"] == 600
        assert not (root / "tiny" / run / "checkpoints").exists()  # checkpoints stay on nodes
    on_nodes = [p for n in ray_cluster.node_results for p in n.glob("tiny/*/seed_1/checkpoints")]
    assert len(on_nodes) == 2


def test_a_killed_worker_is_retried_and_resumes_from_its_checkpoint(ray_cluster, tmp_path):
    campaign = write_campaign(tmp_path, total=2400, every=300)
    local = run_sweep(campaign, tmp_path / "local", "--methods", "with_qmp", "--seeds", "1")
    assert local.returncode == 0, local.stdout + local.stderr
    root = tmp_path / "ray"
    command = [*ray_cluster.prefix, *sweep_command(campaign, root, "--ray-address",
               ray_cluster.address, "--methods", "with_qmp", "--seeds", "1")]  # fmt: skip
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = root / "tiny" / "with_qmp" / "seed_1"
    wait_for(lambda: (run_dir / "checkpoints" / "step_300.pt").exists(), 120, "a checkpoint")
    trainer = wait_for(lambda: training_processes(str(run_dir)), 10, "the training process")[0]
    worker = parent_pid(trainer)
    assert "ray" in Path(f"/proc/{worker}/cmdline").read_bytes().decode(errors="replace").lower()
    os.kill(worker, signal.SIGKILL)
    killed_at = time.monotonic()
    out = driver.communicate(timeout=300)[0]
    assert driver.returncode == 0, out
    assert time.monotonic() - killed_at < 240
    segments = [json.loads(s) for s in (run_dir / "provenance.jsonl").read_text().splitlines()]
    assert len(segments) == 2 and segments[0]["from_step"] == 0 and segments[1]["from_step"] > 0
    reference = tmp_path / "local" / "tiny" / "with_qmp" / "seed_1"
    assert metrics_rows(run_dir) == metrics_rows(reference)
    assert (run_dir / "selection.jsonl").read_text() == (reference / "selection.jsonl").read_text()
