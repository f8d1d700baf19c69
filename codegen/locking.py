"""The project lock: one writer of a project's state, history and active build at a time.

An ``fcntl.flock`` on ``<state>.lock`` serializes processes; a per-path ``RLock`` makes the
lock re-entrant inside one process (a promotion that saves the state while holding it).
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from codegen.errors import LockTimeout, RSIError, StateError

__all__ = [
    "project_lock",
    "builds_lock",
    "lock_path_for",
    "check_state_path",
    "rejected_path",
    "REJECTED_SUFFIX",
    "LockError",
]

_POLL_S = 0.02
_registry_guard = threading.Lock()
_held: dict[Path, tuple[threading.RLock, list[int]]] = {}


class LockError(RSIError):
    """The lock file cannot be opened (a symlink in its place, a read-only directory)."""


def lock_path_for(state_path: Path) -> Path:
    """The lock file that guards ``state_path`` and everything kept beside it."""
    return state_path.with_name(state_path.name + ".lock")


#: Names of the files ``.rsi/`` keeps for every state file of a directory; a state file's own
#: history is ``.rsi/<state file name>/``, so a state file may not take one of these names.
RESERVED_NAMES = frozenset({"builds.lock", "ledger.sqlite3"})
#: A candidate the gate did not promote is kept beside its state file under this suffix.
REJECTED_SUFFIX = ".rejected.json"


def rejected_path(state_path: Path) -> Path:
    """Where a candidate that was not promoted is kept: ``m.json`` -> ``m.rejected.json``,
    ``m.txt`` -> ``m.txt.rejected.json`` (so two state files never share one)."""
    name = state_path.name
    base = name.removesuffix(".json") if name.endswith(".json") else name
    return state_path.with_name(base + REJECTED_SUFFIX)


def check_state_path(state_path: Path, *, must_exist: bool) -> Path:
    """``state_path`` made absolute, or :class:`StateError` before anything touches the disk.

    The lock, ``.rsi/`` and ``generated/`` are created beside the state file, so its path
    must name a regular file (or, unless ``must_exist``, nothing yet) in an existing
    directory: never a symlink (its target's directory is not the project's), a directory
    (``--state .`` would put them one level up) or a name such as ``''`` or ``/``.
    """
    raw = str(state_path)
    if raw in ("", ".", "..", "/") or state_path.absolute().name in ("", ".", ".."):
        raise StateError(f"{raw!r}: not a state file path; give a file such as rsi_state.json")
    if state_path.name in RESERVED_NAMES:
        raise StateError(
            f"{state_path.name}: a name rsi keeps for itself in .rsi/; rename the state file"
        )
    if state_path.name.endswith(REJECTED_SUFFIX):
        raise StateError(
            f"{state_path.name}: a name rsi keeps for rejected candidates (the next rejection "
            "would overwrite it); copy it to another name to use it as a state file"
        )
    try:
        # The directory resolved (one project, one lock, however it is reached), the file not.
        path = state_path.absolute().parent.resolve() / state_path.name
        info = os.lstat(path)
    except FileNotFoundError:
        if must_exist:
            raise StateError(f"{path.name}: no such file ({path})") from None
        if not path.parent.is_dir():
            raise StateError(f"{path.name}: directory {path.parent} does not exist") from None
        return path
    except (OSError, RuntimeError) as exc:  # a loop or a non-directory among the parents
        why = exc.strerror if isinstance(exc, OSError) else "symlink loop"
        raise StateError(f"{state_path.name}: cannot inspect {state_path}: {why}") from None
    if stat.S_ISLNK(info.st_mode):
        raise StateError(f"{path.name}: is a symlink; rsi reads only regular files")
    if not stat.S_ISREG(info.st_mode):  # a directory, a FIFO, a device
        raise StateError(f"{path.name}: is not a regular file")
    return path


def _entry(path: Path) -> tuple[threading.RLock, list[int]]:
    with _registry_guard:
        if path not in _held:
            _held[path] = (threading.RLock(), [0, -1])  # depth, fd
        return _held[path]


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return "another process"
    return f"process {pid}" if pid.isdigit() else "another process"


@contextmanager
def project_lock(state_path: Path, *, timeout_s: float = 10.0) -> Iterator[None]:
    """Hold the project lock of ``state_path``; raise :class:`LockTimeout` after ``timeout_s``.

    The path is checked first (:func:`check_state_path`): a lock is only ever created beside
    a regular state file (or where a new one is about to be written), never at a link's target.
    """
    path = lock_path_for(check_state_path(state_path, must_exist=False))
    rlock, slot = _entry(path)
    if not rlock.acquire(timeout=timeout_s):
        raise LockTimeout(f"{path.name}: another thread held the lock for over {timeout_s:g} s")
    try:
        if slot[0] == 0:
            slot[1] = _acquire_file(path, timeout_s)
        slot[0] += 1
        try:
            yield
        finally:
            slot[0] -= 1
            if slot[0] == 0:
                fcntl.flock(slot[1], fcntl.LOCK_UN)
                os.close(slot[1])
                slot[1] = -1
    finally:
        rlock.release()


@contextmanager
def builds_lock(state_path: Path, *, exclusive: bool, timeout_s: float = 10.0) -> Iterator[None]:
    """Hold the lock on the builds shared by every state file of ``state_path``'s directory.

    Builds and rollbacks (which publish a build and then record it in their own history)
    hold it shared; ``gc`` (which deletes what no history records) holds it exclusive, so
    it never deletes a build another state file has published but not yet committed. The
    lock file is ``.rsi/builds.lock``; take it inside the project lock.
    """
    directory = check_state_path(state_path, must_exist=False).parent / ".rsi"
    try:
        directory.mkdir(exist_ok=True)
    except OSError as exc:
        raise LockError(f"{directory}: cannot create: {exc.strerror}") from None
    fd = _acquire_file(directory / "builds.lock", timeout_s, exclusive=exclusive)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _acquire_file(path: Path, timeout_s: float, *, exclusive: bool = True) -> int:
    # O_NOFOLLOW: the lock file is truncated and written below, so a symlink planted in its
    # place must not redirect that to another file.
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise LockError(f"{path.name}: cannot open the lock file: {exc.strerror}") from None
    deadline = time.monotonic() + timeout_s
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LockTimeout(
                    f"{path.name}: held by {_holder(path)}; gave up after {timeout_s:g} s "
                    "(retry when it finishes, or raise --lock-timeout)"
                ) from None
            time.sleep(_POLL_S)
            continue
        if not exclusive:
            return fd  # many holders: no single pid to record
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd
