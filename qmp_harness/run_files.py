"""Files of a run folder that must survive kills and concurrent processes.

Every file a run or the results driver rewrites goes through :func:`atomic_write_text` (write a
temporary file beside it, flush it to disk, rename it over the old one), so a kill at any moment
leaves either the old or the new file, never a truncated one. :class:`RunFolderLock` is an OS
file lock (``flock``) on ``<run folder>/.lock``: the kernel releases it when the holder dies,
so a crashed run never blocks its folder, and two processes can never train in one folder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path

TMP_SUFFIX = ".tmp"

# What a training run writes in its folder, the finished marker first (so a folder whose run is
# being moved aside never looks finished); besides these, TensorBoard's event files.
RUN_FILE_NAMES = (
    "timing.json", "args.json", "metrics.csv", "selection.jsonl", "provenance.jsonl",
    "checkpoints", "videos", "wandb_id", "wandb",
)  # fmt: skip
RUN_FOLDERS = ("checkpoints", "videos", "wandb")
EVENT_FILES = "events.out.tfevents.*"
# The suffix of a run moved aside by --overwrite: ``<run folder>.replaced-<UTC time>``.
REPLACED_SUFFIX = ".replaced-"

# Exit status of a script whose run folder another process holds (EX_TEMPFAIL): the results
# driver reports the run as busy instead of failed.
EXIT_RUN_FOLDER_BUSY = 75
# Exit status of a script that could not write a run file (EX_IOERR): a full disk, a file-size
# limit. Its previous checkpoints are intact, so the run resumes once there is room.
EXIT_WRITE_FAILED = 74


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: ``<name>.tmp`` beside it."""
    return path.with_name(path.name + TMP_SUFFIX)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_temporary(tmp: Path, path: Path) -> None:
    """Rename a fully written temporary file over ``path`` (durably: file and folder synced)."""
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    _fsync_directory(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path``'s content with ``text`` so readers see the old or the new file only.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "timing.json"
    >>> atomic_write_text(path, '{"env_steps": 600}')
    >>> path.read_text(), sorted(p.name for p in path.parent.iterdir())
    ('{"env_steps": 600}', ['timing.json'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    with tmp.open("w", newline="") as f:
        f.write(text)
    commit_temporary(tmp, path)


def write_failure(path: Path, error: BaseException) -> str:
    """Why writing ``path`` (the file being written, still in place) failed, in words: the disk
    full, a file-size limit, a quota, or else the error itself. Torch reports either of the
    first two only as ``basic_ios::clear: iostream error``, so they are recognised by the state
    they leave: a file at the size limit, or no space left."""
    code = error.errno if isinstance(error, OSError) else None
    try:
        size: int | None = Path(path).stat().st_size
    except OSError:
        size = None
    try:
        free: int | None = shutil.disk_usage(Path(path).parent).free
    except OSError:
        free = None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    at_limit = limit != resource.RLIM_INFINITY and size is not None and size >= limit
    if code == errno.EFBIG or (code is None and at_limit):
        return f"the file-size limit (ulimit -f) of {limit} bytes was reached"
    if code == errno.ENOSPC or (code is None and free is not None and free < 16 * 2**20):
        return f"the disk holding {Path(path).parent} is full ({free} bytes free)"
    if code == errno.EDQUOT:
        return f"the disk quota of {Path(path).parent} is used up"
    return f"{type(error).__name__}: {error}"


def files_of_a_run(run_dir: str | Path) -> list[Path]:
    """What a training run wrote in ``run_dir`` (``timing.json`` first); [] when it holds none.

    The driver's ``train.log`` and the ``.lock`` file belong to the folder, not to a run, and an
    empty ``checkpoints/`` folder holds nothing.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "train.log").write_text("$ ..."); (folder / "checkpoints").mkdir()
    5
    >>> files_of_a_run(folder)
    []
    >>> (folder / "metrics.csv").write_text(""); [p.name for p in files_of_a_run(folder)]
    0
    ['metrics.csv']
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        return []
    found = [folder / name for name in RUN_FILE_NAMES if os.path.lexists(folder / name)]
    found += sorted(folder.glob(EVENT_FILES))
    return [p for p in found if not (p.name in RUN_FOLDERS and _empty_folder(p))]


def _empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def entries_not_files(run_dir: str | Path) -> list[str]:
    """Run files of ``run_dir`` that exist but are not regular files (a folder named
    ``timing.json``): a run could neither be judged finished nor finish writing them."""
    names = [n for n in RUN_FILE_NAMES if n not in RUN_FOLDERS]
    return [
        f"{Path(run_dir) / name} is not a regular file"
        for name in names
        if os.path.lexists(Path(run_dir) / name) and not (Path(run_dir) / name).is_file()
    ]


def move_run_aside(run_dir: str | Path) -> Path:
    """Move the run in ``run_dir`` (its :func:`files_of_a_run`) into a new sibling folder
    ``<name>.replaced-<UTC time>`` and return it; nothing is deleted. The folder itself, its
    lock and the driver's ``train.log`` stay, so a lock holder keeps its lock."""
    folder = Path(run_dir)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = folder.with_name(f"{folder.name}{REPLACED_SUFFIX}{stamp}")
    number = 1
    while os.path.lexists(target):
        number += 1
        target = folder.with_name(f"{folder.name}{REPLACED_SUFFIX}{stamp}-{number}")
    target.mkdir()
    for path in files_of_a_run(folder):  # timing.json first: never a half-moved "finished" run
        path.rename(target / path.name)
    _fsync_directory(folder)
    _fsync_directory(target)
    return target


def folder_creation_problem(folder: str | Path) -> str | None:
    """Why a run could not make (or write in) ``folder``, found without writing anything: the
    path, or a folder above it, is a file; no permission; a read-only file system. ``None``
    when nothing is in the way (the kernel may still refuse at the first write, e.g. under
    ``/proc``; that write names the folder too).

    >>> folder_creation_problem("/etc/hostname/run") is not None
    True
    """
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        return f"{folder} exists and is not a folder"
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder, so {folder} cannot be made in it"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no permission to write in {existing}"
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        return f"{existing} is on a read-only file system"
    return None


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete ``*.tmp`` files a killed writer left in ``folder`` (not recursive); call it only
    while holding the folder's lock. Returns what was deleted."""
    stale = sorted(Path(folder).glob(f"*{TMP_SUFFIX}")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder's lock."""


class RunFolderLock:
    """Exclusive, non-blocking OS lock on a run folder, held until :meth:`release` or exit.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> first = RunFolderLock(folder).acquire()
    >>> RunFolderLock(folder).acquire()
    Traceback (most recent call last):
    ...
    qmp_harness.run_files.RunFolderBusy: run folder ... is in use by another process (pid ...)
    >>> first.release(); RunFolderLock(folder).acquire().release()
    """

    FILE_NAME = ".lock"

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / self.FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> RunFolderLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderBusy(
                f"run folder {self.run_dir} is in use by another process (pid {holder})"
            ) from None
        # The holder's pid, for the message above; the lock itself is the flock, not this text.
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def folder_is_busy(run_dir: str | Path) -> bool:
    """Whether another process holds ``run_dir``'s lock right now (a probe: takes and drops it)."""
    if not (Path(run_dir) / RunFolderLock.FILE_NAME).exists():
        return False
    try:
        RunFolderLock(run_dir).acquire().release()
    except RunFolderBusy:
        return True
    return False


def finished_steps(run_dir: Path, say: Callable[[str], None] = print) -> int | None:
    """The env steps ``timing.json`` (written after the final evaluation and checkpoint) says
    the run finished at; None when absent, or when it is not a file or holds no step count
    (reported with its path: the run then counts as unfinished)."""
    timing = run_dir / "timing.json"
    if not os.path.lexists(timing):
        return None
    if not timing.is_file():
        say(f"{timing} is not a file; the run counts as unfinished")
        return None
    try:
        steps = json.loads(timing.read_text())["env_steps"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        say(f"{timing} is damaged ({type(error).__name__}); the run resumes")
        return None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        say(f"{timing} is damaged (env_steps {steps!r} is not a step count); the run resumes")
        return None
    return steps


def is_finished(run_dir: Path, total_timesteps: int, say: Callable[[str], None] = print) -> bool:
    """Finished when ``timing.json`` says the run reached ``total_timesteps``."""
    steps = finished_steps(run_dir, say)
    return steps is not None and steps >= total_timesteps
