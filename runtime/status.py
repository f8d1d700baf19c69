"""``rsi status``: what a project serves, read from its ledger and files without importing
the code generator, the schema or the model, so that the command answers at once.

The state file's version is the committed one when its bytes are committed (the usual case);
only a file that differs from every committed state is validated, to name its problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codegen.errors import StateError
from codegen.fsutil import read_state_file
from codegen.locking import check_state_path
from runtime.ledger import Ledger

__all__ = ["StatusReport", "status_of", "shown_manifest"]


@dataclass(frozen=True)
class StatusReport:
    """Result of ``rsi status``."""

    active_build: str | None
    state_version: int | None
    tier: str | None
    state_file_version: int | None
    state_file_committed: bool
    #: The version number the file's bytes say, when they are a save that watch mode
    #: committed as ``state_file_version`` (renumbered); None otherwise.
    state_file_saved_as: int | None
    history: list[int]
    state_file_problem: str | None  # why the state file could not be read, if it could not
    active_version_builds: list[str]  # every build recorded for the active version
    rollback_target: int | None  # what `rsi rollback` would restore


def status_of(state_path: Path, ledger: Ledger) -> StatusReport:
    """The status of the project of ``state_path`` whose history is ``ledger``.

    A state file that cannot be read is an error for a project never built, and is reported
    (``state_file_problem``) for one that has a history.
    """
    active = ledger.active()  # reading creates nothing, wherever the path points
    problem: str | None = None
    try:
        check_state_path(state_path, must_exist=True)
        data = read_state_file(state_path)
        file_version = ledger.committed_version(data)
        committed = file_version is not None
        saved_as = _saved_version(data) if committed else None
        if file_version is None:
            file_version = _validated_version(data, state_path.name)
    except StateError as exc:
        if active is None:
            raise
        file_version, committed, saved_as, problem = None, False, None, str(exc)
    target = ledger.rollback_target() if active else None
    return StatusReport(
        active_build=active.build_id if active else None,
        state_version=active.version if active else None,
        tier=active.tier if active else None,
        state_file_version=file_version,
        state_file_committed=committed,
        state_file_saved_as=saved_as if saved_as != file_version else None,
        history=ledger.versions(),
        state_file_problem=problem,
        active_version_builds=[b.build_id for b in ledger.builds(active.version)] if active else [],
        rollback_target=target.version if target else None,
    )


def shown_manifest(build_dir: Path) -> dict[str, Any] | None:
    """A build's ``manifest.json`` as plain data, to show (never to import anything by), or
    None when it cannot be read."""
    try:
        found = json.loads((build_dir / "manifest.json").read_bytes())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _validated_version(data: bytes, source: str) -> int:
    from codegen.state import parse_state  # the schema (pydantic): only for an edited file

    return parse_state(data, source).version


def _saved_version(data: bytes) -> int | None:
    """The ``version`` a committed state file's bytes say (they passed the schema once)."""
    found = json.loads(data).get("version")
    return found if isinstance(found, int) else None
