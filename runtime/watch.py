"""Watch mode: the running model follows edits of its state file and templates, or refuses them.

A watchdog observer (or, with ``poll=True``, a polling one) watches the state file's
directory, keeping events whose source or destination is the state file's name, so every
way an editor saves is seen: an in-place write, a temp file renamed over it (``sed -i``,
most IDEs), vim's backup-and-rename; and it watches the template folder. A burst of events
is debounced: the change is taken once the file has been quiet for ``debounce_ms``, or
``max_wait_ms`` after its first event when it keeps changing. A change whose content hash
(state bytes and template digest) equals the last one judged is skipped. One change is
judged at a time; events arriving meanwhile merge into one follow-up on the newest content.
watchdog drops an inotify queue overflow with a log line only, and an observer thread can
die, so the loop also rescans the content hash every ``rescan_ms`` (and restarts a dead
observer): a change is never dropped, only noticed later.

Each change, in this order (measured by ``tools/bench_watch.py``):

1. **validate**: an invalid state is refused in one line naming the field; the last good
   build keeps serving and the user's file is left untouched for them to fix.
2. **pure tier**: render and check the candidate into its pure-Python build (loaded, not
   served). A template or check error is reported with its template line; nothing changes.
3. **gate**, against the last good build, with ``require="not-worse"``: a person saved the
   edit, so the policy's step bound and approval list are waived (logged, and recorded with
   the decision). An edit that touches only scoring coefficients, expert weights or routing
   rules is judged on the experts' raw evidence, collected once per build structure, by the
   NumPy screener (:func:`runtime.babi.tune.screen` replays the generated scoring exactly):
   milliseconds. Any other state edit goes through :func:`runtime.promote.promote`
   (sandbox, evaluation on both splits); a template edit is evaluated on both splits. A
   rejected candidate is recorded in the ledger and kept in ``<state>.rejected.json``, and
   the state file is restored to the last good state.
4. **pure tier live**: only a promoted build is ever swapped into the hot slot; the
   decision and the commit go to the ledger right after (their fsyncs cost about 0.2 s on
   a loaded machine, so they do not delay the swap; see :meth:`_Loop._settle`).
5. **compiled tier**: compiled in worker processes (``CompileSettings.worker_nice``),
   never in this interpreter; it replaces the pure tier once both tiers agree
   (:func:`runtime.live.differential_check`). A newer promoted change supersedes a pending
   compile: the compiled tier of an older change is never swapped over a newer pure tier.

The gate runs before anything goes live, so no caller ever sees a build it rejected; the
pure tier is built before the gate because the decision names the candidate's build.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from watchdog.events import (
    EVENT_TYPE_CLOSED_NO_WRITE,
    EVENT_TYPE_OPENED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from codegen.build import BuildResult
from codegen.errors import RSIError
from codegen.fsutil import atomic_write
from codegen.locking import project_lock
from codegen.policy import check_policy
from codegen.render import TEMPLATE_DIR, templates_digest
from codegen.state import RSIState, parse_state, read_state_file, state_sha256
from codegen.toolchain import CompileSettings, content_key
from runtime.babi.builds import model_of
from runtime.babi.tune import Evidence as RawEvidence
from runtime.babi.tune import collect_evidence, screen
from runtime.evidence import data_fingerprint, gather, stories_of
from runtime.gate import Decision, Evidence, GateSettings, SplitOutcome, decide
from runtime.ledger import ledger_path
from runtime.live import LiveProject, TierMismatch, differential_check
from runtime.loader import LoadedBuild, load_build
from runtime.project import Project
from runtime.promote import keep_rejected, promote, rejected_path

__all__ = [
    "DEFAULT_DEBOUNCE_MS",
    "DEFAULT_MAX_WAIT_MS",
    "DEFAULT_RESCAN_MS",
    "Outcome",
    "StopEvent",
    "WatchError",
    "WatchEvent",
    "WatchHandle",
    "WatchSettings",
    "run",
    "watch",
]

logger = logging.getLogger(__name__)

#: Quiet window: an editor's save is a burst of events within a millisecond or two (vim:
#: backup, write, rename); 40 ms also merges a few quick saves while costing little latency.
DEFAULT_DEBOUNCE_MS = 40.0
#: A file rewritten without pause is still judged this long after its first event.
DEFAULT_MAX_WAIT_MS = 400.0
#: Content-hash rescan: catches what the observer missed (queue overflow, a dead observer).
DEFAULT_RESCAN_MS = 1000.0
#: State sections an edit may change and still be judged by the screener on raw evidence.
SCREENABLE = ("version", "benchmark", "scoring", "routing")


class StopEvent(Protocol):
    """What stops the loop (``threading.Event`` fits)."""

    def is_set(self) -> bool:
        """True once the loop should stop."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or ``timeout`` seconds passed; return :meth:`is_set`."""
        ...


