"""Run (and resume) a campaign of training runs, locally or on a Ray cluster, then report.

    python -m qmp_experiments.sweep reacher --jobs 2                      # local process pool
    python -m qmp_experiments.sweep reacher --ray-address auto            # the cluster joined
    python -m qmp_experiments.sweep my_grid.toml --ray-address 10.0.0.5:6379
    python -m qmp_experiments.sweep reacher --seeds 1 2 --methods no_sharing_qmp
    python -m qmp_experiments.sweep reacher --report-only   # tables, plots, results/INDEX.md

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
import logging
import os
import re
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

from qmp_experiments.campaign import SCRIPTS_DIR, Campaign, Run, load_campaign
from qmp_experiments.progress import campaign_progress, progress_table
from qmp_experiments.results_index import write_results_index
from qmp_harness.checkpoints import newest_readable_checkpoint
from qmp_harness.float_profile import PINNED_ENVIRONMENT
from qmp_harness.run_files import (
    EXIT_RUN_FOLDER_BUSY,
    EXIT_WRITE_FAILED,
    RunFolderBusy,
    RunFolderLock,
    atomic_write_text,
    entries_not_files,
    files_of_a_run,
    finished_steps,
    folder_creation_problem,
    is_finished,
)

PR_SET_PDEATHSIG = 1


def report(message: str) -> None:
    print(message, flush=True)


# -- one run ---------------------------------------------------------------------------------
class RunNotStartable(Exception):
    """A run folder the driver cannot continue nor start without losing something; the
    message says why and what to do."""


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
    """Resume from the newest readable checkpoint (setting truncated ones aside), else start;
    a run killed before its first checkpoint starts over, its partial files moved aside."""
    problems = entries_not_files(run_dir)
    if problems:
        raise RunNotStartable(f"{'; '.join(problems)}: move it away")
    checkpoint = newest_readable_checkpoint(run_dir / "checkpoints", report=say)
    if checkpoint is not None:
        return campaign.resume_command(run, checkpoint, run_dir)
    command = campaign.fresh_command(run, run_dir)
    if not files_of_a_run(run_dir):
        return command
    steps = finished_steps(run_dir, say=lambda _: None)
    if steps is not None:
        raise RunNotStartable(
            f"{run_dir} finished at {steps} env steps and has no checkpoint to extend it to "
            f"{campaign.total_timesteps}: restore its checkpoints, or move it away to start over"
        )
    say(f"{run_dir}: no checkpoint to resume from; starting over (--overwrite moves its files "
        "aside)")  # fmt: skip
    return [*command, "--overwrite"]


def script_refusal(log_path: Path) -> str:
    """The error lines the training script printed last in ``log_path`` (its refusal)."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return ""
    last_run = text.rsplit("\n$ ", 1)[-1].splitlines()
    start = next((i for i, line in enumerate(last_run) if line.startswith("error:")), None)
    if start is None:
        return ""
    return " ".join(line.strip() for line in last_run[start : start + 8])


def run_folder(root: Path, run: Run) -> Path:
    """``root / run.folder``, refused if it would lie outside ``root``."""
    folder = Path(os.path.normpath(root / run.folder))
    if not folder.is_relative_to(Path(os.path.normpath(root))):
        raise RunNotStartable(f"run folder {run.folder!r} lies outside the results root {root}")
    return folder


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
    try:
        run_dir = run_folder(root, run)
    except RunNotStartable as error:
        return Outcome(run.folder, "failed", detail=str(error))
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
    except RunNotStartable as error:
        return Outcome(run.folder, "failed", detail=str(error))
    finally:
        lock.release()
    start = time.perf_counter()
    log = run_dir / "train.log"
    code = launch(command, log, threads, campaign.pin_float_profile)
    minutes = (time.perf_counter() - start) / 60
    if code == 0 and is_finished(run_dir, campaign.total_timesteps, say):
        return Outcome(run.folder, "done", minutes)
    if code == EXIT_RUN_FOLDER_BUSY:
        return Outcome(run.folder, "busy", minutes, f"{run_dir} is in use by another process")
    refusal = script_refusal(log)
    if code == 2 and "--resume" in command and refusal:
        refusal += (
            " (the run's checkpoint is another run's, or the campaign's flags changed since it "
            "started: restore them to finish it, or move the run folder away to start over)"
        )
    elif code == EXIT_WRITE_FAILED and refusal:
        refusal += " (its previous checkpoint is kept: free space, then run the campaign again)"
    detail = f"exit {code}: {refusal}" if refusal else f"exit {code}, see {log}"
    return Outcome(run.folder, "failed", minutes, detail)


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
    """The run folder as a gzipped tar of its regular files, without checkpoints (they stay on
    the node) and without symbolic links (a link would point into the node's filesystem)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(run_dir.rglob("*")):
            relative = path.relative_to(run_dir)
            if path.is_symlink() or not path.is_file():
                continue
            if relative.parts[0] != "checkpoints" and path.name != ".lock":
                archive.add(path, arcname=str(relative))
    return buffer.getvalue()


class UnsafeArchiveError(ValueError):
    """A collected run folder's archive holds a member that is not a plain file inside it."""


