"""File events -> debounced changes: what the watcher waits on between judgements.

A burst of events is one change, taken once the files have been quiet for ``debounce_ms``,
or ``max_wait_ms`` after its first event when they keep changing. With no event for
``rescan_ms`` the feed answers anyway (a rescan), so a change the observer dropped (watchdog
drops an inotify queue overflow with a log line only) is noticed later, never lost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CLOSED_NO_WRITE,
    EVENT_TYPE_OPENED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from runtime.watch.values import StopEvent, WatchSettings

__all__ = ["Change", "ChangeFeed", "start_observer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """A settled burst of events (or a rescan): judge the files' content now."""

    at: float  # ``time.monotonic()`` of its first event; of the rescan when none was seen
    rescan: bool  # no event was seen: the content is compared by hash only


class ChangeFeed(FileSystemEventHandler):
    """Debounced changes fed by the observer; :meth:`poke` adds one by hand."""

    def __init__(self, state_path: Path, template_dir: Path) -> None:
        self._state = state_path
        self._templates = template_dir
        self._cond = threading.Condition()
        self._first: float | None = None
        self._last = 0.0

    def dispatch(self, event: FileSystemEvent) -> None:
        """Take an observer's event: a change when it names the state file or a template."""
        if event.event_type in _READ_ONLY_EVENTS:
            return  # our own reads of the file: opened, closed without writing
        paths = (event.src_path, getattr(event, "dest_path", "") or "")
        if any(self._relevant(os.fsdecode(p)) for p in paths if p):
            self.poke()

    def poke(self) -> None:
        """Record an event now."""
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

    def next(self, stop: StopEvent, settings: WatchSettings) -> Change | None:
        """The next settled burst, or a rescan when none came; ``None`` once ``stop`` is set."""
        rescan_at = time.monotonic() + settings.rescan_ms / 1000
        with self._cond:
            while self._first is None:
                if stop.is_set():
                    return None
                left = rescan_at - time.monotonic()
                if left <= 0:
                    return Change(time.monotonic(), rescan=True)
                self._cond.wait(min(left, _STOP_POLL_S))
            while True:
                quiet = self._last + settings.debounce_ms / 1000
                until = min(quiet, self._first + settings.max_wait_ms / 1000)
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            first, self._first = self._first, None
            return Change(first, rescan=False)

    def _relevant(self, path: str) -> bool:
        p = Path(path)
        return p.name == self._state.name or self._templates in p.parents


def start_observer(
    feed: ChangeFeed, state_path: Path, template_dir: Path, settings: WatchSettings
) -> BaseObserver:
    """Start an observer (polling with ``settings.poll``) of the state's folder and templates.

    Stopping one while events are in flight made watchdog's inotify emitter log an ERROR
    (its thread reads one more event after ``stop()``): that record is dropped
    (:class:`_StoppedEmitterFilter`); any other error of watchdog's is still logged.
    """
    interval_s = settings.poll_interval_ms / 1000
    observer: BaseObserver = PollingObserver(timeout=interval_s) if settings.poll else Observer()
    observer.schedule(feed, str(state_path.parent))
    observer.schedule(feed, str(template_dir))
    observer.daemon = True
    observer.start()
    return observer


class _StoppedEmitterFilter(logging.Filter):
    """Drop watchdog 7's "queue_events() called when the thread is inactive" ERROR: logged
    when the emitter's thread reads an event after ``stop()`` (a normal stop with events in
    flight), where the event is of no use to anyone."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).endswith("called when the thread is inactive")


logging.getLogger("watchdog.observers.inotify").addFilter(_StoppedEmitterFilter())

_STOP_POLL_S = 0.05
_READ_ONLY_EVENTS = frozenset({EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE})
