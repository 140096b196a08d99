"""Files of a run folder that must survive kills and concurrent processes.

Every file a run or the results driver rewrites goes through :func:`atomic_write_text` (write a
temporary file beside it, flush it to disk, rename it over the old one), so a kill at any moment
leaves either the old or the new file, never a truncated one. :class:`RunFolderLock` is an OS
file lock (``flock``) on ``<run folder>/.lock``: the kernel releases it when the holder dies,
so a crashed run never blocks its folder, and two processes can never train in one folder.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

TMP_SUFFIX = ".tmp"

# Exit status of a script whose run folder another process holds (EX_TEMPFAIL): the results
# driver reports the run as busy instead of failed.
EXIT_RUN_FOLDER_BUSY = 75


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
    cleanrl_qmp.run_files.RunFolderBusy: run folder ... is in use by another process (pid ...)
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
