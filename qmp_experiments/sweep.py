"""Run (and resume) a campaign of training runs, locally or on a Ray cluster, then report.

    python -m qmp_experiments.sweep reacher --jobs 2 --readme README.md   # local process pool
    python -m qmp_experiments.sweep reacher --ray-address auto            # the cluster joined
    python -m qmp_experiments.sweep my_grid.toml --ray-address 10.0.0.5:6379
    python -m qmp_experiments.sweep reacher --seeds 1 2 --methods no_sharing_qmp
    python -m qmp_experiments.sweep reacher --report-only --readme README.md

A campaign (``qmp_experiments.campaign``) is a grid of env x method x seed in a TOML file; both
backends read the same file and run the same command per run, so their outputs are identical.
The command is idempotent: a finished run (its ``timing.json``, written last) is skipped, an
interrupted one resumes from its newest checkpoint that loads, and a run folder another process
holds (an OS lock taken by the training script) is reported as busy, never run twice. SIGINT /
SIGTERM end the runs in flight (they resume from their last checkpoint next time).

On Ray each run is one task with ``--threads-per-run`` CPUs (and ``--gpus-per-run`` GPUs); a task
whose worker or node dies is retried and resumes from its newest checkpoint. When the nodes share
the results folder (a shared filesystem at the same path) runs write there directly; otherwise
each node trains in its own scratch folder (``QMP_NODE_RESULTS``, default the system temp dir)
and the finished run folder (checkpoints excluded) comes back through Ray into ``--root``.
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cleanrl_qmp.checkpoints import newest_readable_checkpoint
from cleanrl_qmp.float_profile import PINNED_ENVIRONMENT
from cleanrl_qmp.run_files import (
    EXIT_RUN_FOLDER_BUSY,
    RunFolderBusy,
    RunFolderLock,
    atomic_write_text,
)
from qmp_experiments.campaign import Campaign, Run, load_campaign

PR_SET_PDEATHSIG = 1


def report(message: str) -> None:
    print(message, flush=True)


# -- one run ---------------------------------------------------------------------------------
def is_finished(run_dir: Path, total_timesteps: int, say=report) -> bool:
    """Finished when ``timing.json`` (written after the final evaluation and checkpoint) says
    so; a damaged ``timing.json`` is reported with its path and the run counts as unfinished."""
    timing = run_dir / "timing.json"
    if timing.is_file():
        try:
            return int(json.loads(timing.read_text())["env_steps"]) >= total_timesteps
        except (ValueError, KeyError, TypeError) as error:
            say(f"{timing} is damaged ({type(error).__name__}); the run resumes")
    return False


@dataclass
class Outcome:
    folder: str
    status: str  # "done", "skipped" (already finished), "busy" or "failed"
    minutes: float = 0.0
    detail: str = ""
    archive: bytes | None = None  # the finished run folder, when collected through Ray
    node: str = ""  # the Ray node that ran it


class Children:
    """The training processes this driver started, so a signal can end them all."""

    def __init__(self) -> None:
        self.processes: set[subprocess.Popen] = set()
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def terminate_all(self, grace: float = 10.0) -> None:
        self.stopping.set()
        with self.lock:
            processes = list(self.processes)
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for process in processes:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


CHILDREN = Children()


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the launching process dies (a killed driver or Ray worker
    never leaves a training run behind holding its folder)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def launch(
    command: list[str], log_path: Path, threads: int, pin_float_profile: bool = False
) -> int:
    # A fixed thread count per run: side-by-side runs would otherwise oversubscribe the machine.
    env = {
        "MUJOCO_GL": "egl",  # headless rendering, unless the caller chose a backend
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        # An AVX2 processor's code paths on any x86-64-v3 one (the campaign asked for it).
        **(PINNED_ENVIRONMENT if pin_float_profile else {}),
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(f"\n$ {' '.join(command)}  # on {socket.gethostname()}, launcher {os.getpid()}\n")
        log.flush()
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: a signal ends it and its children
            preexec_fn=_die_with_parent,
        )
        with CHILDREN.lock:
            CHILDREN.processes.add(process)
        try:
            return process.wait()
        finally:
            with CHILDREN.lock:
                CHILDREN.processes.discard(process)


def choose_command(campaign: Campaign, run: Run, run_dir: Path, say=report) -> list[str]:
    """Resume from the newest readable checkpoint (setting truncated ones aside), else start."""
    checkpoint = newest_readable_checkpoint(run_dir / "checkpoints", report=say)
    if checkpoint is not None:
        return campaign.resume_command(run, checkpoint)
    return campaign.fresh_command(run, run_dir)


def execute_run(
    campaign: Campaign,
    run: Run,
    root: Path,
    threads: int = 1,
    wait_for_lock: float = 0.0,
    extra_flags: tuple[str, ...] = (),
    say=report,
) -> Outcome:
    """Train (or resume) one run in ``root / run.folder`` unless it is finished or busy."""
    run_dir = root / run.folder
    if is_finished(run_dir, campaign.total_timesteps, say):
        return Outcome(run.folder, "skipped")
    if CHILDREN.stopping.is_set():
        return Outcome(run.folder, "failed", detail="stopped by a signal")
    # Choose the command while holding the folder's lock, so no other driver changes it
    # meanwhile; the training script takes the lock again for its whole life.
    deadline = time.monotonic() + wait_for_lock
    while True:
        try:
            lock = RunFolderLock(run_dir).acquire()
            break
        except RunFolderBusy as busy:
            if time.monotonic() >= deadline:
                return Outcome(run.folder, "busy", detail=str(busy))
            time.sleep(1.0)
    try:
        command = [*choose_command(campaign, run, run_dir, say), *extra_flags]
    finally:
        lock.release()
    start = time.perf_counter()
    code = launch(command, run_dir / "train.log", threads, campaign.pin_float_profile)
    minutes = (time.perf_counter() - start) / 60
    if code == 0 and is_finished(run_dir, campaign.total_timesteps, say):
        return Outcome(run.folder, "done", minutes)
    if code == EXIT_RUN_FOLDER_BUSY:
        return Outcome(run.folder, "busy", minutes, f"{run_dir} is in use by another process")
    return Outcome(run.folder, "failed", minutes, f"exit {code}, see {run_dir / 'train.log'}")


def print_outcome(outcome: Outcome) -> None:
    text = {"done": "done", "skipped": "already finished", "busy": "BUSY", "failed": "FAILED"}
    detail = f" ({outcome.detail})" if outcome.detail else ""
    node = f" on node {outcome.node}" if outcome.node else ""
    report(f"{outcome.folder}: {text[outcome.status]}{node} in {outcome.minutes:.1f} min{detail}")


# -- backends --------------------------------------------------------------------------------
def run_local(campaign: Campaign, runs: list[Run], root: Path, jobs: int, threads: int) -> list:
    """Every run on this machine, ``jobs`` side by side."""

    def one(run: Run) -> Outcome:
        outcome = execute_run(campaign, run, root, threads)
        print_outcome(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, runs))


def remote_execute(
    campaign: Campaign,
    run: Run,
    root: str,
    marker: str,
    token: str,
    threads: int,
    extra_flags: tuple[str, ...],
) -> Outcome:
    """A Ray task: train one run on whichever node Ray chose."""
    marker_path = Path(marker)
    shared = marker_path.is_file() and marker_path.read_text() == token
    base = (
        Path(root)
        if shared
        else Path(os.environ.get("QMP_NODE_RESULTS", Path(tempfile.gettempdir()) / "qmp_results"))
    )
    # A retried task may find its killed predecessor's training process still dying.
    outcome = execute_run(campaign, run, base, threads, wait_for_lock=60.0, extra_flags=extra_flags)
    if not shared and outcome.status == "done":
        outcome.archive = pack_run_folder(base / run.folder)
    import ray

    outcome.node = ray.get_runtime_context().get_node_id()
    return outcome


def pack_run_folder(run_dir: Path) -> bytes:
    """The run folder as a gzipped tar, without checkpoints (they stay on the node)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(run_dir.rglob("*")):
            relative = path.relative_to(run_dir)
            if path.is_file() and relative.parts[0] != "checkpoints" and path.name != ".lock":
                archive.add(path, arcname=str(relative))
    return buffer.getvalue()


