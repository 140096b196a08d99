"""The Ray backend on a real local cluster: a head and a second node, each a `ray start`
process of its own, so runs execute in other processes on another node.

Where the test runs as root with iproute2 (CI), the cluster and the drivers live in a private
network namespace that has only a loopback interface, so every Ray service binds to 127.0.0.1
(Ray otherwise advertises the machine's outward address even for a local cluster).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
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

RUNS = [f"{m}/seed_{s}" for s in (1, 2) for m in ("with_qmp", "without_qmp")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRayCluster:
    """A head node and a second node on this machine; ``prefix`` runs a command inside the
    cluster's network namespace (empty without one)."""

    def __init__(self):
        # A short path: Ray's unix sockets live under it (at most 107 bytes).
        self.folder = Path(tempfile.mkdtemp(prefix="qmpray", dir="/tmp"))
        self.namespace = None
        self.prefix: list[str] = []
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        folder = self.folder
        if os.geteuid() == 0 and shutil.which("ip"):
            self.namespace = f"qmp-ray-{os.getpid()}"
            subprocess.run(["ip", "netns", "add", self.namespace], check=True)
            self.prefix = ["ip", "netns", "exec", self.namespace]
            subprocess.run([*self.prefix, "ip", "link", "set", "lo", "up"], check=True)
        self.port = 6390 if self.namespace else free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.node_results = [folder / "node_a", folder / "node_b"]
        ray = str(Path(os.sys.executable).with_name("ray"))
        common = [
            "--num-cpus=1",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
            "--block",
        ]
        head = [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                "--include-dashboard=false", f"--temp-dir={folder / 'ray'}", *common]  # fmt: skip
        worker = [ray, "start", f"--address={self.address}", *common]
        for command, node_results in zip((head, worker), self.node_results, strict=True):
            env = {
                **os.environ,
                "RAY_USAGE_STATS_ENABLED": "0",
                "QMP_NODE_RESULTS": str(node_results),
            }
            log = (folder / f"{node_results.name}.log").open("w")
            self.processes.append(
                subprocess.Popen(
                    [*self.prefix, *command],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )
            if command is head:
                wait_for(lambda: self.nodes() >= 1, 90, "the Ray head node", interval=1.0)
        wait_for(lambda: self.nodes() == 2, 90, "two Ray nodes", interval=1.0)

    def nodes(self) -> int:
        status = subprocess.run(
            [*self.prefix, str(Path(os.sys.executable).with_name("ray")), "status",
             f"--address={self.address}"],
            capture_output=True,
            text=True,
        )  # fmt: skip
        return len(re.findall(r"^\s*1 node_", status.stdout, re.M))

    def sweep(self, campaign: Path, root: Path, *extra: str):
        command = [*self.prefix, *sweep_command(campaign, root, "--ray-address", self.address)]
        return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=600)

    def shutdown(self) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        for process in self.processes:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Anything of this cluster still alive (its session folder is in every command line).
        for pid in training_processes(str(self.folder)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.namespace:
            subprocess.run(["ip", "netns", "del", self.namespace], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster():
    cluster = LocalRayCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.shutdown()
    assert not training_processes(str(cluster.folder)), "the test cluster was left running"


def nodes_used(output: str) -> set[str]:
    return set(re.findall(r"on node (\w+)", output))


def test_ray_campaign_equals_the_local_campaign(ray_cluster, reference_campaign, tmp_path):
    campaign, reference = reference_campaign
    root = tmp_path / "results"
    done = ray_cluster.sweep(campaign, root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(nodes_used(done.stdout)) == 2, done.stdout  # both nodes trained runs
    for run in RUNS:
        assert metrics_rows(root / "tiny" / run) == metrics_rows(reference / "tiny" / run)
        assert (root / "tiny" / run / "selection.jsonl").read_text() == (
            reference / "tiny" / run / "selection.jsonl"
        ).read_text()
    again = ray_cluster.sweep(campaign, root)
    assert again.returncode == 0 and "0 of 4 runs to do" in again.stdout


def test_without_a_shared_filesystem_run_folders_come_back_through_ray(
    ray_cluster, reference_campaign, tmp_path
):
    campaign, reference = reference_campaign
    root = tmp_path / "results"
    done = ray_cluster.sweep(campaign, root, "--seeds", "1", "--ray-collect")
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