class WatchError(RSIError):
    """The project cannot be watched (another watcher holds it)."""


class Outcome(StrEnum):
    """What became of one change."""

    PURE_LIVE = "pure-live"  # gate passed; the pure-Python tier serves
    COMPILED_LIVE = "compiled-live"  # the compiled tier replaced it, both tiers agreeing
    REFUSED = "refused"  # invalid state: last good build serving, file untouched
    ROLLED_BACK = "rolled-back"  # worse: last good serving, file restored, content kept
    BUILD_FAILED = "build-failed"  # template, check or compiler error: last good serving
    TIER_MISMATCH = "tier-mismatch"  # compiled tier disagreed: the pure tier keeps serving
    FOLLOWED = "followed"  # another command (rollback, promote, build) activated a build


@dataclass(frozen=True)
class WatchEvent:
    """One entry of the watcher's history. Times are ``time.monotonic()`` seconds."""

    outcome: Outcome
    message: str  # one line
    serving: str  # build id serving after this event
    state_sha256: str  # the state bytes judged
    version: int | None
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


class WatchHandle:
    """A watcher running in a background thread (see :func:`watch`)."""

    def __init__(self, live: LiveProject, history: _History, stop: threading.Event) -> None:
        self.live = live
        self._history = history
        self._stop = stop
        self._thread: threading.Thread | None = None

    def current(self) -> LoadedBuild:
        """The active build: take it once per call and use it for the whole call."""
        return self.live.current()

    def history(self) -> tuple[WatchEvent, ...]:
        """Every outcome so far, oldest first."""
        return self._history.snapshot()

    def wait_for(self, count: int, *, timeout_s: float) -> tuple[WatchEvent, ...]:
        """Block until the history holds ``count`` events or ``timeout_s`` passed."""
        return self._history.wait_for(count, timeout_s)

    def stop(self, *, timeout_s: float = 120.0) -> None:
        """Stop watching; waits for a compile in flight, so no worker is orphaned."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)


def watch(
    state_path: Path,
    *,
    on_swap: OnSwap | None = None,
    on_event: OnEvent | None = None,
    settings: WatchSettings | None = None,
    template_dir: Path | None = None,
) -> WatchHandle:
    """Watch ``state_path`` in a background thread; return once watching has begun.

    Raises :class:`WatchError` when another watcher holds the project, and any error of the
    start-up. Callers serve from ``handle.current()``; ``on_swap`` is called with each build
    that goes live.
    """
    settings = settings or WatchSettings()
    lock_fd, live = _open(state_path, template_dir, settings)
    history = _History(on_event)
    stop = threading.Event()
    handle = WatchHandle(live, history, stop)
    ready = threading.Event()
    failed: list[RSIError] = []

    def main() -> None:
        try:
            _Loop(live, settings, history, on_swap).serve(stop, ready)
        except RSIError as exc:
            failed.append(exc)
            logger.error("watcher stopped: %s", exc)
        finally:
            ready.set()
            os.close(lock_fd)

    thread = threading.Thread(target=main, name="rsi-watch", daemon=True)
    handle._thread = thread
    thread.start()
    ready.wait()
    if failed:
        raise failed[0]
    return handle


def run(
    state_path: Path,
    stop: StopEvent,
    *,
    on_event: OnEvent | None = None,
    settings: WatchSettings | None = None,
    template_dir: Path | None = None,
) -> tuple[WatchEvent, ...]:
    """Watch ``state_path`` in this thread until ``stop`` is set (``rsi watch``)."""
    settings = settings or WatchSettings()
    lock_fd, live = _open(state_path, template_dir, settings)
    try:
        history = _History(on_event)
        _Loop(live, settings, history, None).serve(stop, threading.Event())
        return history.snapshot()
    finally:
        os.close(lock_fd)


def _open(
    state_path: Path, template_dir: Path | None, settings: WatchSettings
) -> tuple[int, LiveProject]:
    """Take the watcher's lock and load the last good build (building a new project once)."""
    project = Project(state_path, template_dir=template_dir)
    lock_fd = _lock(project.state_path)
    try:
        project.recover()  # a watcher killed mid-compile left staging dirs in the cache
        if project.ledger.active() is None:
            logger.info("%s was never built; building it as the last good state", state_path)
            project.build(settings.compile)
        return lock_fd, LiveProject(project)
    except BaseException:
        os.close(lock_fd)
        raise


