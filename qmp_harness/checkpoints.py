"""Checkpoint files of a run: names, atomic saves, and loading that survives damaged files.

A run's checkpoints are ``<run>/checkpoints/step_<N>.pt`` (torch zip archives). Anything else in
that folder (``step_2000 (copy).pt``, a leftover ``.tmp``) is not a checkpoint and is ignored,
with a message naming it. A checkpoint damaged as a file (truncated, corrupted) is renamed to
``<name>.corrupt`` so it is kept for inspection but never picked again, and the next older one is
used instead; one that fails for another reason stays where it is and the error is reported. A
damaged file that is not one of a run's checkpoints (another name, another folder) is never
renamed: the load stops, naming it.
Unpickling resolves only the classes a checkpoint holds, so a crafted file cannot run code.
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

from qmp_harness.run_files import commit_temporary, temporary_path, write_failure

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


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a file-size limit); the message names
    the file and the cause. Nothing under a checkpoint's name was changed."""


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically (temporary file, fsync, rename), so an interrupted save never leaves a
    truncated checkpoint under a checkpoint's name; a failed write (a full disk, a file-size
    limit) removes its temporary file and raises :class:`CheckpointWriteError` naming the file
    and the cause, leaving the previous checkpoints as they were."""
    import torch

    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Protocol 4 stores numpy buffers as raw bytes; torch's default (2) encodes bytes as
        # latin-1 text, which costs ~1.5x for replay data.
        torch.save({**payload, "rng": rng_state()}, tmp, pickle_protocol=4)
        commit_temporary(tmp, path)
    except (OSError, RuntimeError) as error:
        cause = write_failure(tmp, error)  # before the partial file is removed
        tmp.unlink(missing_ok=True)
        kept = [p.name for p in saved_checkpoints(path.parent)]
        raise CheckpointWriteError(
            f"could not write checkpoint {path}: {cause}; the previous checkpoints are kept "
            f"({', '.join(kept) or 'none yet'}); free space (or raise the limit) and resume "
            f"with --resume {path.parent.parent}"
        ) from error


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


def is_run_checkpoint(path: Path) -> bool:
    """Whether ``path`` is named as one of a run's checkpoints, ``<run>/checkpoints/step_<N>.pt``:
    the only files a damaged load may rename (:func:`set_aside`) and the only files whose run
    folder a resume may lock. Any other file given as a checkpoint is left exactly as it is.

    >>> is_run_checkpoint(Path("runs/x/checkpoints/step_200.pt"))
    True
    >>> is_run_checkpoint(Path("runs/x/step_200.pt")), is_run_checkpoint(Path("/etc/passwd"))
    (False, False)
    """
    path = Path(path)
    return checkpoint_step(path) is not None and path.parent.name == "checkpoints"


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


class UnsafeCheckpointError(Exception):
    """A checkpoint names a class or function it has no business holding (it could run code)."""


class DamagedCheckpointError(Exception):
    """A checkpoint file is damaged: not a complete archive, or a member fails its CRC-32."""


class CheckpointLoadError(Exception):
    """A checkpoint that is intact as a file does not load (a moved class, memory, ...)."""


#: What :func:`load_newest_checkpoint` raises for a checkpoint that cannot be used, each with a
#: message naming the file: what a command line catches and prints as one line.
CHECKPOINT_LOAD_ERRORS = (
    CheckpointLoadError, DamagedCheckpointError, UnsafeCheckpointError, FileNotFoundError,
)  # fmt: skip


# What a checkpoint may hold, by the name pickle stores. Functions (and anything not a class)
# must be listed one by one; classes may also come from the modules in ALLOWED_CLASS_MODULES.
ALLOWED_GLOBALS = frozenset(
    {
        ("builtins", name)
        for name in ("set", "frozenset", "slice", "range", "complex", "bytearray", "object")
    }
    | {
        ("collections", "OrderedDict"), ("collections", "defaultdict"), ("collections", "deque"),
        ("functools", "partial"), ("copyreg", "_reconstructor"), ("_codecs", "encode"),
        ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_parameter"), ("torch", "device"), ("torch", "Size"),
        ("numpy", "dtype"), ("numpy", "ndarray"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random.bit_generator", "SeedSequence"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        ("mujoco._structs", "MjModel"), ("mujoco._structs", "MjData"),
        ("qmp_envs.registration", "_make_sub_env"), ("qmp_envs.suites", "suite_facts"),
    }
)  # fmt: skip
# Modules whose classes a checkpoint may hold: our own packages, env state (Gymnasium's spaces,
# vector envs and wrappers, Meta-World's envs), numpy's dtypes and bit generators, torch dtypes.
ALLOWED_CLASS_MODULES = (
    "qmp_envs", "qmp_wrappers", "qmp_harness", "cleanrl_qmp",
    "gymnasium.spaces", "gymnasium.vector", "gymnasium.wrappers", "gymnasium.envs.registration",
    "gymnasium.envs.mujoco", "gymnasium.utils.ezpickle", "metaworld.envs",
    "numpy.dtypes", "numpy.random",
)  # fmt: skip


#: Modules that moved, by the name a checkpoint written before the move stores -> where they live
#: now: the run harness left the scripts' package ``cleanrl_qmp`` for ``qmp_harness``, and a
#: checkpoint written by the older layout names its classes under the old path.
MOVED_MODULES = {
    f"cleanrl_qmp.{name}": f"qmp_harness.{name}"
    for name in (
        "config", "harness", "checkpoints", "run_files", "run_logging", "run_memory",
        "run_plots", "float_profile", "tasks",
    )
}  # fmt: skip


def current_module(module: str) -> str:
    """Where a module a checkpoint names lives today (:data:`MOVED_MODULES`).

    >>> current_module("cleanrl_qmp.tasks"), current_module("cleanrl_qmp.networks")
    ('qmp_harness.tasks', 'cleanrl_qmp.networks')
    """
    return MOVED_MODULES.get(module, module)


def _in_modules(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


class _CheckpointUnpickler(pickle.Unpickler):
    """Resolves only the globals a checkpoint really holds (:data:`ALLOWED_GLOBALS`, classes of
    :data:`ALLOWED_CLASS_MODULES`, torch's dtypes), so a crafted file cannot name ``os.system``
    or ``builtins.eval``; loads objects of classes a training script defined as ``__main__``
    (older checkpoints stored the script's ``Args``) as plain attribute holders, and classes of
    a module that moved (:data:`MOVED_MODULES`) from where they live now."""

    def find_class(self, module: str, name: str):
        module = current_module(module)  # a checkpoint written before the harness moved
        if module == "__main__" and name.endswith("Args"):
            found = getattr(sys.modules["__main__"], name, None)
            if isinstance(found, type):
                return found
            return type(name, (), {"__module__": "__main__"})
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module == "torch":  # dtypes (torch.float32) and legacy storage classes only
            import torch

            found = super().find_class(module, name)
            if isinstance(found, torch.dtype) or (
                isinstance(found, type) and name.endswith("Storage")
            ):
                return found
        elif _in_modules(module, ALLOWED_CLASS_MODULES):
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise UnsafeCheckpointError(
            f"refusing {module}.{name}: a checkpoint holds only arrays, tensors, Gymnasium/"
            "MuJoCo/Meta-World env state and this toolkit's classes (see "
            "qmp_harness.checkpoints.ALLOWED_GLOBALS)"
        )


class _CheckpointPickleModule:
    Unpickler = _CheckpointUnpickler
    load = staticmethod(pickle.load)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint in any process, not only in the script that wrote it.

    Unpickling is restricted to what a checkpoint holds (:class:`_CheckpointUnpickler`): a file
    naming anything else raises :class:`UnsafeCheckpointError` naming the global and the file.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    # torch.load does not check the archive's CRCs: a flipped bit would load as a wrong value.
    # Reading every member once costs about a tenth of the load.
    damage = archive_damage(path)
    if damage is not None:
        raise DamagedCheckpointError(f"checkpoint {path} is damaged: {damage}")
    try:
        return torch.load(path, weights_only=False, pickle_module=_CheckpointPickleModule)
    except UnsafeCheckpointError as error:
        raise UnsafeCheckpointError(f"{path}: {error}") from None


def archive_damage(path: Path) -> str | None:
    """Why the zip archive at ``path`` is damaged (incomplete, a member failing its CRC-32),
    else None; an I/O error other than damage (permissions) propagates."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()  # reads every member and checks its CRC-32
    except (zipfile.BadZipFile, EOFError) as bad:
        return f"not a complete zip archive ({bad})"
    except zipfile.LargeZipFile as bad:
        return f"unreadable zip archive ({bad})"
    if bad_member is not None:
        return f"member {bad_member} fails its CRC-32 check"
    return None


def file_damage(path: Path, error: BaseException) -> str | None:
    """Why ``path`` is damaged as a file, given the error loading it raised; None when the file
    is intact and the error has another cause (a moved class, memory, a refused global)."""
    if isinstance(error, DamagedCheckpointError):
        return str(error).split(" is damaged: ", 1)[-1]
    if isinstance(error, UnsafeCheckpointError | MemoryError | ImportError | AttributeError):
        return None
    if isinstance(error, pickle.UnpicklingError | EOFError) or (
        isinstance(error, RuntimeError) and "PytorchStreamReader" in str(error)
    ):
        return f"unreadable pickle ({type(error).__name__}: {error})"
    return None


def load_newest_checkpoint(
    path: str | Path, report: Callable[[str], None] = print
) -> tuple[Path, dict]:
    """Load ``path``, or, if it (a file) does not load, the newest older checkpoint of its run
    that does; a run folder or its ``checkpoints/`` folder loads its newest loadable checkpoint.

    Checkpoints damaged as files (truncated, failing a CRC, an unreadable pickle) are set aside
    (see :func:`set_aside`) if they are a run's (:func:`is_run_checkpoint`); a damaged file of
    any other name or place raises :class:`DamagedCheckpointError` and is not touched. Any other
    failure stops with :class:`CheckpointLoadError` (or
    :class:`UnsafeCheckpointError`) and leaves the file in place. Raises ``FileNotFoundError``
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
        except UnsafeCheckpointError:
            raise
        except Exception as error:  # noqa: BLE001 - classified below: damaged file or not
            damage = file_damage(candidate, error)
            if damage is None:
                raise CheckpointLoadError(
                    f"{candidate} did not load ({type(error).__name__}: {error}); the file is "
                    "intact, so it was left in place and no older checkpoint was tried"
                ) from error
            if not is_run_checkpoint(candidate):  # not ours to rename: someone else's file
                raise DamagedCheckpointError(
                    f"{candidate} is not a readable checkpoint ({damage}); it is not one of a "
                    "run's checkpoints (<run>/checkpoints/step_<N>.pt), so it was left as it is"
                ) from error
            set_aside(candidate, damage, report)
    raise FileNotFoundError(f"no loadable checkpoint in {folder}")


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def seed_everything(seed: int, torch_deterministic: bool = True) -> None:
    import torch  # here: the results driver reads checkpoints' names without importing torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = torch_deterministic
