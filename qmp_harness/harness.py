"""The run harness: what every training script needs around its algorithm, and nothing else.

A script builds its envs, wraps them with ``QMPBehaviorWrapper``, builds and attaches its
networks and writes its own act / step / store / update loop. :class:`TrainingRun` keeps the
counters and schedules (env steps, the update ratio, logging, evaluation and checkpoint times),
the logs, the evaluation protocol and checkpoint I/O. Saving and loading are explicit calls:

    run = TrainingRun(args)                       # flags checked, folder locked, seeded
    ...build envs, networks, buffer...
    if run.resuming:
        loaded = run.load({"actor": actor, ..., "rb": rb})   # in place; returns rb, envs, obs
    ...
    while not run.done:
        ...act, step...
        real_next_obs = run.record_step(next_obs, rewards, terminations, truncations, infos)
        for _ in range(run.updates_due()): ...update...
        if run.evaluation_due(): run.evaluate(eval_policy, envs)
        if run.checkpoint_due(): run.save(state())
    run.finish(eval_policy, envs, state())
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from tqdm import tqdm

import qmp_envs
from qmp_envs import helper_policies
from qmp_envs.suites import suite_facts
from qmp_harness.checkpoints import (
    CHECKPOINT_LOAD_ERRORS,
    CheckpointWriteError,
    checkpoint_path,
    is_run_checkpoint,
    load_newest_checkpoint,
    save_checkpoint,
    saved_checkpoints,
    seed_everything,
    set_rng_state,
    warn,
)
from qmp_harness.config import (
    DEMO,
    RESUMABLE_FLAGS,
    BaseArgs,
    flag,
    parse_env_options,
    refuse,
    registered_qmp_ids,
    resolve_preset,
    resumed_configuration,
    script_name,
)
from qmp_harness.run_files import (
    EXIT_RUN_FOLDER_BUSY,
    EXIT_WRITE_FAILED,
    RunFolderBusy,
    RunFolderLock,
    atomic_write_text,
    entries_not_files,
    files_of_a_run,
    folder_creation_problem,
    folder_is_busy,
    move_run_aside,
    remove_stale_temporaries,
    write_failure,
)
from qmp_harness.run_logging import RunLogger, start_wandb
from qmp_harness.tasks import TaskSpec
from qmp_wrappers import MultiTaskReplayBuffer

# The counters a checkpoint carries besides the script's objects.
COUNTERS = (
    "global_step",
    "update_credit",
    "episode_return",
    "episode_length",
    "next_eval",
    "next_checkpoint",
    "last_eval_step",
)


ArgsT = TypeVar("ArgsT", bound=BaseArgs)


def _shapes(state: Any) -> dict[str, tuple[int, ...]] | None:
    if not isinstance(state, dict):
        return None
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def checkpoint_problems(checkpoint: dict, objects: dict[str, Any]) -> list[str]:
    """Everything that keeps ``checkpoint`` from restoring ``objects`` (a script's networks,
    optimisers, tensors and buffer) and the run's state, as readable lines; [] if it fits.

    Checked before anything is loaded, so a checkpoint of another env or script, or one that
    lacks a part, is refused with a message instead of a size-mismatch traceback from torch.
    """
    problems = [
        f"missing part {name!r}"
        for name in [*objects, "envs", "obs", "rng", *COUNTERS]
        if name not in checkpoint
    ]
    for name, obj in objects.items():
        if name not in checkpoint:
            continue
        saved = checkpoint[name]
        if isinstance(obj, torch.nn.Module):
            ours, theirs = _shapes(obj.state_dict()), _shapes(saved)
            if theirs is None:
                problems.append(f"{name}: expected a state dict, found {type(saved).__name__}")
            elif ours != theirs:
                assert ours is not None
                differ = [
                    f"{k}: checkpoint {theirs.get(k)}, this run {ours.get(k)}"
                    for k in sorted(set(ours) | set(theirs))
                    if ours.get(k) != theirs.get(k)
                ]
                problems.append(f"{name} differs in {len(differ)} tensors: {'; '.join(differ[:3])}")
        elif isinstance(obj, torch.optim.Optimizer):
            groups = obj.state_dict()["param_groups"]
            saved_groups = saved.get("param_groups") if isinstance(saved, dict) else None
            if saved_groups is None or [len(g["params"]) for g in groups] != [
                len(g["params"]) for g in saved_groups
            ]:
                problems.append(f"{name}: the optimiser's parameter groups differ")
                continue
            params = [p for group in obj.param_groups for p in group["params"]]
            for index, state in saved.get("state", {}).items():
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and value.ndim > 0:
                        if index >= len(params) or value.shape != params[index].shape:
                            problems.append(f"{name}: state {key} of parameter {index} has "
                                            f"shape {tuple(value.shape)}")  # fmt: skip
                            break
        elif isinstance(obj, torch.Tensor):
            if not isinstance(saved, torch.Tensor) or saved.shape != obj.shape:
                found = tuple(saved.shape) if isinstance(saved, torch.Tensor) else type(saved)
                problems.append(f"{name}: checkpoint {found}, this run {tuple(obj.shape)}")
        else:
            if type(saved) is not type(obj):
                problems.append(
                    f"{name}: checkpoint holds a {type(saved).__name__}, this run a "
                    f"{type(obj).__name__}"
                )
                continue
            for attr in ("obs_shape", "action_dim", "num_tasks"):
                if getattr(saved, attr, None) != getattr(obj, attr, None):
                    problems.append(f"{name}.{attr}: checkpoint {getattr(saved, attr, None)}, "
                                    f"this run {getattr(obj, attr, None)}")  # fmt: skip
    return problems


def _integer(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def counter_problems(checkpoint: dict) -> list[str]:
    """What in ``checkpoint``'s counters disagrees with its own budget and replay buffer (an
    edited or foreign counter would otherwise "finish" a run at once), as readable lines."""
    step = checkpoint.get("global_step")
    if not _integer(step) or step < 0:
        return [f"global_step {step!r}: must be an integer >= 0"]
    problems = []
    saved = checkpoint.get("args")
    budget = saved.get("total_timesteps") if isinstance(saved, dict) else None
    envs = checkpoint.get("envs")
    num_envs = getattr(envs, "num_envs", 1)
    if _integer(budget) and _integer(num_envs) and step >= budget + num_envs:
        problems.append(
            f"global_step {step} is past the run's own budget (--total-timesteps {budget}, "
            f"{num_envs} envs): a run stops within one vector step of it"
        )
    rb = checkpoint.get("rb")
    pos, rows, full = (getattr(rb, name, None) for name in ("pos", "n_envs", "full"))
    capacity = getattr(rb, "buffer_size", None)
    if _integer(pos) and _integer(rows) and _integer(capacity) and isinstance(full, bool):
        if not full and pos * rows != step:
            problems.append(
                f"global_step {step}, but its replay buffer holds {pos} vector steps of {rows} "
                f"envs ({pos * rows} env steps)"
            )
        if full and (step < capacity * rows or (step // rows) % capacity != pos):
            problems.append(
                f"global_step {step} does not match its full replay buffer (capacity "
                f"{capacity} x {rows} envs, next row {pos})"
            )
    last_eval = checkpoint.get("last_eval_step")
    if not _integer(last_eval) or not -1 <= last_eval <= step:
        problems.append(f"last_eval_step {last_eval!r}: must be an integer in [-1, {step}]")
    return problems


# Fields of a run's configuration that a resume may change or that say where it lives: they
# are not compared with the run's args.json.
NOT_COMPARED = RESUMABLE_FLAGS | {"run_dir", "resume", "overwrite"}


def record_conflicts(run_dir: Path, checkpoint: dict) -> list[str]:
    """Where the checkpoint's configuration differs from the run folder's ``args.json`` (what
    the run was started with): a checkpoint of another run (method, seed, env) copied into
    this run's ``checkpoints/``. Fields only one of them records (another version) are not
    compared; a missing or unreadable ``args.json`` is reported as a warning only."""
    record = Path(run_dir) / "args.json"
    saved = checkpoint.get("args")
    if not record.exists() or not isinstance(saved, dict):
        return []
    try:
        started = json.loads(record.read_text())
        if not isinstance(started, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        warn(f"{record} is unreadable ({error}); the checkpoint was not compared with it")
        return []
    saved = json.loads(json.dumps(saved, default=str))  # tuples as lists, as args.json has them
    return [
        f"{flag(name)}: {record} has {started[name]!r}, the checkpoint {saved[name]!r}"
        for name in sorted(set(started) & set(saved) - NOT_COMPARED)
        if started[name] != saved[name]
    ]


def resumed_run_folder(resume: Path) -> Path:
    """The run folder a ``--resume`` target belongs to: the run folder itself, its
    ``checkpoints/`` folder, or one of its ``checkpoints/step_<N>.pt`` files. Anything else is
    refused (exit 2) here, before a lock file is made or a file is renamed, so that a mistyped
    ``--resume`` (a metrics file, a folder of other things) leaves everything as it was."""
    how = (
        "give a run folder (the --run-dir a run wrote) or one of its checkpoints, "
        "<run>/checkpoints/step_<N>.pt"
    )
    if not resume.exists():
        refuse("cannot resume", [f"--resume {resume}: no such checkpoint or run folder"])
    if resume.is_file():
        if not is_run_checkpoint(resume):
            refuse("cannot resume", [f"--resume {resume}: not one of a run's checkpoints; {how}"])
        return resume.resolve().parent.parent
    if not resume.is_dir():
        refuse("cannot resume", [f"--resume {resume}: not a file or a folder; {how}"])
    run_dir = resume.parent if resume.name == "checkpoints" else resume
    if not (run_dir / "checkpoints").is_dir():
        started = (run_dir / "args.json").is_file()
        refuse(
            "cannot resume",
            [f"--resume {resume}: "
             + ("this run has no checkpoints/ folder: it stopped before its first checkpoint, so "
                "there is nothing to resume; start it over with --run-dir "
                f"{run_dir} --overwrite (moves its files aside)" if started
                else f"not a run folder (no checkpoints/ folder in {run_dir}); {how}")],
        )  # fmt: skip
    return run_dir


class TrainingRun(Generic[ArgsT]):
    """Run folder, configuration, seeding, counters, logs, evaluation and checkpoint files."""

    args: ArgsT
    #: Multiplies ``--updates-per-step`` per vector step. 1 for the per-task scripts (each task
    #: network gets that many updates per step of its task); Parameter-Sharing sets N, since
    #: its ONE network gets the paper's updates per env step, and a vector step is N env steps.
    update_scale: float = 1.0

    def __init__(self, args: ArgsT, preset_overrides: dict[str, dict] | None = None):
        self.checkpoint: dict | None = None
        self.lock: RunFolderLock | None = None
        if args.resume:
            args = self._resumed_args(args)
        if args.demo:
            # The demo's values fill the flags left at their defaults; flags given win.
            defaults = type(args)()
            for key, value in DEMO.items():
                if getattr(args, key) == getattr(defaults, key):
                    setattr(args, key, value)
            # The demo is meant to be run again: its own folder's previous run moves aside.
            args.overwrite = args.overwrite or args.run_dir == DEMO["run_dir"]
        if args.env_id not in registered_qmp_ids():
            refuse("unknown environment", [f"--env-id {args.env_id!r}: registered ids are "
                   f"{', '.join(registered_qmp_ids())}"], self.lock)  # fmt: skip
        args = resolve_preset(args, preset_overrides)
        problems = args.problems()
        if problems:
            refuse("invalid configuration", problems, self.lock)
        self.run_dir = Path(args.run_dir or self._default_run_dir(args))
        args.run_dir = str(self.run_dir)
        self.args = args
        if self.checkpoint is None:
            self._check_fresh_folder()
        seed_everything(args.seed, args.torch_deterministic)
        self.device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
        self.env_kwargs = {
            **suite_facts(args.env_id).env_kwargs(args.env_compat),
            **parse_env_options(args.env_id, args.env_options),
        }
        self.eval_envs: qmp_envs.EvaluationEnvs | None = None

        self.global_step, self.update_credit = 0, 0.0
        self.episode_return: np.ndarray | None = None
        self.episode_length: np.ndarray | None = None
        self.next_eval, self.last_eval_step = args.eval_every, -1
        self.next_checkpoint = args.checkpoint_every or None
        if self.checkpoint is not None:
            for name in COUNTERS:
                setattr(self, name, self.checkpoint[name])
        self.last_success = float("nan")
        self.last_eval_seconds: float | None = None
        # Nothing is written before the first log line or checkpoint (a fresh run) or before
        # load() checked the whole checkpoint against the script's objects (a resumed run):
        # whatever the script refuses while building its envs and networks leaves no trace.
        self._logger: RunLogger | None = None
        print(
            f"run folder: {self.run_dir}  (QMP {'on' if args.qmp else 'off'}, "
            f"from step {self.global_step})"
        )
        self.start_time, self.start_step = time.time(), self.global_step
        # (wall clock, step, seconds spent evaluating) when gradient updates began
        self.training_clock: tuple[float, int, float] | None = None
        self.bar = tqdm(
            total=args.total_timesteps,
            initial=self.global_step,
            disable=not args.progress,
            unit="step",
            mininterval=1.0 if sys.stderr.isatty() else 30.0,  # keep CI logs short
        )

    def _open_logs(self) -> None:
        if self.args.track:  # before the TensorBoard writer exists, so wandb can mirror it
            start_wandb(self.run_dir, self.args)
        resume_step = self.global_step if self.checkpoint is not None else None
        self._logger = RunLogger(self.run_dir, self.args, resume_step=resume_step)
        if resume_step is not None:
            self._logger.truncate_selection(resume_step)

    @property
    def logger(self) -> RunLogger:
        if self._logger is None:
            if self.checkpoint is not None:
                raise RuntimeError("a resumed run logs only after load() restored the checkpoint")
            self._start_fresh_folder()
        assert self._logger is not None
        return self._logger

    # -- configuration and the run folder -------------------------------------------------
    @staticmethod
    def _default_run_dir(args: BaseArgs) -> Path:
        """``runs/{env}__{exp_name}__{qmp|noqmp}__{seed}__{time}``, numbered when a run of the
        same second already holds that name."""
        base = (
            f"runs/{args.env_id.replace('/', '_')}__{args.exp_name}__"
            f"{'qmp' if args.qmp else 'noqmp'}__{args.seed}__{int(time.time())}"
        )
        candidate, number = Path(base), 1
        while files_of_a_run(candidate):
            number += 1
            candidate = Path(f"{base}_{number}")
        return candidate

    def _check_fresh_folder(self) -> None:
        """A fresh run never rewrites another run: a folder that holds one (or that another
        process holds) is refused here, before anything is written, unless --overwrite asks to
        move that run aside. A folder whose lock file exists is locked now (creating nothing),
        so no other process starts in it meanwhile; others are locked at the first write."""
        run_dir = self.run_dir
        problem = folder_creation_problem(run_dir)
        if problem:
            refuse(f"cannot write the run folder {run_dir}", [
                f"--run-dir {run_dir}: {problem}; give a --run-dir in a folder you can write"
            ])  # fmt: skip
        if folder_is_busy(run_dir):
            print(f"error: run folder {run_dir} is in use by another process", file=sys.stderr)
            raise SystemExit(EXIT_RUN_FOLDER_BUSY)
        found = files_of_a_run(run_dir)
        if found and not self.args.overwrite:
            refuse(
                f"run folder {run_dir} already holds a run "
                f"({', '.join(p.name for p in found[:4])}{', ...' if len(found) > 4 else ''})",
                [
                    f"to continue it: --resume {run_dir}",
                    "to start over: another --run-dir, or --overwrite (moves the old run aside "
                    f"to {run_dir.name}.replaced-<time>, deleting nothing)",
                ],
            )
        if (run_dir / RunFolderLock.FILE_NAME).is_file():
            self._lock_run_folder(run_dir)

    def _start_fresh_folder(self) -> None:
        """The first write of a fresh run: lock the folder, move a previous run aside if
        --overwrite asked to (one that appeared since the start means another process
        started there: this one stops as busy), then open the logs."""
        run_dir = self.run_dir
        if self.lock is None:
            self._lock_run_folder(run_dir)
        found = files_of_a_run(run_dir)
        if found and self.args.overwrite:
            print(f"--overwrite: moved the previous run of {run_dir} to {move_run_aside(run_dir)}")
        elif found:
            if self.lock is not None:
                self.lock.release()
            print(f"error: another process started a run in {run_dir} meanwhile ({found[0].name})",
                  file=sys.stderr, flush=True)  # fmt: skip
            raise SystemExit(EXIT_RUN_FOLDER_BUSY)
        self._open_logs()

    def _resumed_args(self, args: ArgsT) -> ArgsT:
        """Lock the checkpoint's run folder, load its newest checkpoint that loads, and return
        its configuration with the flags a resume may change (contradictions are refused)."""
        resume = Path(args.resume)
        run_dir = resumed_run_folder(resume)
        contradictions = []
        if args.run_dir is not None and Path(args.run_dir).resolve() != run_dir.resolve():
            contradictions.append(
                f"--run-dir {args.run_dir}: a resumed run continues in its checkpoint's folder "
                f"{run_dir}; leave --run-dir out (or give that folder)"
            )
        if args.overwrite:
            contradictions.append(
                "--overwrite starts a run over, --resume continues one: give one of them"
            )
        if contradictions:
            refuse(f"--resume {resume} contradicts other flags", contradictions)
        self._lock_run_folder(run_dir)
        not_files = entries_not_files(run_dir)
        if not_files:
            refuse(f"cannot resume in {run_dir}", [f"{p}: move it away" for p in not_files],
                   self.lock)  # fmt: skip
        try:
            checkpoint_file, self.checkpoint = load_newest_checkpoint(resume, report=warn)
        except CHECKPOINT_LOAD_ERRORS as error:
            refuse("cannot resume", [str(error)], self.lock)
        problems = counter_problems(self.checkpoint)
        if problems:
            refuse(f"{checkpoint_file} is inconsistent; it was not resumed", problems, self.lock)
        foreign = record_conflicts(run_dir, self.checkpoint)
        if foreign:
            refuse(
                f"{checkpoint_file} is not this run's checkpoint (the run was started with "
                "other flags); it was not resumed",
                foreign,
                self.lock,
            )
        args.resume = str(checkpoint_file)
        args.run_dir = None  # checked above; the checkpoint's folder is where the run continues
        return resumed_configuration(args, self.checkpoint, run_dir, self.lock)

    def _lock_run_folder(self, run_dir: Path) -> None:
        """Own the run folder for this process's life (two processes never train in one
        folder), then clear what a killed writer left behind."""
        try:
            self.lock = RunFolderLock(run_dir).acquire()
        except RunFolderBusy as busy:
            print(f"error: {busy}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_RUN_FOLDER_BUSY) from None
        except OSError as error:  # what folder_creation_problem cannot see (/proc, a quota)
            cause = write_failure(Path(run_dir), error)
            print(f"error: could not make the run folder {run_dir}: {cause}; give a --run-dir "
                  "in a folder you can write", file=sys.stderr, flush=True)  # fmt: skip
            raise SystemExit(EXIT_WRITE_FAILED) from None
        for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
            for stale in remove_stale_temporaries(folder):
                warn(f"removed {stale}, a partial write left by a killed process")

    @property
    def resuming(self) -> bool:
        return self.checkpoint is not None

    def task_buffer(self, tasks: TaskSpec) -> MultiTaskReplayBuffer:
        """Per-task replay data (column k: task k), capped at what the run can ever store."""
        return MultiTaskReplayBuffer(
            min(self.args.buffer_size, self.args.total_timesteps // tasks.num_tasks + 1),
            tasks.observation_space,
            tasks.action_space,
            num_tasks=tasks.num_tasks,
            device=self.device,
        )

    # -- checkpoint I/O ---------------------------------------------------------------------
    def load(self, objects: dict[str, Any]) -> dict[str, Any]:
        """Load the checkpoint into the script's objects and restore the RNG states.

        Modules and optimisers load their state dicts in place, tensors are copied in place;
        anything else (a replay buffer) comes back replaced by the checkpoint's object, together
        with the checkpoint's ``envs`` and ``obs`` (the environments continue bit for bit).
        """
        if self.checkpoint is None:
            raise RuntimeError("load() needs a run started with --resume")
        problems = checkpoint_problems(self.checkpoint, objects)
        if problems:
            saved_args = self.checkpoint.get("args")
            saved_env = saved_args.get("env_id") if isinstance(saved_args, dict) else None
            writer = self.checkpoint.get("script") or "an older version (no script recorded)"
            refuse(
                f"{self.args.resume} does not fit {script_name(self.args)} with --env-id "
                f"{self.args.env_id} (it was written by {writer}, its args say env "
                f"{saved_env}); nothing in the run folder was changed",
                problems,
                self.lock,
            )
        loaded = {}
        for name, obj in objects.items():
            saved = self.checkpoint[name]
            if hasattr(obj, "load_state_dict"):
                obj.load_state_dict(saved)
            elif isinstance(obj, torch.Tensor):
                with torch.no_grad():
                    obj.copy_(saved)
            else:
                # A buffer sized for a smaller budget grows to the one this run was built with
                # (a resume that raises --total-timesteps), so no data is overwritten early.
                if hasattr(saved, "grow") and type(saved) is type(obj):
                    saved.grow(obj.capacity)
                obj = saved
            loaded[name] = obj
        loaded["envs"], loaded["obs"] = self.checkpoint["envs"], self.checkpoint["obs"]
        set_rng_state(self.checkpoint["rng"])
        self._open_logs()
        return loaded

    def save(self, objects: dict[str, Any]) -> Path:
        """Checkpoint the script's objects (networks, optimisers, buffer, ``envs``, ``obs``)
        with the run's counters, configuration and RNG states; keep the newest K.

        A write that fails (a full disk, a file-size limit) stops the run with exit status
        ``EXIT_WRITE_FAILED`` (:mod:`qmp_harness.run_files`) and a message naming the file
        and the cause; the previous checkpoints are kept, so the run resumes from the last
        one once there is room."""
        if self._logger is None and self.checkpoint is None:
            self._start_fresh_folder()
        path = checkpoint_path(self.run_dir / "checkpoints", self.global_step)
        payload = {}
        for name, obj in objects.items():
            payload[name] = obj.state_dict() if hasattr(obj, "state_dict") else obj
            if isinstance(obj, torch.Tensor):
                payload[name] = obj.detach().clone()
        payload.update({name: getattr(self, name) for name in COUNTERS})
        payload.update({"args": asdict(self.args), "script": script_name(self.args)})
        try:
            save_checkpoint(path, payload)
        except CheckpointWriteError as error:
            if self.lock is not None:
                self.lock.release()
            print(f"error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_WRITE_FAILED) from None
        if self.args.keep_checkpoints > 0:
            # Long runs checkpoint often; older files are only needed for forensics.
            for old in saved_checkpoints(path.parent)[: -self.args.keep_checkpoints]:
                old.unlink()
        return path

    # -- every step -------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.global_step >= self.args.total_timesteps

    @property
    def sps(self) -> int:
        return int((self.global_step - self.start_step) / max(time.time() - self.start_time, 1e-9))

    def record_step(self, next_obs, rewards, terminations, truncations, infos) -> np.ndarray:
        """Count the step, log finished episodes; return next observations with the true final
        observation of every episode that just ended (for bootstrapping)."""
        n = len(rewards)
        if self.episode_return is None:
            self.episode_return, self.episode_length = np.zeros(n), np.zeros(n, dtype=int)
        self.num_envs = n
        self.global_step += n
        self.bar.update(n)
        self.episode_return += rewards
        self.episode_length += 1
        dones = terminations | truncations
        real_next_obs = next_obs.copy()
        if dones.any():
            real_next_obs[dones] = np.stack(infos["final_obs"][dones])
            success = infos["final_info"]["episode_success"][dones]
            self.logger.scalars(
                {
                    "charts/episodic_return": float(self.episode_return[dones].mean()),
                    "charts/episodic_length": float(self.episode_length[dones].mean()),
                    "charts/episode_success": float(success.mean()),
                },
                self.global_step,
            )
            self.episode_return[dones], self.episode_length[dones] = 0.0, 0
        if self.global_step >= self.learning_starts:
            self.update_credit += self.args.updates_per_step * self.update_scale
            if self.training_clock is None:
                self.training_clock = (time.perf_counter(), self.global_step, 0.0)
        return real_next_obs

    @property
    def learning_starts(self) -> int:
        """Env steps (over all tasks) before gradient updates start: ``--learning-starts``, or
        N times it with ``--learning-starts-per-task`` (the original's separate networks)."""
        tasks = suite_facts(self.args.env_id).num_tasks if self.args.learning_starts_per_task else 1
        return self.args.learning_starts * tasks

    def qmp_options(self, **overrides: Any) -> dict[str, Any]:
        """The ``QMPBehaviorWrapper`` options that the ``--qmp-*`` flags ask for (one place for
        every script); ``overrides`` replace or add options (CTPG's guide)."""
        args = self.args
        options: dict[str, Any] = {
            "scoring": args.qmp_scoring,
            "mixture": args.qmp_mixture,
            "temperature": args.qmp_temperature,
            "hold_steps": args.qmp_hold_steps,
            "start_step": self.learning_starts if args.qmp_after_learning_starts else 0,
            "extra_policies": helper_policies(list(args.qmp_helpers), seed=args.seed),
            "seed": args.seed,
        }
        return {**options, **overrides}

    def updates_due(self) -> int:
        """Gradient steps owed at the paper's ratio of updates to env steps (credit carries)."""
        due = int(self.update_credit)
        self.update_credit -= due
        return due

    def should_log(self) -> bool:
        """True once per env step that crosses a multiple of ``log_every``."""
        if self.global_step % self.args.log_every >= self.num_envs:
            return False
        if getattr(self, "_logged_step", None) == self.global_step:
            return False
        self._logged_step = self.global_step
        return True

    def log_losses(self, metrics: dict[str, float]) -> None:
        self.logger.scalars({**metrics, "charts/SPS": self.sps}, self.global_step)

    def evaluation_due(self) -> bool:
        """True (once) when the evaluation schedule says so; also refreshes the progress bar."""
        self.bar.set_postfix(SPS=self.sps, success=f"{self.last_success:.2f}", refresh=False)
        if self.global_step < self.next_eval:
            return False
        self.next_eval += self.args.eval_every
        return True

    def checkpoint_due(self) -> bool:
        """True (once) when the checkpoint schedule says so."""
        if self.next_checkpoint is None or self.global_step < self.next_checkpoint:
            return False
        self.next_checkpoint += self.args.checkpoint_every
        return True

    # -- evaluation and the end -------------------------------------------------------------
    def evaluate(self, eval_policy: Callable, envs) -> float:
        """Each task's OWN deterministic policy, by the field's protocol (qmp_envs); logs the
        QMP selection matrix of the interval and starts a new one."""
        args, step = self.args, self.global_step
        eval_start = time.perf_counter()
        video_dir = self.run_dir / "videos" / f"step_{step}" if args.capture_video else None
        if self.eval_envs is None:  # built once, reused by every evaluation
            render_mode = "rgb_array" if args.capture_video else None
            self.eval_envs = qmp_envs.EvaluationEnvs(
                args.env_id, env_kwargs=self.env_kwargs, render_mode=render_mode
            )
        result = qmp_envs.evaluate_policy(
            eval_policy,
            self.eval_envs,
            episodes_per_task=args.eval_episodes,
            seed=args.seed + 10_000,
            video_dir=video_dir,
            stop_at_success=args.eval_stop_at_success,
        )
        metrics = result.as_dict()
        if self.evaluates_mixture(envs):
            mixture = qmp_envs.evaluate_policy(
                envs.mixture_policy(),
                self.eval_envs,
                episodes_per_task=args.eval_episodes,
                seed=args.seed + 10_000,  # the same episodes as the own-policy evaluation
                stop_at_success=args.eval_stop_at_success,
            )
            metrics.update(mixture.as_dict(prefix="eval_mixture/"))
        self.logger.eval_row(metrics, step)
        self.logger.selection(envs.selection_matrix(), envs.candidate_names, step)
        envs.reset_selection_stats()
        self.last_success, self.last_eval_step = result.mean_success, step
        self.last_eval_seconds = time.perf_counter() - eval_start
        if self.training_clock is not None:
            start, start_step, eval_seconds = self.training_clock
            eval_seconds += self.last_eval_seconds
            self.training_clock = (start, start_step, eval_seconds)
        return result.mean_success

    def evaluates_mixture(self, envs) -> bool:
        """Whether evaluations also score the deterministic Q-switch mixture: QMP runs with a
        Q-switch (not CTPG's guide) that has something to mix, unless --no-eval-mixture."""
        qmp = envs.qmp
        return (
            self.args.qmp
            and self.args.eval_mixture
            and qmp.attached
            and qmp.mixture != "guide"
            and len(qmp.candidate_names) > 1
        )

    def training_sps(self) -> float | None:
        """Env steps/s since gradient updates began, evaluation time excluded."""
        if self.training_clock is None:
            return None
        start, start_step, eval_seconds = self.training_clock
        elapsed = time.perf_counter() - start - eval_seconds
        return (self.global_step - start_step) / max(elapsed, 1e-9)

    def finish(self, eval_policy: Callable, envs, objects: dict[str, Any]) -> Path:
        """The final evaluation and checkpoint, then the "finished" marker ``timing.json``."""
        self.bar.close()
        sps = self.training_sps()
        if self.last_eval_step != self.global_step:
            self.evaluate(eval_policy, envs)
        self.save(objects)
        envs.close()
        if self.eval_envs is not None:
            self.eval_envs.close()
        self.logger.close()
        if self.args.track:
            import wandb

            wandb.finish()
        # Written last: a run killed before this line is resumed, not counted as done.
        timing = {
            "env_steps": self.global_step,
            "sps_after_learning_starts": sps,
            # The final evaluation's wall time, so a pipeline's evaluation cost can be reported.
            "last_eval_seconds": self.last_eval_seconds,
        }
        atomic_write_text(self.run_dir / "timing.json", json.dumps(timing))
        if self.lock is not None:
            self.lock.release()
        print(f"done: {self.global_step} env steps; metrics in {self.run_dir / 'metrics.csv'}")
        return self.run_dir
