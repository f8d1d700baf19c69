"""In-flight pins: builds a running promotion (``rsi promote``, the loop, watch) is judging.

A candidate build is published in ``generated/`` before any ledger records it, and it is
evaluated and committed while this process holds no lock, so ``rsi gc`` in another process
would see a build nothing uses. A pin is a file ``.rsi/pins/<build id>.<pid>.<token>``
beside the state file (the directory whose ``generated/`` the build is in); gc keeps every
build pinned by a live process and removes the pins of dead ones (a killed promotion).

Order: a pin is taken while the builds lock is held shared (the build was published under
it), and gc reads the pins while it holds the builds lock exclusive, so a build is never
published and then deleted before its pin exists.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from codegen.fsutil import process_alive

__all__ = ["PINS_DIR", "pin", "pinned_builds", "pins_dir"]

logger = logging.getLogger(__name__)

#: Below the shared ``.rsi`` directory beside the state files.
PINS_DIR = "pins"


def pins_dir(state_path: Path) -> Path:
    """Where the pins of the builds beside ``state_path`` live."""
    return state_path.parent / ".rsi" / PINS_DIR


@contextmanager
def pin(state_path: Path, build_id: str) -> Iterator[Path]:
    """Pin ``build_id`` for this process until the block ends; yields the pin file.

    Take it while holding the builds lock (shared), right after the build is published.
    """
    directory = pins_dir(state_path)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{build_id}.{os.getpid()}.{secrets.token_hex(4)}"
    path.touch(exist_ok=False)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def pinned_builds(state_path: Path) -> set[str]:
    """Build ids pinned by live processes; pins of dead processes are removed.

    Call it holding the builds lock exclusive (as gc does), so no pin is taken meanwhile.
    """
    directory = pins_dir(state_path)
    live: set[str] = set()
    for path in directory.iterdir() if directory.is_dir() else []:
        build_id, _, rest = path.name.partition(".")
        pid = rest.partition(".")[0]
        if pid.isdigit() and process_alive(int(pid)):
            live.add(build_id)
        else:
            logger.info("removing the pin %s of a process that is gone", path.name)
            path.unlink(missing_ok=True)
    return live
