"""What every step of the watcher shares: the served project, its settings and history."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from codegen.errors import RSIError
from codegen.state import RSIState, parse_state, state_sha256
from runtime.live import LiveProject
from runtime.loader import LoadedBuild
from runtime.project import Project
from runtime.watch.values import (
    History,
    OnSwap,
    Outcome,
    WatchEvent,
    WatchLock,
    WatchSettings,
)

__all__ = ["Good", "WatchContext"]


@dataclass(frozen=True)
class Good:
    """A state as judged: what serves once it passed, what a rejected edit is restored to."""

    data: bytes  # the state's bytes as committed (its version newer than the ledger's)
    state: RSIState
    templates: str  # template digest it was built with
    saved: bytes  # the state file's bytes the person saved (``data`` unless renumbered)


@dataclass(frozen=True)
class WatchContext:
    """The watcher's fixed parts; ``swap_lock`` orders pure-tier and compiled-tier swaps;
    ``lock`` is the single-instance lock, checked before each write to the ledger."""

    live: LiveProject
    settings: WatchSettings
    template_dir: Path
    history: History
    on_swap: OnSwap | None
    swap_lock: threading.Lock
    lock: WatchLock

    @property
    def project(self) -> Project:
        """The watched project."""
        return self.live.project

    def swapped(self, build: LoadedBuild) -> None:
        """Tell ``on_swap`` that ``build`` went live."""
        if self.on_swap is not None:
            self.on_swap(build)

    def record(
        self,
        outcome: Outcome,
        message: str,
        saved: bytes,
        build: LoadedBuild | None,
        changed_at: float,
        *,
        version: int | None = None,
        gate: str = "",
        waived: tuple[str, ...] = (),
        at: float | None = None,
    ) -> None:
        """Add an outcome for the ``saved`` bytes to the history and the ledger's events."""
        serving = build.build_id if build is not None else self.live.current().build_id
        if version is None:
            try:
                version = parse_state(saved).version
            except RSIError:
                version = None
        event = WatchEvent(
            outcome,
            message,
            serving,
            state_sha256(saved),
            version,
            changed_at,
            time.monotonic() if at is None else at,
            gate,
            waived,
        )
        self.history.add(event)
        if not self.lock.held():
            return  # the ledger was deleted: never start a new one behind the person's back
        self.project.ledger.event(
            f"watch-{outcome}",
            {"message": message, "serving": serving, "sha256": event.state_sha256},
        )