def unpack_run_folder(archive: bytes, run_dir: Path) -> None:
    """Write a collected run folder; ``timing.json`` (the finished marker) lands last."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        members = sorted(tar.getmembers(), key=lambda m: m.name == "timing.json")
        for member in members:
            data = tar.extractfile(member)
            if data is None or Path(member.name).is_absolute() or ".." in Path(member.name).parts:
                continue
            target = run_dir / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data.read())
            tmp.replace(target)


def run_ray(
    campaign: Campaign,
    runs: list[Run],
    root: Path,
    address: str,
    threads: int,
    gpus: float,
    retries: int,
    force_collect: bool = False,
) -> list:
    """Every run as one Ray task on the cluster at ``address``."""
    import ray

    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    # Nodes that see this file with this token share the results folder.
    marker, token = root / ".sweep_marker", uuid.uuid4().hex
    atomic_write_text(marker, "" if force_collect else token)
    extra = ("--cuda",) if gpus > 0 else ()
    task = ray.remote(remote_execute).options(
        num_cpus=threads, num_gpus=gpus, max_retries=retries, retry_exceptions=False
    )
    pending = {
        task.remote(campaign, run, str(root), str(marker), token, threads, extra): run
        for run in runs
    }
    outcomes = []
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except Exception as error:  # the task failed beyond its retries
                outcome = Outcome(run.folder, "failed", detail=f"{type(error).__name__}: {error}")
            if outcome.archive is not None:
                unpack_run_folder(outcome.archive, root / run.folder)
                outcome.archive, outcome.detail = None, "collected through Ray"
            print_outcome(outcome)
            outcomes.append(outcome)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        marker.unlink(missing_ok=True)
        ray.shutdown()
    return outcomes


# -- report ----------------------------------------------------------------------------------
def report_campaign(campaign: Campaign, root: Path) -> None:
    """Aggregate table, per-task table, learning curves and selection outputs of the finished
    runs (a run still in progress would cut every curve of its method to its length)."""
    from qmp_experiments.aggregate import summarize, write_outputs
    from qmp_experiments.plot import plot_runs

    out = root / campaign.name
    started = [root / run.folder for run in campaign.runs()]
    started = [d for d in started if (d / "metrics.csv").is_file()]
    run_dirs = [d for d in started if is_finished(d, campaign.total_timesteps)]
    if len(run_dirs) < len(started):
        report(f"{campaign.name}: {len(started) - len(run_dirs)} unfinished runs left out")
    if not run_dirs:
        report(f"{campaign.name}: no finished runs under {out} yet")
        return
    summary, per_task = summarize(run_dirs)
    written = [*write_outputs(summary, per_task, out / "summary"), *plot_runs(run_dirs, out)]
    written += plot_runs(run_dirs, out, "eval/return_mean", selection=False)
    for path in written:
        report(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    from qmp_experiments.readme import refresh_readme_copies

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("campaign", help="a bundled campaign (reacher, mt10) or a .toml file")
    parser.add_argument("--root", type=Path, default=Path("results"), help="results folder")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side (local pool)")
    parser.add_argument("--threads-per-run", type=int, default=1, help="CPU threads of each run")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these of the campaign's seeds")
    parser.add_argument("--methods", nargs="+", help="only these of the campaign's methods")
    parser.add_argument("--report-only", action="store_true", help="skip training")
    parser.add_argument("--readme", type=Path, help="refresh this README's copied tables")
    ray_group = parser.add_argument_group("Ray")
    ray_group.add_argument(
        "--ray-address", help="run on this Ray cluster (host:port, or auto for the one joined)"
    )
    ray_group.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs of each run")
    ray_group.add_argument(
        "--ray-retries", type=int, default=3, help="retries of a run whose worker or node died"
    )
    ray_group.add_argument(
        "--ray-collect",
        action="store_true",
        help="collect finished run folders through Ray even if the nodes share --root",
    )
    args = parser.parse_args(argv)
    for flag in ("jobs", "threads_per_run"):
        if getattr(args, flag) < 1:
            parser.error(
                f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}"
            )
    if args.gpus_per_run < 0 or args.ray_retries < 0:
        parser.error("--gpus-per-run and --ray-retries must not be negative")
    try:
        campaign = load_campaign(args.campaign)
        runs = campaign.runs(args.seeds, args.methods)
    except ValueError as error:
        parser.error(str(error))

    outcomes: list[Outcome] = []
    if not args.report_only:

        def stop(signum, _frame):
            report(f"{signal.Signals(signum).name}: ending the runs in flight")
            CHILDREN.terminate_all()
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        todo = [r for r in runs if not is_finished(args.root / r.folder, campaign.total_timesteps)]
        where = f"Ray at {args.ray_address}" if args.ray_address else f"{args.jobs} at a time"
        report(f"{campaign.name}: {len(todo)} of {len(runs)} runs to do, {where}")
        if args.ray_address:
            outcomes = run_ray(
                campaign,
                todo,
                args.root,
                args.ray_address,
                args.threads_per_run,
                args.gpus_per_run,
                args.ray_retries,
                args.ray_collect,
            )
        else:
            outcomes = run_local(campaign, todo, args.root, args.jobs, args.threads_per_run)
    report_campaign(campaign, args.root)
    if args.readme is not None:
        for path in refresh_readme_copies(args.readme):
            report(f"{args.readme}: refreshed the copy of {path}")
    unfinished = [o.folder for o in outcomes if o.status in ("failed", "busy")]
    if unfinished:
        sys.exit(f"runs not finished: {', '.join(unfinished)}")


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy: Ray ships functions of __main__ by value
    # (with their globals), but those of an importable module by reference.
    from qmp_experiments import sweep

    sweep.main()
