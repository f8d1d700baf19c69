"""The project lock: one writer of a project's state, history and active build at a time.

An ``fcntl.flock`` on ``<state>.lock`` serializes processes; a per-path ``RLock`` makes the
lock re-entrant inside one process (a promotion that saves the state while holding it).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from codegen.errors import LockTimeout, RSIError

__all__ = ["project_lock", "lock_path_for", "LockError"]

_POLL_S = 0.02
_registry_guard = threading.Lock()
_held: dict[Path, tuple[threading.RLock, list[int]]] = {}


class LockError(RSIError):
    """The lock file cannot be opened (a symlink in its place, a read-only directory)."""


def lock_path_for(state_path: Path) -> Path:
    """The lock file that guards ``state_path`` and everything kept beside it."""
    return state_path.with_name(state_path.name + ".lock")


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
    """Hold the project lock of ``state_path``; raise :class:`LockTimeout` after ``timeout_s``."""
    path = lock_path_for(state_path.resolve())
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


def _acquire_file(path: Path, timeout_s: float) -> int:
    # O_NOFOLLOW: the lock file is truncated and written below, so a symlink planted in its
    # place must not redirect that to another file.
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise LockError(f"{path.name}: cannot open the lock file: {exc.strerror}") from None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LockTimeout(
                    f"{path.name}: held by {_holder(path)}; gave up after {timeout_s:g} s "
                    "(retry when it finishes, or raise --lock-timeout)"
                ) from None
            time.sleep(_POLL_S)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd
