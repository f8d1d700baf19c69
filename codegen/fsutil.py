"""Files that appear whole or not at all: atomic writes and staging directories.

A build, a cache entry or the state file is written in full elsewhere on the same filesystem
and then renamed into place, so a reader (or a crash) never sees half of one.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from codegen.errors import StateError

__all__ = [
    "MAX_STATE_BYTES",
    "STAGING_PREFIX",
    "read_state_file",
    "atomic_write",
    "discard",
    "process_alive",
    "remove_stale_staging",
    "staging",
]

logger = logging.getLogger(__name__)

#: The largest state file read: a state is a few kilobytes; this bounds a hostile one.
MAX_STATE_BYTES = 1 << 20


def atomic_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so a reader sees the old bytes or the new, never a mix.

    The file keeps its permission bits (``mode`` when given; 0644 for a new file), not the
    0600 of the temp file it is renamed from.
    """
    if mode is None:
        try:
            mode = stat.S_IMODE(os.lstat(path).st_mode)
        except FileNotFoundError:
            mode = 0o644
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` (same subclass, same errno) naming ``path``, not the temp file behind it."""
    return OSError(exc.errno, exc.strerror, str(path))


def read_state_file(path: Path) -> bytes:
    """The bytes of ``path``; refuse anything that is not a small regular file."""
    name = path.name
    if path.is_symlink():
        raise StateError(f"{name}: is a symlink; rsi reads only regular files")
    if not path.exists():
        raise StateError(f"{name}: no such file ({path})")
    # Check the file we opened, not the path: it may be swapped between a check and the read
    # (O_NOFOLLOW refuses a symlink put in its place, O_NONBLOCK a FIFO that would block).
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise StateError(f"{name}: cannot open: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StateError(f"{name}: is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_STATE_BYTES + 1)  # bounded even if the file grows meanwhile
    if len(data) > MAX_STATE_BYTES:
        raise StateError(f"{name}: file is larger than the limit of {MAX_STATE_BYTES} bytes")
    return data


@contextmanager
def staging(cache_dir: Path) -> Iterator[Path]:
    """A temp dir inside ``cache_dir`` (same filesystem, so publishing is a rename).

    Its name carries the creating process's id, so a dir left by a killed process can be
    told from one still being filled (:func:`remove_stale_staging`).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=cache_dir))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


STAGING_PREFIX = ".tmp-"
_STAGING_NAME = re.compile(r"\.tmp-(?:(\d+)-)?")


def remove_stale_staging(root: Path) -> list[Path]:
    """Delete staging dirs in ``root`` whose creating process is gone; return them.

    A process killed mid-build leaves its staging dir behind (never a published build: only a
    rename publishes). Dirs of live processes are kept, since they may still be working.
    """
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for path in root.iterdir():
        match = _STAGING_NAME.match(path.name)
        if not match or (match.group(1) and process_alive(int(match.group(1)))):
            continue
        try:
            _remove(path)  # a discarded cache entry may have been a file or a symlink
        except OSError:
            continue  # another process removed it first, or it cannot be removed: left
        removed.append(path)
    if removed:
        logger.info("removed %d staging dirs left by killed processes in %s", len(removed), root)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def discard(path: Path) -> None:
    """Delete a build or cache entry so that a kill midway never leaves half of one.

    The rename takes it out of sight in one step; a kill during the delete leaves a staging
    dir of a dead process, which the next command removes.
    """
    doomed = path.with_name(f"{STAGING_PREFIX}{os.getpid()}-gc-{path.name}")
    os.rename(path, doomed)
    _remove(doomed)


def _remove(path: Path) -> None:
    """A dir's tree; a file, or a symlink itself (never what it points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
