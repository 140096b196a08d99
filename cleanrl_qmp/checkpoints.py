"""Checkpoint files of a run: names, atomic saves, and loading that survives damaged files.

A run's checkpoints are ``<run>/checkpoints/step_<N>.pt`` (torch zip archives). Anything else in
that folder (``step_2000 (copy).pt``, a leftover ``.tmp``) is not a checkpoint and is ignored,
with a message naming it. A checkpoint that does not load (truncated, corrupted) is renamed to
``<name>.corrupt`` so it is kept for inspection but never picked again, and the next older one is
used instead.
"""

from __future__ import annotations

import pickle
import random
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cleanrl_qmp.run_files import commit_temporary, temporary_path

CHECKPOINT_NAME = re.compile(r"^step_(\d+)\.pt$")
CORRUPT_SUFFIX = ".corrupt"


def rng_state() -> dict:
    import torch  # here, not at the top: the results driver reads checkpoint names only

    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("torch_cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically (temporary file, fsync, rename), so an interrupted save never leaves a
    truncated checkpoint under a checkpoint's name."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    # Protocol 4 stores numpy buffers as raw bytes; torch's default (2) encodes bytes as
    # latin-1 text, which costs ~1.5x for replay data.
    torch.save({**payload, "rng": rng_state()}, tmp, pickle_protocol=4)
    commit_temporary(tmp, path)


def checkpoint_path(checkpoint_dir: Path, step: int) -> Path:
    """Where a run's checkpoint at environment ``step`` lives: ``step_<N>.pt``."""
    return Path(checkpoint_dir) / f"step_{step}.pt"


def checkpoint_step(path: Path) -> int | None:
    """The environment step of a checkpoint file named by :func:`checkpoint_path`, else None.

    >>> checkpoint_step(Path("step_2000.pt")), checkpoint_step(Path("step_2000 (copy).pt"))
    (2000, None)
    """
    match = CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def saved_checkpoints(checkpoint_dir: Path, report: Callable[[str], None] | None = None) -> list:
    """A run's checkpoint files, oldest first (by step, not by name: step_400 < step_1000).

    Files in the folder that are not named like a checkpoint are left out; ``report`` (if given)
    is called with a message naming each.
    """
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        step = checkpoint_step(path)
        if step is not None and path.is_file():
            found.append((step, path))
        elif report is not None and not path.name.endswith((CORRUPT_SUFFIX, ".tmp")):
            report(f"ignoring {path}: not a checkpoint name (step_<N>.pt)")
    return [path for _, path in sorted(found)]


def checkpoint_is_readable(path: Path) -> bool:
    """A cheap test that catches truncated files: the zip archive's directory, which torch
    writes last, opens. (Corruption inside is found when the checkpoint is loaded.)"""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def set_aside(path: Path, reason: str, report: Callable[[str], None]) -> None:
    """Rename a damaged checkpoint to ``<name>.corrupt`` (kept, never picked again)."""
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    path.replace(target)
    report(f"checkpoint {path} is unreadable ({reason}); kept as {target.name}, not used")


def newest_readable_checkpoint(
    checkpoint_dir: Path, report: Callable[[str], None] = print
) -> Path | None:
    """The newest checkpoint that passes :func:`checkpoint_is_readable`; unreadable newer ones
    are set aside with a message naming them. Call it only while holding the run's lock."""
    for path in reversed(saved_checkpoints(checkpoint_dir, report)):
        if checkpoint_is_readable(path):
            return path
        set_aside(path, "truncated: not a complete torch archive", report)
    return None


class _ScriptUnpickler(pickle.Unpickler):
    """Loads objects of classes a training script defined as ``__main__`` (older checkpoints
    stored the script's ``Args`` object) in any process: as plain attribute holders when the
    class is not in this process's ``__main__``."""

    def find_class(self, module: str, name: str):
        if module == "__main__" and not hasattr(sys.modules["__main__"], name):
            return type(name, (), {"__module__": "__main__"})
        return super().find_class(module, name)


class _ScriptPickleModule:
    Unpickler = _ScriptUnpickler
    load = staticmethod(pickle.load)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint in any process, not only in the script that wrote it."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    # Checkpoints hold pickled environments and buffers: only load files you wrote.
    return torch.load(path, weights_only=False, pickle_module=_ScriptPickleModule)


def load_newest_checkpoint(
    path: str | Path, report: Callable[[str], None] = print
) -> tuple[Path, dict]:
    """Load ``path``, or, if it (a file) does not load, the newest older checkpoint of its run
    that does; a run folder or its ``checkpoints/`` folder loads its newest loadable checkpoint.

    Checkpoints that fail are set aside (see :func:`set_aside`). Raises ``FileNotFoundError``
    naming the folder when no checkpoint loads.
    """
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        candidates = list(reversed(saved_checkpoints(folder, report)))
    else:
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        folder = path.parent
        step = checkpoint_step(path)
        older = [
            p
            for p in saved_checkpoints(folder)
            if step is not None and (checkpoint_step(p) or 0) < step
        ]
        candidates = [path, *reversed(older)]
    for candidate in candidates:
        try:
            return candidate, load_checkpoint(candidate)
        except Exception as error:  # noqa: BLE001 - any unpickling failure means "damaged"
            set_aside(candidate, f"{type(error).__name__}: {error}", report)
    raise FileNotFoundError(f"no loadable checkpoint in {folder}")


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def seed_everything(seed: int, torch_deterministic: bool = True) -> None:
    import torch  # here: the results driver reads checkpoints' names without importing torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = torch_deterministic