class _History:
    """Append-only outcomes, with waiting for a count (tests, the bench)."""

    def __init__(self, on_event: OnEvent | None) -> None:
        self._events: list[WatchEvent] = []
        self._cond = threading.Condition()
        self._on_event = on_event

    def add(self, event: WatchEvent) -> None:
        log = logger.warning if event.outcome in _BAD else logger.info
        log("%s: %s", event.outcome, event.message)
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()
        if self._on_event is not None:
            self._on_event(event)

    def snapshot(self) -> tuple[WatchEvent, ...]:
        with self._cond:
            return tuple(self._events)

    def wait_for(self, count: int, timeout_s: float) -> tuple[WatchEvent, ...]:
        with self._cond:
            self._cond.wait_for(lambda: len(self._events) >= count, timeout_s)
            return tuple(self._events)


_BAD = (Outcome.REFUSED, Outcome.ROLLED_BACK, Outcome.BUILD_FAILED, Outcome.TIER_MISMATCH)


class _Changes(FileSystemEventHandler):
    """Debounced change signal fed by the observer; a poke wakes the loop."""

    def __init__(self, state_path: Path, template_dir: Path) -> None:
        self._state = state_path
        self._templates = template_dir
        self._cond = threading.Condition()
        self._first: float | None = None
        self._last = 0.0

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type in _READ_ONLY_EVENTS:
            return  # our own reads of the file: opened, closed without writing
        paths = (event.src_path, getattr(event, "dest_path", "") or "")
        if any(self._relevant(os.fsdecode(p)) for p in paths if p):
            self.poke()

    def _relevant(self, path: str) -> bool:
        p = Path(path)
        return p.name == self._state.name or self._templates in p.parents

    def poke(self) -> None:
        with self._cond:
            now = time.monotonic()
            if self._first is None:
                self._first = now
            self._last = now
            self._cond.notify_all()

    def settles(self, settings: WatchSettings) -> bool:
        """True unless another event arrives within one quiet window (a save in progress:
        an in-place write truncates first, so its first event may show a partial file)."""
        with self._cond:
            return not self._cond.wait_for(
                lambda: self._first is not None, settings.debounce_ms / 1000
            )

    def next(self, stop: StopEvent, settings: WatchSettings) -> float | None:
        """The first event time of the next settled burst; the rescan time when none came.

        ``None`` once ``stop`` is set.
        """
        rescan_at = time.monotonic() + settings.rescan_ms / 1000
        with self._cond:
            while self._first is None:
                if stop.is_set():
                    return None
                left = rescan_at - time.monotonic()
                if left <= 0:
                    return time.monotonic()
                self._cond.wait(min(left, _STOP_POLL_S))
            while True:
                quiet = self._last + settings.debounce_ms / 1000
                until = min(quiet, self._first + settings.max_wait_ms / 1000)
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            first, self._first = self._first, None
            return first


_STOP_POLL_S = 0.05
_READ_ONLY_EVENTS = frozenset({EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE})


@dataclass(frozen=True)
class _Good:
    """The last good state: what serves, and what a rejected edit is restored to."""

    data: bytes
    state: RSIState
    templates: str  # template digest it was built with


@dataclass(frozen=True)
class _Screen:
    """Raw expert evidence of both gate splits, valid for one build structure."""

    basis: str
    heldout: RawEvidence
    hidden: RawEvidence


@dataclass(frozen=True)
class _CompileJob:
    good: _Good
    pure: LoadedBuild
    changed_at: float


