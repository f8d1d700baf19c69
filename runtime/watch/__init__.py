"""Watch mode: the running model follows edits of its state file and templates, or refuses them.

A watchdog observer (or, with ``poll=True``, a polling one) watches the state file's
directory, keeping events whose source or destination is the state file's name, so every
way an editor saves is seen: an in-place write, a temp file renamed over it (``sed -i``,
most IDEs), vim's backup-and-rename; and it watches the template folder. Events become
debounced changes (:mod:`runtime.watch.changes`). A change whose content hash (state bytes
and template digest) equals the last one judged is skipped. One change is judged at a time
(:mod:`runtime.watch.judge`); events arriving meanwhile merge into one follow-up on the
newest content. The loop also rescans the content hash every ``rescan_ms`` (and restarts a
dead observer): a change is never dropped, only noticed later.

Each change, in this order (measured by ``tools/bench_watch.py``):

1. **validate**: an invalid state is refused in one line naming the field; the last good
   build keeps serving and the user's file is left untouched for them to fix. A valid
   state whose ``version`` is not newer than the ledger's newest (an edit saved without
   bumping it) is judged as the next version; the file is left as saved, and the commit
   records its bytes as an alias of that version, so ``rsi status``, ``rollback``,
   ``build`` and ``promote`` take the file for the version it was committed as.
2. **pure tier**: render and check the candidate into its pure-Python build, in the warm
   build worker (:func:`codegen.build.build_in_worker`: this interpreter's threads serve),
   then load it here (not served). A template or check error is reported with its template
   line; nothing changes.
3. **gate**, against the last good build, with ``require="not-worse"``: a person saved the
   edit, so the policy's step bound and approval list are waived (logged, and recorded with
   the decision). An edit that touches only scoring coefficients, expert weights or routing
   rules is judged by the screener (:mod:`runtime.watch.screen`): milliseconds. Any other
   state edit goes through :func:`runtime.promote.promote` (sandbox, evaluation on both
   splits); a template edit is evaluated on both splits. A rejected candidate is recorded
   in the ledger and kept in ``<state>.rejected.json``, and the state file is restored to
   the last good state.
4. **pure tier live**: only a promoted build is ever swapped into the hot slot; the
   decision and the commit go to the ledger right after.
5. **compiled tier**: compiled in worker processes (:mod:`runtime.watch.compiled`), never
   in this interpreter; it replaces the pure tier once both tiers agree
   (:func:`runtime.live.differential_check`). A newer promoted change supersedes a pending
   compile: the compiled tier of an older change is never swapped over a newer pure tier.

The gate runs before anything goes live, so no caller ever sees a build it rejected. Stopping
(:meth:`WatchHandle.stop`, SIGTERM) waits for the compile in flight: its worker processes
finish and publish, or fail and clean their staging dirs; a compile queued but not started
is left to the next watcher, which resumes it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from pathlib import Path

from codegen.compile import prestart_build_worker, prestart_worker, stop_workers
from codegen.errors import RSIError
from codegen.render import TEMPLATE_DIR
from runtime.ledger import ledger_path
from runtime.live import LiveProject
from runtime.loader import LoadedBuild
from runtime.project import Project
from runtime.watch.changes import ChangeFeed, start_observer
from runtime.watch.compiled import CompileJob, CompileQueue
from runtime.watch.context import WatchContext
from runtime.watch.judge import judge, start, warm_up
from runtime.watch.values import (
    DEFAULT_DEBOUNCE_MS,
    DEFAULT_MAX_WAIT_MS,
    DEFAULT_RESCAN_MS,
    History,
    OnEvent,
    OnSwap,
    Outcome,
    StateFileLock,
    StopEvent,
    WatchError,
    WatchEvent,
    WatchLock,
    WatchSettings,
)

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


class WatchHandle:
    """A watcher running in a background thread (see :func:`watch`)."""

    def __init__(
        self,
        live: LiveProject,
        history: History,
        stop: threading.Event,
        thread: threading.Thread,
    ) -> None:
        self.live = live
        self._history = history
        self._stop = stop
        self._thread = thread

    def current(self) -> LoadedBuild:
        """The active build: take it once per call and use it for the whole call."""
        return self.live.current()

    def history(self) -> tuple[WatchEvent, ...]:
        """Every outcome so far, oldest first."""
        return self._history.snapshot()

    def wait_for(self, count: int, *, timeout_s: float) -> tuple[WatchEvent, ...]:
        """Block until the history holds ``count`` events or ``timeout_s`` passed."""
        return self._history.wait_for(count, timeout_s)

    def stop(self) -> None:
        """Stop watching; returns once a compile in flight is done (no orphan worker, no
        staging dir left) and the project's watch lock is released."""
        self._stop.set()
        self._thread.join()


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
    that goes live. A watcher whose lock is deleted later (``rm -rf .rsi``) stops and logs
    the error; the handle keeps serving its last build.
    """
    settings = settings or WatchSettings()
    lock, live = _open(state_path, template_dir, settings)
    history = History(on_event)
    stop = threading.Event()
    ready = threading.Event()
    failed: list[RSIError] = []

    def main() -> None:
        try:
            _serve(_context(live, settings, history, on_swap, lock), stop, ready)
        except RSIError as exc:
            failed.append(exc)
            logger.error("watcher stopped: %s", exc)
        finally:
            ready.set()
            lock.release()

    thread = threading.Thread(target=main, name="rsi-watch", daemon=True)
    thread.start()
    ready.wait()
    if failed:
        raise failed[0]
    return WatchHandle(live, history, stop, thread)


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
    lock, live = _open(state_path, template_dir, settings)
    try:
        history = History(on_event)
        _serve(_context(live, settings, history, None, lock), stop, threading.Event())
        return history.snapshot()
    finally:
        lock.release()


def _serve(ctx: WatchContext, stop: StopEvent, ready: threading.Event) -> None:
    """The loop: wait for a change, judge it; the compiled tier follows in its own thread.

    Raises :class:`WatchError` (after a clean shutdown) when the watch lock was deleted.
    """
    project = ctx.project
    watching = _StopOrLost(stop, ctx.lock)
    feed = ChangeFeed(project.state_path, ctx.template_dir)
    observer = start_observer(feed, project.state_path, ctx.template_dir, ctx.settings)
    prestart_build_worker()  # the pure tier's: renderer and black loaded before the first edit
    prestart_worker(ctx.settings.compile)  # warm (Cython loaded) before the first edit
    compiler = CompileQueue()
    compiling = threading.Thread(target=compiler.serve, args=(ctx,), name="rsi-compile")
    compiling.start()
    try:
        watched = start(ctx)
        serving = ctx.live.current()
        if serving.tier == "python" and ctx.settings.compile.backend != "python":
            # A watcher stopped before the compiled tier of the active state went live.
            compiler.submit(CompileJob(watched.good, serving, time.monotonic()))
        ready.set()
        logger.info("watching %s and %s", project.state_path, ctx.template_dir)
        warm_up(ctx, watched)  # an edit saved meanwhile is judged right after
        feed.poke()  # an edit saved while nobody watched is judged at once
        while (change := feed.next(watching, ctx.settings)) is not None:
            if watching.is_set():
                break  # the caller's stop, or the lock is gone: judge nothing more
            if not observer.is_alive():
                logger.warning("file observer stopped; restarting it and rescanning")
                observer = start_observer(feed, project.state_path, ctx.template_dir, ctx.settings)
            watched = judge(ctx, feed, compiler, watched, change)
    finally:
        logger.info("stopping: waiting for any compile in flight")
        observer.stop()
        compiler.close()
        compiling.join()
        observer.join()
        stop_workers()
        logger.info("stopped")
    if not ctx.lock.held():
        raise ctx.lock.lost()


def _context(
    live: LiveProject,
    settings: WatchSettings,
    history: History,
    on_swap: OnSwap | None,
    lock: WatchLock,
) -> WatchContext:
    template_dir = live.project.template_dir or TEMPLATE_DIR
    return WatchContext(live, settings, template_dir, history, on_swap, threading.Lock(), lock)


def _open(
    state_path: Path, template_dir: Path | None, settings: WatchSettings
) -> tuple[WatchLock, LiveProject]:
    """Take the watcher's lock and load the last good build (building a new project once)."""
    project = Project(state_path, template_dir=template_dir)
    lock = _lock(project.state_path)
    try:
        project.recover()  # a watcher killed mid-compile left staging dirs in the cache
        if project.ledger.active() is None:
            logger.info("%s was never built; building it as the last good state", state_path)
            project.build(settings.compile)
        return lock, LiveProject(project)
    except BaseException:
        lock.release()
        raise


