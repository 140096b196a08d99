"""A Ray cluster of several nodes on this one machine, for tests, benchmarks and rehearsals.

Each node is a ``ray start --block`` process of its own with ``cpus_per_node`` CPUs, so tasks
really run in other processes on another node. Run as root with iproute2 (CI), the cluster
lives in a private network namespace that has only a loopback interface, so every Ray service
binds to 127.0.0.1 (Ray otherwise advertises the machine's outward address even for a local
cluster); commands meant for it run through :attr:`LocalRayCluster.prefix`.

    with LocalRayCluster(nodes=2) as cluster:
        subprocess.run([*cluster.prefix, sys.executable, "-m", "qmp_experiments.sweep",
                        "my.toml", "--ray-address", cluster.address])
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def processes_matching(marker: str) -> list[int]:
    """PIDs of live processes whose command line contains ``marker`` (Linux /proc), except
    this one and results drivers."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z" and "qmp_experiments.sweep" not in cmdline:
            found.append(int(entry.name))
    return found


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    """Poll ``condition`` until it returns something truthy (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRayCluster:
    """``nodes`` Ray nodes on this machine; node k's ``QMP_NODE_RESULTS`` is its own folder."""

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1):
        if nodes < 1 or cpus_per_node < 1:
            raise ValueError(f"need at least one node and one CPU, got {nodes}, {cpus_per_node}")
        self.num_nodes, self.cpus_per_node = nodes, cpus_per_node
        # A short path: Ray's unix sockets live under it (at most 107 bytes).
        self.folder = Path(tempfile.mkdtemp(prefix="qmpray", dir="/tmp"))
        self.node_results = [self.folder / f"node_{k}" for k in range(nodes)]
        self.namespace: str | None = None
        self.prefix: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self.ray = str(Path(sys.executable).with_name("ray"))
        self.address = ""

    def __enter__(self) -> LocalRayCluster:
        try:
            self.start()
        except BaseException:
            self.shutdown()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def start(self) -> None:
        if os.geteuid() == 0 and shutil.which("ip"):
            self.namespace = f"qmp-ray-{os.getpid()}-{self.folder.name}"
            subprocess.run(["ip", "netns", "add", self.namespace], check=True)
            self.prefix = ["ip", "netns", "exec", self.namespace]
            subprocess.run([*self.prefix, "ip", "link", "set", "lo", "up"], check=True)
        port = 6390 if self.namespace else free_port()
        self.address = f"127.0.0.1:{port}"
        common = [
            f"--num-cpus={self.cpus_per_node}",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
            "--block",
        ]
        head = [self.ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                "--include-dashboard=false", f"--temp-dir={self.folder / 'ray'}"]  # fmt: skip
        for k, node_results in enumerate(self.node_results):
            command = head if k == 0 else [self.ray, "start", f"--address={self.address}"]
            env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
            env["QMP_NODE_RESULTS"] = str(node_results)  # each node's own "disk"
            log = (self.folder / f"{node_results.name}.log").open("w")
            self.processes.append(
                subprocess.Popen(
                    [*self.prefix, *command, *common],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )
            wait_for(lambda k=k: self.nodes() == k + 1, 90, f"Ray node {k}", interval=0.5)

    def nodes(self) -> int:
        """Alive nodes, as ``ray status`` reports them."""
        command = [*self.prefix, self.ray, "status", f"--address={self.address}"]
        status = subprocess.run(command, capture_output=True, text=True)
        return len(re.findall(r"^\s*1 node_", status.stdout, re.M))

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
        for pid in processes_matching(str(self.folder)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.namespace:
            subprocess.run(["ip", "netns", "del", self.namespace], check=False)
            self.namespace = None
        shutil.rmtree(self.folder, ignore_errors=True)