class _Loop:
    """The watcher: one change judged at a time; compiled tiers follow in a worker thread."""

    def __init__(
        self,
        live: LiveProject,
        settings: WatchSettings,
        history: _History,
        on_swap: OnSwap | None,
    ) -> None:
        self.live = live
        self.project = live.project
        self.settings = settings
        self.history = history
        self.on_swap = on_swap
        self.template_dir = self.project.template_dir or TEMPLATE_DIR
        self.changes = _Changes(self.project.state_path, self.template_dir)
        self.swap_lock = threading.Lock()  # a pure-tier swap and a compiled-tier swap
        self.pending: _CompileJob | None = None  # newest compile job, latest wins
        self.jobs = threading.Condition()
        self.closing = threading.Event()  # ends the compile thread once the loop is done
        self.screen: _Screen | None = None
        self.good = self._incumbent()

    def serve(self, stop: StopEvent, ready: threading.Event) -> None:
        observer = self._observer()
        compiler = threading.Thread(target=self._compile_loop, name="rsi-compile")
        compiler.start()
        try:
            if self.settings.screen:
                self.screen = self._collect(self.live.current(), self.good)
            judged = self._key(self.good.data)
            serving = self.live.current()
            if serving.tier == "python" and self.settings.compile.backend != "python":
                # A watcher stopped before the compiled tier of the active state went live.
                with self.jobs:
                    self.pending = _CompileJob(self.good, serving, time.monotonic())
                    self.jobs.notify_all()
            ready.set()
            logger.info("watching %s and %s", self.project.state_path, self.template_dir)
            self.changes.poke()  # an edit saved while nobody watched is judged at once
            while True:
                changed_at = self.changes.next(stop, self.settings)
                if changed_at is None:
                    break
                if not observer.is_alive():
                    logger.warning("file observer stopped; restarting it and rescanning")
                    observer = self._observer()
                judged = self._judge(judged, changed_at)
        finally:
            logger.info("stopping: waiting for any compile in flight")
            observer.stop()
            with self.jobs:
                self.closing.set()
                self.jobs.notify_all()
            compiler.join()
            observer.join()

    # -- one change -------------------------------------------------------------------

    def _judge(self, judged: str, changed_at: float) -> str:
        """Judge the current content unless its hash equals ``judged``; return the new hash."""
        path = self.project.state_path
        try:
            data = read_state_file(path)
        except RSIError as exc:
            if not path.exists():
                # Mid-save (backup-and-rename: its creation event follows), or deleted.
                logger.info(
                    "%s is gone; build %s keeps serving", path.name, self.live.current().build_id
                )
                return judged
            key = content_key({"unreadable": str(exc)})
            if key != judged:
                self._record(Outcome.REFUSED, str(exc), b"", None, changed_at)
            return key
        key = self._key(data)
        if key == judged:
            logger.debug("content unchanged; skipped")
            return key
        if key == self._key(self.good.data, self.good.templates):
            logger.info(
                "%s and the templates are the last good state again; build %s serving",
                path.name,
                self.live.current().build_id,
            )
            return key
        try:
            now = self._change(data, changed_at)
            if now is None:
                return judged  # superseded by a newer write: judge that one
            if now != data:
                return self._key(now)  # restored to the last good state by the roll back
        except RSIError as exc:
            self._record(Outcome.BUILD_FAILED, str(exc), data, None, changed_at)
        return key

    def _change(self, data: bytes, changed_at: float) -> bytes | None:
        """Judge one content; return what the file holds now (None: an unfinished save)."""
        name = self.project.state_path.name
        if self._follow_active(changed_at) and data == self.good.data:
            return data  # the file holds what another command activated: nothing to judge
        try:
            candidate = parse_state(data, name)
            if data != self.good.data:
                _check_newer(candidate, self.project.ledger.versions(), name)
        except RSIError as exc:
            if not self.changes.settles(self.settings):
                logger.debug("invalid content superseded by a newer write: %s", exc)
                return None
            self._record(Outcome.REFUSED, str(exc), data, None, changed_at)
            return data
        templates = templates_digest(self.template_dir)
        good = _Good(data, candidate, templates)
        if templates == self.good.templates and self._screenable(candidate, templates):
            return self._screened(good, changed_at)
        if templates == self.good.templates:
            return self._promoted(good, changed_at)
        return self._evaluated(good, changed_at)

    def _follow_active(self, changed_at: float) -> bool:
        """Serve the project's active build if another command (``rsi rollback``, ``rsi
        promote``, ``rsi build``) activated one meanwhile; True when it did.

        The active build becomes the last good state, so the next edit is gated against it
        and a rejected edit is restored to it.
        """
        active = self.project.ledger.active()
        if active is None or active.version == self.good.state.version:
            return False
        build = self.project.load_active()
        with self.swap_lock:
            self.live.slot.swap(build)
            self.good = self._incumbent()
        self._swapped(build)
        self._refresh_screen(build, self.good)
        message = (
            f"v{active.version}: build {build.build_id} ({build.tier}) activated by another "
            "command is served and is the last good state"
        )
        self._record(Outcome.FOLLOWED, message, self.good.data, build, changed_at)
        return True

    def _screened(self, good: _Good, changed_at: float) -> bytes:
        """Gate on raw evidence with the screener, then make the pure tier live."""
        built_at = time.monotonic()
        pure = self._pure(good)
        gate_at = time.monotonic()
        assert self.screen is not None
        incumbent = self._screen_evidence(self.good.state, self.live.current().build_id)
        candidate = self._screen_evidence(good.state, pure.build_id)
        decision = decide(incumbent, candidate, require="not-worse", settings=self.settings.gate)
        waived = check_policy(self.good.state, good.state, waive=True).waived
        logger.info(
            "v%d: debounce %.3f s, pure build %.3f s, screen and gate %.3f s",
            good.state.version,
            built_at - changed_at,
            gate_at - built_at,
            time.monotonic() - gate_at,
        )
        return self._settle(good, pure, decision, waived, "screen", changed_at)

    def _promoted(self, good: _Good, changed_at: float) -> bytes:
        """Any other state edit: :func:`runtime.promote.promote` gates and commits it."""
        report = promote(
            self.project,
            good.data,
            settings=_pure_settings(self.settings.compile),
            require="not-worse",
            data=self.settings.data,
            waive_policy=True,
            gate=self.settings.gate,
            seed=self.settings.seed,
            source=self.project.state_path.name,
        )
        _log_waived(report.waived)
        if report.promoted:
            pure = load_build(self.project.generated_dir / report.build_id)
            self._go_live(good, pure, "promote", report.waived, changed_at)
            return good.data
        return self._roll_back(good, report.decision, "promote", report.waived, changed_at)

    def _evaluated(self, good: _Good, changed_at: float) -> bytes:
        """A template edit: evaluate both builds on the gate's splits."""
        pure = self._pure(good)
        data, seed = self.settings.data, self.settings.seed
        incumbent = self._cached_gather(self.live.current(), data, seed)
        candidate = self._cached_gather(pure, data, seed)
        decision = decide(incumbent, candidate, require="not-worse", settings=self.settings.gate)
        waived = check_policy(self.good.state, good.state, waive=True).waived
        return self._settle(good, pure, decision, waived, "evaluate", changed_at)

    def _settle(
        self,
        good: _Good,
        pure: LoadedBuild,
        decision: Decision,
        waived: tuple[str, ...],
        gate: str,
        changed_at: float,
    ) -> bytes:
        """Go live and commit, or keep the candidate and roll back; record the decision.

        A promoted build goes live before the ledger's transactions (each an fsync): the
        gate has passed, and a kill before the commit leaves the ledger on the last good
        state with the edit still in the file, judged again at the next start. A ledger
        that refuses the commit swaps the last good build back.
        """
        _log_waived(waived)
        if not decision.promoted:
            self._record_decision(good, decision, waived)
            keep_rejected(self.project.state_path, good.data)
            return self._roll_back(good, decision, gate, waived, changed_at)
        with self.swap_lock:
            previous, last_good = self.live.slot.swap(pure), self.good
            self.good = good
        live_at = time.monotonic()
        try:
            decision_id = self._record_decision(good, decision, waived)
            with project_lock(self.project.state_path, timeout_s=self.project.lock_timeout_s):
                limit = good.state.safety.history_limit
                ledger = self.project.ledger
                ledger.commit(good.state.version, good.data, pure.build_id, pure.tier, limit=limit)
                ledger.mark_committed(decision_id, good.state.version)
        except RSIError:
            with self.swap_lock:
                self.live.slot.swap(previous)
                self.good = last_good
            raise
        self._went_live(good, pure, gate, waived, changed_at, live_at)
        return good.data

    def _record_decision(self, good: _Good, decision: Decision, waived: tuple[str, ...]) -> int:
        with project_lock(self.project.state_path, timeout_s=self.project.lock_timeout_s):
            return self.project.ledger.record_decision(
                decision,
                candidate_data=good.data,
                candidate_version=good.state.version,
                waived=waived,
            )

    def _go_live(
        self,
        good: _Good,
        pure: LoadedBuild,
        gate: str,
        waived: tuple[str, ...],
        changed_at: float,
    ) -> None:
        with self.swap_lock:
            self.live.slot.swap(pure)
            self.good = good
        self._went_live(good, pure, gate, waived, changed_at, time.monotonic())

    def _went_live(
        self,
        good: _Good,
        pure: LoadedBuild,
        gate: str,
        waived: tuple[str, ...],
        changed_at: float,
        live_at: float,
    ) -> None:
        """Report a pure tier serving since ``live_at``; queue its compiled tier (latest wins)."""
        self._swapped(pure)
        message = f"v{good.state.version}: pure tier {pure.build_id} live (gate: {gate})"
        self._record(
            Outcome.PURE_LIVE, message, good.data, pure, changed_at, gate, waived, at=live_at
        )
        if self.settings.compile.backend == "python":
            self._refresh_screen(pure, good)
            return
        with self.jobs:
            self.pending = _CompileJob(good, pure, changed_at)
            self.jobs.notify_all()

    def _roll_back(
        self,
        good: _Good,
        decision: Decision,
        gate: str,
        waived: tuple[str, ...],
        changed_at: float,
    ) -> bytes:
        """Restore the state file unless a newer save replaced it; return what it holds."""
        path = self.project.state_path
        holds = good.data
        with project_lock(path, timeout_s=self.project.lock_timeout_s):
            if _read_or_none(path) == good.data:  # a newer save is the user's: keep it
                atomic_write(path, self.good.data)
                holds = self.good.data
        message = (
            f"v{good.state.version} not promoted ({decision.verdict}: {decision.reason}); "
            f"{path.name} restored to v{self.good.state.version}, the edit kept in "
            f"{rejected_path(path).name}"
        )
        self._record(Outcome.ROLLED_BACK, message, good.data, None, changed_at, gate, waived)
        return holds

    # -- compiled tier ----------------------------------------------------------------

    def _compile_loop(self) -> None:
        while True:
            with self.jobs:
                self.jobs.wait_for(lambda: self.pending is not None or self.closing.is_set())
                if self.closing.is_set():
                    return
                job, self.pending = self.pending, None
            assert job is not None
            try:
                self._compile(job)
            except TierMismatch as exc:
                self._record(Outcome.TIER_MISMATCH, str(exc), job.good.data, None, job.changed_at)
            except RSIError as exc:
                self._record(Outcome.BUILD_FAILED, str(exc), job.good.data, None, job.changed_at)

    def _compile(self, job: _CompileJob) -> None:
        built = self.project.build_candidate(job.good.state, job.good.data, self.settings.compile)
        compiled = load_build(built.path)
        differential_check(job.pure, compiled)
        with self.swap_lock:
            if self.live.current() is not job.pure:
                logger.info("compiled tier %s superseded by a newer change", compiled.build_id)
                return
            with project_lock(self.project.state_path, timeout_s=self.project.lock_timeout_s):
                state = job.good.state
                self.project.ledger.commit(
                    state.version,
                    job.good.data,
                    compiled.build_id,
                    compiled.tier,
                    limit=state.safety.history_limit,
                )
            self.live.slot.swap(compiled)
        self._swapped(compiled)
        message = f"v{job.good.state.version}: compiled tier {compiled.build_id} live"
        self._record(Outcome.COMPILED_LIVE, message, job.good.data, compiled, job.changed_at)
        self._refresh_screen(compiled, job.good)

    # -- helpers ----------------------------------------------------------------------

    def _pure(self, good: _Good) -> LoadedBuild:
        settings = _pure_settings(self.settings.compile)
        built: BuildResult = self.project.build_candidate(good.state, good.data, settings)
        return load_build(built.path)

    def _screenable(self, candidate: RSIState, templates: str) -> bool:
        return self.screen is not None and self.screen.basis == self._basis(candidate, templates)

    def _basis(self, state: RSIState, templates: str) -> str:
        """Everything the experts' raw evidence depends on (not weights, scoring, routing)."""
        data = state.model_dump(mode="json", exclude=set(SCREENABLE))
        for expert in data["experts"].values():
            expert.pop("weight")
        return content_key({"state": data, "templates": templates})

    def _refresh_screen(self, build: LoadedBuild, good: _Good) -> None:
        """Recollect the raw evidence when the experts' structure changed (not for weights)."""
        basis = self._basis(good.state, good.templates)
        if self.settings.screen and (self.screen is None or self.screen.basis != basis):
            self.screen = self._collect(build, good)

    def _collect(self, build: LoadedBuild, good: _Good) -> _Screen:
        start = time.perf_counter()
        model = model_of(build, full_evidence=True)
        data, seed = self.settings.data, self.settings.seed
        heldout = collect_evidence(model, stories_of(data, "heldout", seed))
        hidden = collect_evidence(model, stories_of(data, "hidden", seed))
        logger.info("screener evidence collected in %.2f s", time.perf_counter() - start)
        return _Screen(self._basis(good.state, good.templates), heldout, hidden)

    def _screen_evidence(self, state: RSIState, build_id: str) -> Evidence:
        assert self.screen is not None
        fingerprint = data_fingerprint(self.settings.data, self.settings.seed)
        outcomes = [
            SplitOutcome(
                split,
                self.settings.seed,
                fingerprint,
                tuple(int(t) for t in raw.tasks),
                tuple(bool(c) for c in screen(state, raw).correct),
            )
            for split, raw in (("heldout", self.screen.heldout), ("hidden", self.screen.hidden))
        ]
        # Kernels are unchanged (the basis includes them); the tiers are compared before the
        # compiled one goes live (differential_check), so neither check can fail here.
        return Evidence(build_id, outcomes[0], outcomes[1], True, True)

    def _cached_gather(self, build: LoadedBuild, data: Path | None, seed: int) -> Evidence:
        ledger = self.project.ledger
        found = ledger.evidence(build.build_id, seed, data_fingerprint(data, seed))
        if found is not None:
            return found
        measured = gather(build, data=data, seed=seed)
        ledger.record_evidence(measured)
        return measured

    def _incumbent(self) -> _Good:
        active = self.project.ledger.active()
        assert active is not None  # LiveProject loaded it
        record = self.project.ledger.state(active.version)
        state = parse_state(record.data, f"history version {record.version}")
        return _Good(record.data, state, templates_digest(self.template_dir))

    def _key(self, data: bytes, templates: str | None = None) -> str:
        digest = templates if templates is not None else templates_digest(self.template_dir)
        return content_key({"state": state_sha256(data), "templates": digest})

    def _observer(self) -> BaseObserver:
        interval_s = self.settings.poll_interval_ms / 1000
        observer: BaseObserver = (
            PollingObserver(timeout=interval_s) if self.settings.poll else Observer()
        )
        observer.schedule(self.changes, str(self.project.state_path.parent))
        observer.schedule(self.changes, str(self.template_dir))
        observer.daemon = True
        observer.start()
        return observer

    def _swapped(self, build: LoadedBuild) -> None:
        if self.on_swap is not None:
            self.on_swap(build)

    def _record(
        self,
        outcome: Outcome,
        message: str,
        data: bytes,
        build: LoadedBuild | None,
        changed_at: float,
        gate: str = "",
        waived: tuple[str, ...] = (),
        at: float | None = None,
    ) -> None:
        serving = build.build_id if build is not None else self.live.current().build_id
        try:
            version: int | None = parse_state(data).version
        except RSIError:
            version = None
        event = WatchEvent(
            outcome,
            message,
            serving,
            state_sha256(data),
            version,
            changed_at,
            time.monotonic() if at is None else at,
            gate,
            waived,
        )
        self.history.add(event)
        self.project.ledger.event(
            f"watch-{outcome}",
            {"message": message, "serving": serving, "sha256": event.state_sha256},
        )


def _check_newer(candidate: RSIState, versions: list[int], source: str) -> None:
    newest = versions[-1] if versions else 0
    if candidate.version <= newest:
        raise WatchError(
            f"{source}: version {candidate.version} is not newer than the committed "
            f'{newest}; set "version" to {newest + 1}'
        )


def _pure_settings(settings: CompileSettings) -> CompileSettings:
    return replace(settings, backend="python")


def _log_waived(waived: tuple[str, ...]) -> None:
    logger.info(
        "policy waived for a person's edit (step bound and approval list): %s",
        "; ".join(waived) if waived else "nothing to waive",
    )


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _lock(state_path: Path) -> int:
    """Hold ``.rsi/<state>/watch.lock`` for the watcher's lifetime; refuse another."""
    path = ledger_path(state_path).parent / "watch.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise WatchError(
            f"{state_path.name}: already watched by process {holder} "
            f"(.rsi/{state_path.name}/watch.lock); "
            "stop that watcher first"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
