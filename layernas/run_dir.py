"""The run folder: one process at a time, and files that are either old or new, never half.

* :func:`write_atomic` writes a whole file so that a kill (or a power loss) at any instant
  leaves either the previous file or the new one: write a temporary file beside it, fsync
  it, rename it over the old one, then fsync the folder.
* :class:`RunLock` is an exclusive lock on a run folder (a :mod:`filelock` lock on
  ``.layernas.lock``), held for the whole run. A second process that tries to use the
  folder gets a one-line :class:`~layernas.run.RunError`, ``<dir> is in use by PID <pid>``.
  The lock is re-entrant inside one process, so the CLI, :func:`layernas.search` and the
  run loop can each hold it.
* :func:`remove_stale_tmp` removes the temporary files a killed process left behind
  (only call it while holding the lock).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from layernas.run_dir import RunLock, write_atomic
    >>> folder = Path(tempfile.mkdtemp())
    >>> with RunLock(folder):
    ...     write_atomic(folder / "result.json", '{"best": null}\\n')
    >>> (folder / "result.json").read_text()
    '{"best": null}\\n'
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_UMASK = os.umask(0o022)
os.umask(_UMASK)   # read once: mkstemp makes 0600 files, written files get the usual mode
LOCK_NAME = ".layernas.lock"
PID_NAME = ".layernas.pid"
TMP_SUFFIX = ".tmp"


class RunError(ValueError):
    """A run that cannot start or resume (bad budget, folder in use, unreadable or
    mismatched checkpoint). Re-exported as ``layernas.RunError``."""


class FolderInUse(RunError):
    """Another process holds the run folder's lock."""


def fsync_dir(folder: str | Path) -> None:
    """fsync a folder, so that a rename or a new file inside it survives a power loss."""
    fd = os.open(str(folder), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` atomically: write, fsync, rename, fsync the folder.

    Args:
      path: the file to write; its folder must exist.
      data: the whole new content (str is written as UTF-8).
    Raises:
      OSError: naming ``path`` (for example a full disk); the old file is then untouched
        and no temporary file is left behind.
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and str(path) not in str(e):
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: str | Path, obj: Any, **dumps) -> None:
    """:func:`write_atomic` of ``json.dumps(obj, **dumps)`` (compact by default)."""
    dumps.setdefault("separators", (",", ":"))
    write_atomic(path, json.dumps(obj, **dumps))


def remove_stale_tmp(folder: str | Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files that a killed writer left in ``folder``.

    Only safe while holding the folder's :class:`RunLock` (no one else is writing).

    Returns:
      the files removed.
    """
    removed = []
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


def is_bookkeeping(path: Path) -> bool:
    """Whether a file in a run folder is the lock's or a stale temporary file (not data)."""
    return path.name in (LOCK_NAME, PID_NAME) or (path.name.startswith(".") and path.name.endswith(TMP_SUFFIX))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_HELD: dict[str, list] = {}   # resolved folder -> [filelock, depth]
_HELD_GUARD = threading.Lock()


class RunLock:
    """An exclusive, re-entrant (within this process) lock on a run folder.

    Args:
      folder: the run folder; created if missing.

    Raises (on entering):
      FolderInUse: another process holds it: ``"<folder> is in use by PID <pid>"``.
      RunError: ``folder`` is a file.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with RunLock(folder), RunLock(folder):   # re-entrant in one process
        ...     pass
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def __enter__(self) -> "RunLock":
        import filelock

        if self.folder.exists() and not self.folder.is_dir():
            raise RunError(f"output path {self.folder} exists and is not a directory")
        self.folder.mkdir(parents=True, exist_ok=True)
        key = str(self.folder.resolve())
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is not None:
                held[1] += 1
                return self
            lock = filelock.FileLock(str(self.folder / LOCK_NAME), timeout=0)
            try:
                lock.acquire()
            except filelock.Timeout:
                raise FolderInUse(f"{self.folder} is in use by PID {self._holder()}") from None
            try:
                write_atomic(self.folder / PID_NAME, f"{os.getpid()}\n")
            except BaseException:
                lock.release()
                raise
            _HELD[key] = [lock, 1]
        return self

    def __exit__(self, *exc) -> None:
        key = str(self.folder.resolve())
        with _HELD_GUARD:
            held = _HELD[key]
            held[1] -= 1
            if held[1] > 0:
                return
            del _HELD[key]
            try:
                (self.folder / PID_NAME).unlink()
            except FileNotFoundError:
                pass
            held[0].release()

    def _holder(self) -> str:
        """The holder's PID as written in the folder (it may take the holder a moment)."""
        deadline = time.monotonic() + 2.0
        while True:
            try:
                pid = int((self.folder / PID_NAME).read_text().strip())
                if pid != os.getpid() and _pid_alive(pid):
                    return str(pid)
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                return "unknown (another process)"
            time.sleep(0.01)
