"""What every script shares but is not the algorithm: presets, logging, seeding, checkpoints."""

from __future__ import annotations

import csv
import io
import json
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import qmp_envs
from cleanrl_qmp.checkpoints import (  # noqa: F401 - re-exported for the scripts and tools
    checkpoint_path,
    checkpoint_step,
    load_checkpoint,
    load_newest_checkpoint,
    save_checkpoint,
    saved_checkpoints,
    set_rng_state,
    warn,
)
from cleanrl_qmp.config import (  # noqa: F401 - re-exported for the scripts and tools
    DEMO,
    PRESETS,
    RESUMABLE_FLAGS,
    BaseArgs,
    Preset,
    registered_qmp_ids,
    resolve_preset,
    resume_conflicts,
)
from cleanrl_qmp.run_files import (
    EXIT_RUN_FOLDER_BUSY,
    RunFolderBusy,
    RunFolderLock,
    atomic_write_text,
    remove_stale_temporaries,
)
from qmp_wrappers import MultiTaskReplayBuffer, QMPBehaviorWrapper


def seed_everything(seed: int, torch_deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = torch_deterministic


PROVENANCE_PACKAGES = ("torch", "gymnasium", "mujoco", "numpy", "metaworld", "stable_baselines3")


def cpu_model() -> str:
    """The processor's model name (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(start_step: int) -> dict:
    """What produced a run segment: the code's git commit (and whether the checkout had
    uncommitted changes), Python, the key packages' versions and the torch thread count."""
    from importlib import metadata

    def git(*command: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *command],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    versions = {}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "from_step": start_step,
        "git_commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": None if status is None else bool(status),
        "python": platform.python_version(),
        # Float results differ across processors: say which one produced this segment.
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "packages": versions,
    }


