"""What every script shares but is not the algorithm: presets, logging, seeding, checkpoints."""

from __future__ import annotations

import csv
import json
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Preset:
    """Per-environment defaults from the paper's hyperparameter table (spec section 10.2).

    ``updates_per_step`` is gradient steps per task per env step of that task (the paper's
    gradient-step budget per iteration divided by its env steps per iteration).
    """

    total_timesteps: int
    batch_size: int
    learning_starts: int
    learning_rate: float
    hidden: tuple[int, ...]
    updates_per_step: float
    eval_episodes: int
    eval_every: int


PRESETS: dict[str, Preset] = {
    "qmp/PointReach-v0": Preset(50_000, 256, 1_000, 3e-4, (256, 256), 1.0, 10, 5_000),
    "qmp/MultistageReacher-v0": Preset(2_000_000, 32, 10_000, 3e-4, (256, 256), 1.0, 10, 20_000),
    "qmp/MazeLarge10-v0": Preset(
        12_000_000, 256, 3_000, 3e-4, (256, 256), 1000 / 6000, 10, 120_000
    ),
    "qmp/Walker2dMT4-v0": Preset(8_000_000, 32, 10_000, 3e-4, (256, 256), 1.5, 10, 80_000),
}


def resolve_preset(args: Any) -> Any:
    """Fill every ``None`` field of ``args`` that a preset knows from ``PRESETS[args.env_id]``."""
    preset = PRESETS.get(args.env_id)
    for field in fields(Preset):
        if getattr(args, field.name, 0) is None:
            if preset is None:
                raise ValueError(
                    f"no preset for {args.env_id!r}: pass --{field.name.replace('_', '-')} "
                    f"(presets exist for {sorted(PRESETS)})"
                )
            setattr(args, field.name, getattr(preset, field.name))
    return args


def seed_everything(seed: int, torch_deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = torch_deterministic


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("torch_cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically, so an interrupted save never leaves a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({**payload, "rng": rng_state()}, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    # Checkpoints hold pickled environments and buffers: only load files you wrote.
    return torch.load(path, weights_only=False)


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
        if resume_step is None:
            (self.run_dir / "args.json").write_text(json.dumps(asdict(args), indent=2, default=str))
            self.csv_path.unlink(missing_ok=True)
        elif self.csv_path.exists():
            with self.csv_path.open() as f:
                rows = [row for row in csv.DictReader(f) if int(row["global_step"]) <= resume_step]
            self._write_rows(rows)
        self.writer = SummaryWriter(str(self.run_dir))
        if resume_step is None:
            table = "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
            self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    def _write_rows(self, rows: list[dict]) -> None:
        if not rows:
            self.csv_path.unlink(missing_ok=True)
            return
        columns = list(dict.fromkeys(key for row in rows for key in row))
        with self.csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    def scalars(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def eval_row(self, metrics: dict[str, float], step: int) -> None:
        """Log eval metrics to TensorBoard and append them as one CSV row."""
        self.scalars(metrics, step)
        rows = []
        if self.csv_path.exists():
            with self.csv_path.open() as f:
                rows = list(csv.DictReader(f))
        rows.append({"global_step": step, "time": round(time.time(), 3), **metrics})
        self._write_rows(rows)

    def selection(self, matrix: np.ndarray, names: list[str], step: int) -> None:
        """The QMP selection matrix (rows: task collected; columns: policy executed)."""
        for i, row_name in enumerate(names[: matrix.shape[0]]):
            for j, col_name in enumerate(names):
                self.writer.add_scalar(f"qmp/selection/{row_name}/{col_name}", matrix[i, j], step)
        record = {"global_step": step, "names": names, "matrix": matrix.tolist()}
        with (self.run_dir / "selection.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_selection(self, step: int) -> None:
        path = self.run_dir / "selection.jsonl"
        if path.exists():
            keep = [
                line
                for line in path.read_text().splitlines()
                if json.loads(line)["global_step"] <= step
            ]
            path.write_text("".join(line + "\n" for line in keep))

    def close(self) -> None:
        self.writer.close()