def _lock(state_path: Path) -> WatchLock:
    """Hold ``.rsi/<state>/watch.lock``, and a lock on the state file itself (its other
    names: hard links), for the watcher's lifetime; refuse another."""
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
    return WatchLock(path, fd, StateFileLock(_lock_file(state_path, fd)))


def _lock_file(state_path: Path, lock_fd: int) -> int:
    """A ``flock`` on the state file itself (its inode, whatever its name): a hard link of a
    watched file is refused in one line. -1 when there is no state file yet."""
    try:
        fd = os.open(state_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        links = os.fstat(fd).st_nlink
        os.close(fd)
        os.close(lock_fd)
        raise WatchError(
            f"{state_path.name}: already watched under another of its {links} names (a hard "
            "link: the same file); stop that watcher first, or give this one a copy of its own"
        ) from None
    return fd


class _StopOrLost:
    """The loop's :class:`StopEvent`: set by the caller, or by the watch lock's deletion."""

    def __init__(self, stop: StopEvent, lock: WatchLock) -> None:
        self._stop = stop
        self._lock = lock

    def is_set(self) -> bool:
        """True once the caller stops the loop or the lock is gone."""
        return self._stop.is_set() or not self._lock.held()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the caller's stop (the lock is checked by :meth:`is_set`)."""
        self._stop.wait(timeout)
        return self.is_set()