class RunLogger:
    """TensorBoard (CleanRL's metric names) plus ``metrics.csv`` in the run folder.

    The CSV holds one row per evaluation with every eval metric, so runs can be plotted and
    aggregated without TensorBoard. On resume, rows after the checkpoint's step are dropped so
    the file equals an uninterrupted run's.
    """

    def __init__(self, run_dir: Path, args: Any, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "metrics.csv"
        self.provenance_path = self.run_dir / "provenance.jsonl"
        if resume_step is None:
            # A fresh run in an existing folder (the demo's, or a reused --run-dir) replaces the
            # previous run's logs rather than mixing with them.
            stale = [self.csv_path, self.run_dir / "selection.jsonl", self.provenance_path]
            stale += list(self.run_dir.glob("events.out.tfevents.*"))
            for path in stale:
                path.unlink(missing_ok=True)
            atomic_write_text(
                self.run_dir / "args.json", json.dumps(asdict(args), indent=2, default=str)
            )
        else:
            self._write_rows([r for r in self.read_rows() if r["global_step"] <= resume_step])
        # One line per segment (the start and every resume), so a result can name its code.
        provenance_lines = self.provenance_path.read_text() if self.provenance_path.exists() else ""
        atomic_write_text(
            self.provenance_path, provenance_lines + json.dumps(provenance(resume_step or 0)) + "\n"
        )
        self.writer = SummaryWriter(str(self.run_dir))
        if resume_step is None:
            table = "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
            self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    def read_rows(self) -> list[dict]:
        """The CSV's rows (``global_step`` as int); a damaged row (a run killed by an older
        version mid-write) is dropped with a warning naming the file."""
        if not self.csv_path.exists():
            return []
        rows = []
        with self.csv_path.open(newline="") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                try:
                    if None in row.values() or None in row:
                        raise ValueError("wrong number of fields")
                    rows.append({**row, "global_step": int(row["global_step"])})
                except (ValueError, KeyError, TypeError) as error:
                    warn(f"{self.csv_path} line {line} is damaged ({error}); dropped")
        return rows

    def _write_rows(self, rows: list[dict]) -> None:
        if not rows:
            self.csv_path.unlink(missing_ok=True)
            return
        columns = list(dict.fromkeys(key for row in rows for key in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.csv_path, text.getvalue())

    def scalars(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def eval_row(self, metrics: dict[str, float], step: int) -> None:
        """Log eval metrics to TensorBoard and append them as one CSV row."""
        self.scalars(metrics, step)
        rows = self.read_rows()
        rows.append({"global_step": step, "time": round(time.time(), 3), **metrics})
        self._write_rows(rows)

    def selection(self, matrix: np.ndarray, names: list[str], step: int) -> None:
        """The QMP selection matrix (rows: task collected; columns: policy executed)."""
        for i, row_name in enumerate(names[: matrix.shape[0]]):
            for j, col_name in enumerate(names):
                self.writer.add_scalar(f"qmp/selection/{row_name}/{col_name}", matrix[i, j], step)
        record = {"global_step": step, "names": names, "matrix": matrix.tolist()}
        self._write_selection([*self._selection_lines(), json.dumps(record)])

    def _selection_lines(self, up_to_step: float = float("inf")) -> list[str]:
        path = self.run_dir / "selection.jsonl"
        if not path.exists():
            return []
        keep = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                if json.loads(line)["global_step"] <= up_to_step:
                    keep.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                warn(f"{path} line {number} is damaged; dropped")
        return keep

    def _write_selection(self, lines: list[str]) -> None:
        atomic_write_text(self.run_dir / "selection.jsonl", "".join(f"{x}\n" for x in lines))

    def truncate_selection(self, step: int) -> None:
        if (self.run_dir / "selection.jsonl").exists():
            self._write_selection(self._selection_lines(up_to_step=step))

    def close(self) -> None:
        self.writer.close()


@dataclass
class TaskSpec:
    """What the scripts need to know about a multi-task environment."""

    num_tasks: int
    task_names: list[str]
    feature_dim: int
    feature_mask: np.ndarray
    min_reward: float
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Box

    @property
    def action_dim(self) -> int:
        return int(self.action_space.shape[0])


class TrainingRun:
    """Everything around a script's algorithm: run folder, presets, seeding, the vector env with
    its ``QMPBehaviorWrapper``, episode statistics, evaluation, checkpoints, resume, progress.

    A script builds its networks, calls :meth:`restore` then :meth:`start`, and keeps its own
    act / step / store / update loop, calling :meth:`record_step` after every env step and
    :meth:`periodic` at the end of every iteration.
    """

    def __init__(self, args: BaseArgs, preset_overrides: dict[str, dict] | None = None):
        self.checkpoint = None
        self.lock: RunFolderLock | None = None
        if args.resume:
            resume = Path(args.resume)
            if resume.is_dir():
                run_dir = resume.parent if resume.name == "checkpoints" else resume
            else:
                run_dir = resume.resolve().parent.parent
            self._lock_run_folder(run_dir)
            checkpoint_file, self.checkpoint = load_newest_checkpoint(resume, report=warn)
            args.resume = str(checkpoint_file)
        if self.checkpoint is not None:
            saved = self._saved_args(args)
            conflicts = resume_conflicts(args, saved)
            if conflicts:
                refuse(f"these flags contradict {args.resume}", conflicts, self.lock)
            defaults = type(args)()
            for name in RESUMABLE_FLAGS - {"resume"}:
                if getattr(args, name) != getattr(defaults, name):
                    setattr(saved, name, getattr(args, name))
            saved.resume = args.resume
            # A run continues in the folder that holds the checkpoint (runs can be moved).
            saved.run_dir = str(Path(args.resume).resolve().parent.parent)
            args = saved
        if args.demo:
            for key, value in DEMO.items():
                setattr(args, key, value)
        if args.env_id not in registered_qmp_ids():
            refuse("unknown environment", [f"--env-id {args.env_id!r}: registered ids are "
                   f"{', '.join(registered_qmp_ids())}"], self.lock)  # fmt: skip
        args = resolve_preset(args, preset_overrides)
        problems = args.problems()
        if problems:
            refuse("invalid configuration", problems, self.lock)
        self.run_dir = Path(
            args.run_dir
            or f"runs/{args.env_id.replace('/', '_')}__{args.exp_name}__"
            f"{'qmp' if args.qmp else 'noqmp'}__{args.seed}__{int(time.time())}"
        )
        args.run_dir = str(self.run_dir)
        self.args = args
        if self.lock is None:
            self._lock_run_folder(self.run_dir)
        seed_everything(args.seed, args.torch_deterministic)
        self.device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
        probe = gym.make(args.env_id)
        self.env_kwargs = {"compat": args.env_compat} if hasattr(probe.unwrapped, "compat") else {}
        probe.close()

        # One sub-env per task; SAME_STEP autoreset keeps final observations for bootstrapping
        # truncated episodes. The wrapper owns the mixture; --no-qmp disables it.
        envs = gym.make_vec(
            args.env_id, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, **self.env_kwargs
        )
        self.envs = QMPBehaviorWrapper(
            envs,
            scoring=args.qmp_scoring,
            mixture=args.qmp_mixture,
            temperature=args.qmp_temperature,
            hold_steps=args.qmp_hold_steps,
            extra_policies=qmp_envs.helper_policies(list(args.qmp_helpers), seed=args.seed),
            seed=args.seed,
        )
        n = self.envs.num_tasks
        self.tasks = TaskSpec(
            num_tasks=n,
            task_names=list(envs.get_attr("task_names")[0]),
            feature_dim=int(envs.get_attr("feature_dim")[0]),
            feature_mask=np.asarray(envs.get_attr("agent_feature_mask")[0]),
            min_reward=float(envs.get_attr("min_reward")[0]),
            observation_space=self.envs.single_observation_space,
            action_space=self.envs.single_action_space,
        )
        space = self.tasks.action_space
        if not (np.all(space.low == -1) and np.all(space.high == 1)):
            raise ValueError(f"the scripts expect actions in [-1, 1], got {space}")
        self.global_step, self.update_credit = 0, 0.0
        self.episode_return, self.episode_length = np.zeros(n), np.zeros(n, dtype=int)
        self.next_eval, self.last_eval_step = args.eval_every, -1
        self.next_checkpoint = args.checkpoint_every or None
        self.last_success = float("nan")
        self.obs: np.ndarray | None = None

    # -- set-up ----------------------------------------------------------------------------
    def _saved_args(self, args: BaseArgs) -> BaseArgs:
        """The checkpoint's configuration as this script's ``Args``; a checkpoint another
        script wrote is refused (it would train another algorithm in that run's folder)."""
        saved, script = self.checkpoint["args"], self.checkpoint.get("script")
        if script is not None and script != script_name(args):
            refuse(
                "wrong script",
                [f"{args.resume} was written by {script}, not {script_name(args)}: "
                 f"resume it with cleanrl_qmp/{script}"],
                self.lock,
            )  # fmt: skip
        if not isinstance(saved, dict):  # checkpoints before args were stored as a dict
            saved = asdict(saved)
        known = {f.name for f in fields(type(args))}
        return type(args)(**{k: v for k, v in saved.items() if k in known})

    def _lock_run_folder(self, run_dir: Path) -> None:
        """Own the run folder for this process's life (two processes never train in one
        folder), then clear what a killed writer left behind."""
        try:
            self.lock = RunFolderLock(run_dir).acquire()
        except RunFolderBusy as busy:
            print(f"error: {busy}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_RUN_FOLDER_BUSY) from None
        for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
            for stale in remove_stale_temporaries(folder):
                warn(f"removed {stale}, a partial write left by a killed process")

    def task_buffer(self) -> MultiTaskReplayBuffer:
        """Per-task replay data (column k: task k), capped at what the run can ever store."""
        args, tasks = self.args, self.tasks
        return MultiTaskReplayBuffer(
            min(args.buffer_size, args.total_timesteps // tasks.num_tasks + 1),
            tasks.observation_space,
            tasks.action_space,
            num_tasks=tasks.num_tasks,
            device=self.device,
        )

    def restore(self, **objects: Any) -> dict[str, Any]:
        """Load the script's objects from the checkpoint when resuming.

        Modules and optimisers load their state dicts in place; tensors are copied in place;
        anything else (a replay buffer) is returned replaced by the checkpoint's object.
        """
        if self.checkpoint is None:
            return objects
        restored = {}
        for name, obj in objects.items():
            saved = self.checkpoint[name]
            if hasattr(obj, "load_state_dict"):
                obj.load_state_dict(saved)
            elif isinstance(obj, torch.Tensor):
                with torch.no_grad():
                    obj.copy_(saved)
            else:
                obj = saved
            restored[name] = obj
        return restored

    def start(self, policy: Callable, q_function: Callable) -> np.ndarray:
        """Reset (or restore) the envs, attach the agent to the wrapper, open the logs."""
        args = self.args
        if self.checkpoint is not None:
            ckpt = self.checkpoint
            self.envs.close()
            self.envs, self.obs = ckpt["envs"], ckpt["obs"]
            self.global_step, self.update_credit = ckpt["global_step"], ckpt["update_credit"]
            self.episode_return, self.episode_length = (
                ckpt["episode_return"],
                ckpt["episode_length"],
            )
            self.next_eval, self.next_checkpoint = ckpt["next_eval"], ckpt["next_checkpoint"]
            self.last_eval_step = ckpt["last_eval_step"]
            set_rng_state(ckpt["rng"])
        else:
            self.obs, _ = self.envs.reset(seed=args.seed)
        self.envs.enabled = args.qmp
        self.envs.attach(policy=policy, q_function=q_function, device=self.device)
        resume_step = self.global_step if self.checkpoint is not None else None
        self.logger = RunLogger(self.run_dir, args, resume_step=resume_step)
        if resume_step is not None:
            self.logger.truncate_selection(resume_step)
        print(
            f"run folder: {self.run_dir}  ({self.tasks.num_tasks} tasks, "
            f"QMP {'on' if args.qmp else 'off'}, from step {self.global_step})"
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
        return self.obs

    # -- every step ------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.global_step >= self.args.total_timesteps

    @property
    def sps(self) -> int:
        return int((self.global_step - self.start_step) / max(time.time() - self.start_time, 1e-9))

    def record_step(self, next_obs, rewards, terminations, truncations, infos) -> np.ndarray:
        """Count the step, log finished episodes; return next observations with the true final
        observation of every episode that just ended (for bootstrapping)."""
        n = self.tasks.num_tasks
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
        self.obs = next_obs
        if self.global_step >= self.args.learning_starts:
            self.update_credit += self.args.updates_per_step
            if self.training_clock is None:
                self.training_clock = (time.perf_counter(), self.global_step, 0.0)
        return real_next_obs

    def updates_due(self) -> int:
        """Gradient steps owed at the paper's ratio of updates to env steps (credit carries)."""
        due = int(self.update_credit)
        self.update_credit -= due
        return due

    def should_log(self) -> bool:
        """True once per env step that crosses a multiple of ``log_every``."""
        if self.global_step % self.args.log_every >= self.tasks.num_tasks:
            return False
        if getattr(self, "_logged_step", None) == self.global_step:
            return False
        self._logged_step = self.global_step
        return True

    def log_losses(self, metrics: dict[str, float]) -> None:
        self.logger.scalars({**metrics, "charts/SPS": self.sps}, self.global_step)

    def periodic(self, eval_policy: Callable, state: Callable[[], dict]) -> None:
        """Evaluate and checkpoint when due; refresh the progress bar."""
        if self.global_step >= self.next_eval:
            self.next_eval += self.args.eval_every
            self.evaluate(eval_policy)
        if self.next_checkpoint is not None and self.global_step >= self.next_checkpoint:
            self.next_checkpoint += self.args.checkpoint_every
            self.save(state)
        self.bar.set_postfix(SPS=self.sps, success=f"{self.last_success:.2f}", refresh=False)

    # -- evaluation and checkpoints --------------------------------------------------------
    def evaluate(self, eval_policy: Callable) -> float:
        """Each task's OWN deterministic policy, by the field's protocol (qmp_envs)."""
        args, step = self.args, self.global_step
        eval_start = time.perf_counter()
        video_dir = self.run_dir / "videos" / f"step_{step}" if args.capture_video else None
        result = qmp_envs.evaluate_policy(
            eval_policy,
            args.env_id,
            episodes_per_task=args.eval_episodes,
            seed=args.seed + 10_000,
            env_kwargs=self.env_kwargs,
            video_dir=video_dir,
        )
        self.logger.eval_row(result.as_dict(), step)
        self.logger.selection(self.envs.selection_matrix(), self.envs.candidate_names, step)
        self.envs.reset_selection_stats()
        self.last_success, self.last_eval_step = result.mean_success, step
        if self.training_clock is not None:
            start, start_step, eval_seconds = self.training_clock
            eval_seconds += time.perf_counter() - eval_start
            self.training_clock = (start, start_step, eval_seconds)
        return result.mean_success

    def training_sps(self) -> float | None:
        """Env steps/s since gradient updates began, evaluation time excluded."""
        if self.training_clock is None:
            return None
        start, start_step, eval_seconds = self.training_clock
        elapsed = time.perf_counter() - start - eval_seconds
        return (self.global_step - start_step) / max(elapsed, 1e-9)

    def save(self, state: Callable[[], dict]) -> Path:
        path = checkpoint_path(self.run_dir / "checkpoints", self.global_step)
        objects = {}
        for name, obj in state().items():
            objects[name] = obj.state_dict() if hasattr(obj, "state_dict") else obj
            if isinstance(obj, torch.Tensor):
                objects[name] = obj.detach().clone()
        save_checkpoint(
            path,
            {
                **objects,
                "args": asdict(self.args),
                "script": script_name(self.args),
                "envs": self.envs,
                "obs": self.obs,
                "global_step": self.global_step,
                "update_credit": self.update_credit,
                "episode_return": self.episode_return,
                "episode_length": self.episode_length,
                "next_eval": self.next_eval,
                "next_checkpoint": self.next_checkpoint,
                "last_eval_step": self.last_eval_step,
            },
        )
        if self.args.keep_checkpoints > 0:
            # Long runs checkpoint often; older files are only needed for forensics.
            for old in saved_checkpoints(path.parent)[: -self.args.keep_checkpoints]:
                old.unlink()
        return path

    def finish(self, eval_policy: Callable, state: Callable[[], dict]) -> Path:
        self.bar.close()
        sps = self.training_sps()
        if self.last_eval_step != self.global_step:
            self.evaluate(eval_policy)
        self.save(state)
        self.envs.close()
        self.logger.close()
        # The "finished" marker comes last: a run killed before this line is resumed, not
        # counted as done.
        timing = {"env_steps": self.global_step, "sps_after_learning_starts": sps}
        atomic_write_text(self.run_dir / "timing.json", json.dumps(timing))
        if self.lock is not None:
            self.lock.release()
        print(f"done: {self.global_step} env steps; metrics in {self.run_dir / 'metrics.csv'}")
        return self.run_dir


def refuse(what: str, problems: list[str], lock: RunFolderLock | None = None) -> None:
    """Stop before the run touches anything: print each problem and exit with status 2."""
    if lock is not None:
        lock.release()
    lines = "\n".join(f"  {p}" for p in problems)
    print(f"error: {what}:\n{lines}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def script_name(args: BaseArgs) -> str:
    """The file name of the script whose ``Args`` these are (``sac_qmp.py``)."""
    return Path(sys.modules[type(args).__module__].__file__).name


def deterministic_policy(act: Callable[[torch.Tensor], torch.Tensor], device: torch.device):
    """Wrap a torch ``rows -> actions`` function as the numpy policy the evaluator calls."""

    def policy(obs_batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            rows = torch.as_tensor(obs_batch, dtype=torch.float32, device=device)
            return act(rows).cpu().numpy()

    return policy


def plot_demo(run_dir: Path) -> None:
    from qmp_experiments.plot import plot_runs

    for path in plot_runs([run_dir], run_dir):
        print(f"plot: {path}")
