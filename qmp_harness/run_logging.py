"""What a run writes besides checkpoints: ``metrics.csv``, ``selection.jsonl``, TensorBoard
events (CleanRL's metric names) and ``provenance.jsonl``, every file rewritten atomically."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qmp_harness.checkpoints import warn
from qmp_harness.float_profile import code_paths, cpu_features, package_versions
from qmp_harness.run_files import atomic_write_text

PROVENANCE_PACKAGES = ("torch", "gymnasium", "mujoco", "numpy", "metaworld", "stable_baselines3")
#: The packages whose code computes a run (envs, Q-switch, harness, scripts): what
#: :func:`source_digest` hashes.
SOURCE_PACKAGES = ("qmp_envs", "qmp_wrappers", "qmp_harness", "cleanrl_qmp")
SOURCE_SUFFIXES = (".py", ".xml")


def source_digest(root: Path | None = None) -> str:
    """A SHA-256 of the code that computes a run: every source file of :data:`SOURCE_PACKAGES`
    under ``root`` (default: where this package lies), by relative path and content.

    It names the code where no git commit can (an exported copy, an installed wheel): two runs
    with the same digest ran the same code.

    >>> source_digest() == source_digest()
    True
    """
    root = Path(__file__).resolve().parent.parent if root is None else root
    digest = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        files = sorted(
            f for f in (root / package).rglob("*") if f.suffix in SOURCE_SUFFIXES and f.is_file()
        )
        for path in files:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return "sha256:" + digest.hexdigest()


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
    uncommitted changes), a digest of its source (:func:`source_digest`, also where there is no
    git), Python, the key packages' versions and the torch thread count."""

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

    versions = package_versions(PROVENANCE_PACKAGES)
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "from_step": start_step,
        "git_commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": None if status is None else bool(status),
        "source_digest": source_digest(),
        "python": platform.python_version(),
        # Float results depend on the kernels picked for the processor's instruction set:
        # say which processor and which code paths produced this segment.
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "float_code_paths": {k: v for k, v in code_paths().items() if k != "versions"},
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


def start_wandb(run_dir: Path, args: Any) -> None:
    """CleanRL's tracking: a wandb run mirroring the TensorBoard scalars. A resumed run
    continues the same wandb run (its id is kept in the run folder)."""
    import uuid

    import wandb

    id_file = run_dir / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:16]
    atomic_write_text(id_file, run_id)
    wandb.init(
        project=args.wandb_project_name,
        entity=args.wandb_entity,
        sync_tensorboard=True,
        config=asdict(args),
        name=run_dir.name,
        id=run_id,
        resume="allow",
        dir=str(run_dir),
        save_code=False,
    )


def plot_demo(run_dir: Path) -> None:
    """The demo's pictures of its own run, written into the run folder."""
    from qmp_harness.run_plots import plot_run  # matplotlib only when a demo plots

    for path in plot_run(run_dir, run_dir):
        print(f"plot: {path}")
