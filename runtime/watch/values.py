"""Watch mode's values: settings, outcomes and the history of outcomes."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from codegen.errors import RSIError
from codegen.toolchain import CompileSettings
from runtime.gate import GateSettings
from runtime.loader import LoadedBuild

__all__ = [
    "DEFAULT_DEBOUNCE_MS",
    "DEFAULT_MAX_WAIT_MS",
    "DEFAULT_RESCAN_MS",
    "BAD",
    "History",
    "OnEvent",
    "OnSwap",
    "Outcome",
    "StateFileLock",
    "StopEvent",
    "WatchError",
    "WatchEvent",
    "WatchLock",
    "WatchSettings",
]

logger = logging.getLogger(__name__)

#: Quiet window: an editor's save is a burst of events within a millisecond or two (vim:
#: backup, write, rename); 40 ms also merges a few quick saves while costing little latency.
DEFAULT_DEBOUNCE_MS = 40.0
#: A file rewritten without pause is still judged this long after its first event.
DEFAULT_MAX_WAIT_MS = 400.0
#: Content-hash rescan: catches what the observer missed (queue overflow, a dead observer).
DEFAULT_RESCAN_MS = 1000.0


class StopEvent(Protocol):
    """What stops the loop (``threading.Event`` fits)."""

    def is_set(self) -> bool:
        """True once the loop should stop."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or ``timeout`` seconds passed; return :meth:`is_set`."""
        ...


class WatchError(RSIError):
    """The project cannot be watched (another watcher holds it), or no longer (its watch
    lock was deleted)."""


class StateFileLock:
    """A ``flock`` on the watched state file's inode, whatever its name (a hard link of a
    watched file is refused). An editor's save by rename makes a new inode: :meth:`follow`
    moves the lock to it (the watcher calls it for every change it judges)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd  # -1: no state file yet

    def follow(self, state_path: Path) -> None:
        """Hold the lock on the inode ``state_path`` names now, if it is another one."""
        try:
            now = os.stat(state_path, follow_symlinks=False)
        except OSError:
            return  # gone for the moment (mid-save): followed at the next change
        if self.fd >= 0 and _same_file(now, os.fstat(self.fd)):
            return
        try:
            fd = os.open(state_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            logger.warning(
                "%s: another watcher holds the saved file (a hard link of it)", state_path.name
            )
            return
        self.release()
        self.fd = fd

    def release(self) -> None:
        """Close the lock's descriptor (the watcher ends, or the lock moves)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@dataclass(frozen=True)
class WatchLock:
    """The watcher's single-instance lock: ``fd`` holds a ``flock`` on ``path``
    (``.rsi/<state>/watch.lock``, beside the ledger), and ``state_file`` one on the state
    file itself, so that a hard link of it (another name, so another ledger and lock file) is
    not watched by a second watcher meanwhile.

    Deleting the folder (``rm -rf .rsi``) deletes the history the watcher judges against,
    and would let a second watcher take a new lock file: the watcher notices (:meth:`held`,
    checked every 50 ms while it waits, and before it writes the ledger), writes nothing
    more and stops with one line (:meth:`lost`). Whoever starts ``rsi watch`` again starts
    a new history.
    """

    path: Path
    fd: int
    state_file: StateFileLock

    def release(self) -> None:
        """Close both locks' descriptors (the watcher ends)."""
        os.close(self.fd)
        self.state_file.release()

    def held(self) -> bool:
        """True while ``path`` is still the file ``fd`` locks."""
        try:
            on_disk = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        mine = os.fstat(self.fd)
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

    def check(self) -> None:
        """Raise :meth:`lost` unless the lock is :meth:`held`."""
        if not self.held():
            raise self.lost()

    def lost(self) -> WatchError:
        """The one-line error the watcher stops with once its lock is gone."""
        state = self.path.parent.name
        return WatchError(
            f"{state}: {self.path.parent.parent.name}/{state} (the ledger and the watch lock) "
            "was deleted while watching; the watcher stopped rather than start a new history "
            "behind it; run rsi watch again to start one"
        )


class Outcome(StrEnum):
    """What became of one change."""

    PURE_LIVE = "pure-live"  # gate passed; the pure-Python tier serves
    COMPILED_LIVE = "compiled-live"  # the compiled tier replaced it, both tiers agreeing
    REFUSED = "refused"  # invalid state: last good build serving, file untouched
    ROLLED_BACK = "rolled-back"  # worse: last good serving, file restored, content kept
    BUILD_FAILED = "build-failed"  # template, check or compiler error: last good serving
    TIER_MISMATCH = "tier-mismatch"  # compiled tier disagreed: the pure tier keeps serving
    FOLLOWED = "followed"  # another command (rollback, promote, build) activated a build


#: Outcomes logged as warnings.
BAD = (Outcome.REFUSED, Outcome.ROLLED_BACK, Outcome.BUILD_FAILED, Outcome.TIER_MISMATCH)


@dataclass(frozen=True)
class WatchEvent:
    """One entry of the watcher's history. Times are ``time.monotonic()`` seconds."""

    outcome: Outcome
    message: str  # one line
    serving: str  # build id serving after this event
    state_sha256: str  # the state bytes judged (as saved in the file)
    version: int | None  # the version committed (or judged) for them
    changed_at: float  # first file event of the change (the rescan time if none was seen)
    at: float  # of the outcome; for a build going live, of its swap into the hot slot
    gate: str = ""  # "screen", "promote" or "evaluate" when the gate ran
    waived: tuple[str, ...] = ()

    @property
    def seconds(self) -> float:
        """From the first file event to this outcome."""
        return self.at - self.changed_at


@dataclass(frozen=True)
class WatchSettings:
    """How the watcher debounces, compiles and gates."""

    debounce_ms: float = DEFAULT_DEBOUNCE_MS
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    rescan_ms: float = DEFAULT_RESCAN_MS
    poll: bool = False  # PollingObserver, for file systems without change events
    poll_interval_ms: float = 100.0
    #: Compiled tier: always in worker processes (``worker_nice=0``: not reniced; on a
    #: machine shared with other compiles a positive niceness starves the compile itself).
    compile: CompileSettings = field(default_factory=lambda: CompileSettings(worker_nice=0))
    data: Path | None = None  # bAbI directory the gate evaluates on; None: generated stories
    seed: int = 0
    gate: GateSettings = field(default_factory=GateSettings)
    #: Judge coefficient, weight and routing edits with the screener on raw expert evidence
    #: (collected at start-up); ``False`` sends every state edit through ``promote``.
    screen: bool = True


OnSwap = Callable[[LoadedBuild], None]
OnEvent = Callable[[WatchEvent], None]


class History:
    """Append-only outcomes, with waiting for a count (tests, the bench)."""

    def __init__(self, on_event: OnEvent | None) -> None:
        self._events: list[WatchEvent] = []
        self._cond = threading.Condition()
        self._on_event = on_event

    def add(self, event: WatchEvent) -> None:
        """Log ``event``, append it and pass it to ``on_event``."""
        log = logger.warning if event.outcome in BAD else logger.info
        log("%s: %s", event.outcome, event.message)
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()
        if self._on_event is not None:
            self._on_event(event)

    def snapshot(self) -> tuple[WatchEvent, ...]:
        """Every event so far, oldest first."""
        with self._cond:
            return tuple(self._events)

    def wait_for(self, count: int, timeout_s: float) -> tuple[WatchEvent, ...]:
        """Block until ``count`` events or ``timeout_s`` passed; return them."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._events) >= count, timeout_s)
            return tuple(self._events)