def archive_problem(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` may not be written into a run folder (None: a plain relative file)."""
    name = Path(member.name)
    if name.is_absolute() or ".." in name.parts or not name.parts:
        return "a path outside the run folder"
    if member.issym() or member.islnk():
        return f"a {'symbolic' if member.issym() else 'hard'} link to {member.linkname!r}"
    if not member.isfile():
        return "not a regular file"
    return None


def unpack_run_folder(archive: bytes, run_dir: Path) -> None:
    """Write a collected run folder; ``timing.json`` (the finished marker) lands last. An
    archive with a member that is not a plain file inside the folder (a link, an absolute or
    ``..`` path, a device) is refused whole, naming the member, before anything is written."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if not m.isdir()]
        for member in members:
            problem = archive_problem(member)
            if problem is not None:
                raise UnsafeArchiveError(
                    f"the archive collected for {run_dir} holds {member.name!r}, {problem}: "
                    "refused, nothing of it was written"
                )
        run_dir.mkdir(parents=True, exist_ok=True)
        for member in sorted(members, key=lambda m: m.name == "timing.json"):
            data = tar.extractfile(member)
            assert data is not None  # a regular file, checked above
            target = run_dir / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data.read())
            tmp.replace(target)


RAY_CONNECT_SECONDS = 60.0
START_A_CLUSTER = (
    "start one with `ray start --head --port=6379` (then pass --ray-address <that host>:6379), "
    "or leave --ray-address out to run on this machine's process pool"
)


def ray_auto_address() -> str | None:
    """The address Ray's ``auto`` would connect to (RAY_ADDRESS, the last ``ray start`` of
    this machine, a running cluster's GCS), or None when there is none."""
    try:
        from ray._private.services import get_ray_address_from_environment

        return get_ray_address_from_environment("auto", None)
    except Exception:  # noqa: BLE001 - ConnectionError when none; any other failure: none either
        return None


def ray_address_problem(address: str, timeout: float = RAY_CONNECT_SECONDS) -> str | None:
    """Why no Ray cluster answers at ``address`` (``host:port``, ``ray://host:port`` or
    ``auto``), found within ``timeout`` seconds by a TCP connection to its head; None when
    something listens there (ray.init then connects)."""
    tried = address
    if address == "auto":
        found = ray_auto_address()
        if found is None:
            return (
                "--ray-address auto: no running Ray cluster was found on this machine (nor in "
                f"RAY_ADDRESS); {START_A_CLUSTER}"
            )
        tried, address = f"auto ({found})", found
    match = re.fullmatch(r"(?:ray://)?\[?([A-Za-z0-9_.:-]+?)\]?:(\d{1,5})", address)
    if match is None or not 0 < int(match.group(2)) < 65536:
        return (
            f"--ray-address {tried!r} is not host:port (e.g. 10.0.0.5:6379) nor auto; "
            f"{START_A_CLUSTER}"
        )
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as error:
        reason = "no answer" if isinstance(error, TimeoutError) else error.strerror or error
        return (
            f"--ray-address {tried}: no Ray cluster at {host}:{port} ({reason} within "
            f"{timeout:g} s); {START_A_CLUSTER}"
        )


def connect_to_ray(address: str, timeout: float) -> None:
    """``ray.init(address)`` within ``timeout`` seconds, else one line naming the address and
    how to start a cluster, and exit 2 (Ray itself would wait forever on a port that accepts
    connections but is not a Ray head)."""
    import ray

    def give_up(why: str) -> None:
        print(f"error: --ray-address {address}: {why}; {START_A_CLUSTER}", file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(2)  # a Ray client stuck connecting holds threads that would block exit

    # A watchdog, so ray.init runs in the main thread as Ray expects.
    watchdog = threading.Timer(timeout, give_up, [f"no Ray cluster answered within {timeout:g} s"])
    watchdog.daemon = True
    watchdog.start()
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except Exception as error:  # noqa: BLE001 - Ray raises many kinds; one line says which
        watchdog.cancel()
        give_up(f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}")
    watchdog.cancel()


def run_ray(
    campaign: Campaign,
    runs: list[Run],
    root: Path,
    address: str,
    threads: int,
    gpus: float,
    retries: int,
    force_collect: bool = False,
    connect_timeout: float = RAY_CONNECT_SECONDS,
) -> list:
    """Every run as one Ray task on the cluster at ``address``."""
    import ray

    connect_to_ray(address, connect_timeout)
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
                try:
                    unpack_run_folder(outcome.archive, run_folder(root, run))
                    outcome.detail = "collected through Ray"
                except (UnsafeArchiveError, RunNotStartable, tarfile.TarError) as error:
                    outcome.status, outcome.detail = "failed", str(error)
                outcome.archive = None
            print_outcome(outcome)
            outcomes.append(outcome)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        marker.unlink(missing_ok=True)
        ray.shutdown()
    return outcomes


# -- report ----------------------------------------------------------------------------------
# The metrics a campaign's report plots (the first also goes into its tables).
REPORTED_METRICS = ("eval/success_mean", "eval/return_mean")


def report_campaign(campaign: Campaign, root: Path) -> None:
    """Aggregate table, per-task table, learning curves and selection outputs of the finished
    runs (a run still in progress would cut every curve of its method to its length). A run
    whose files are damaged is named, with the file, and left out."""
    from qmp_experiments.aggregate import summarize, task_columns, write_outputs
    from qmp_experiments.plot import plot_runs
    from qmp_harness.run_plots import RunDataError, load_run

    out = root / campaign.name
    run_dirs, unfinished, evaluations = [], 0, []
    for run in campaign.runs():
        run_dir = root / run.folder
        if not files_of_a_run(run_dir):
            continue  # not started
        if not is_finished(run_dir, campaign.total_timesteps):
            unfinished += 1
            continue
        try:  # every file the report reads, checked before any table or plot is written
            for metric in REPORTED_METRICS:
                load_run(run_dir, metric)
            evaluated = len(task_columns(run_dir)[1])
        except RunDataError as error:
            report(f"{campaign.name}: left out {run.folder}: {error}")
            continue
        if not evaluated:
            report(f"{campaign.name}: left out {run.folder}: its metrics.csv has no evaluation")
            continue
        run_dirs.append(run_dir)
        evaluations.append(evaluated)
    if unfinished:
        report(f"{campaign.name}: {unfinished} unfinished runs left out")
    if not run_dirs:
        report(f"{campaign.name}: no finished runs under {out} yet")
        return
    # The last 3 evaluations, or all of a short campaign's (the tables' column names say how
    # many were averaged).
    summary, per_task = summarize(run_dirs, last=min(3, *evaluations))
    written = [*write_outputs(summary, per_task, out / "summary"), *plot_runs(run_dirs, out)]
    written += plot_runs(run_dirs, out, REPORTED_METRICS[1], selection=False)
    for path in written:
        report(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("campaign", help="a bundled campaign (reacher, mt10) or a .toml file")
    parser.add_argument("--root", type=Path, default=Path("results"), help="results folder")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side (local pool)")
    parser.add_argument("--threads-per-run", type=int, default=1, help="CPU threads of each run")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these of the campaign's seeds")
    parser.add_argument("--methods", nargs="+", help="only these of the campaign's methods")
    parser.add_argument("--report-only", action="store_true", help="skip training")
    parser.add_argument(
        "--status",
        action="store_true",
        help="print where each run stands (state, step, last success, time left) and exit",
    )
    ray_group = parser.add_argument_group("Ray")
    ray_group.add_argument(
        "--ray-address", help="run on this Ray cluster (host:port, or auto for the one joined)"
    )
    ray_group.add_argument(
        "--ray-connect-timeout",
        type=float,
        default=RAY_CONNECT_SECONDS,
        help="seconds to wait for the cluster before giving up",
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
    if not args.ray_connect_timeout > 0:
        parser.error(f"--ray-connect-timeout must be > 0, got {args.ray_connect_timeout}")
    try:
        campaign = load_campaign(args.campaign)
        runs = campaign.runs(args.seeds, args.methods)
    except ValueError as error:
        parser.error(str(error))
    if args.status:  # reads the run folders, writes nothing: safe beside a running driver
        print(
            progress_table(
                campaign, campaign_progress(campaign, args.root, args.seeds, args.methods)
            )
        )
        return
    problem = folder_creation_problem(args.root)  # before a run starts or a report is written
    if problem is not None:
        parser.error(f"--root {args.root}: {problem}; give a results folder you can write")

    if args.ray_address and not args.report_only:
        problem = ray_address_problem(args.ray_address, min(args.ray_connect_timeout, 10.0))
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            raise SystemExit(2)

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
        # A campaign file runs the scripts it names: say so for any outside cleanrl_qmp/, so a
        # campaign file from elsewhere cannot run a script of its own unannounced.
        outside = {r.script.resolve() for r in todo} - set(SCRIPTS_DIR.glob("*.py"))
        for script in sorted(outside):
            report(f"{campaign.name}: runs a script outside cleanrl_qmp/: {script}")
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
                args.ray_connect_timeout,
            )
        else:
            outcomes = run_local(campaign, todo, args.root, args.jobs, args.threads_per_run)
    report_campaign(campaign, args.root)
    report(f"wrote {write_results_index(args.root, campaign)}")
    unfinished = [o.folder for o in outcomes if o.status in ("failed", "busy")]
    if unfinished:
        sys.exit(f"runs not finished: {', '.join(unfinished)}")


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy: Ray ships functions of __main__ by value
    # (with their globals), but those of an importable module by reference.
    from qmp_experiments import sweep

    sweep.main()
