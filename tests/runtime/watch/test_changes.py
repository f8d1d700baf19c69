"""Events -> debounced changes: quiet window, maximum wait, rescan, stop, our own reads."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from watchdog.events import (
    FileClosedNoWriteEvent,
    FileModifiedEvent,
    FileOpenedEvent,
)

from runtime.watch import WatchSettings
from runtime.watch.changes import ChangeFeed, start_observer


class TestDebounce:
    def test_a_burst_is_one_change_from_its_first_event(self) -> None:
        changes = ChangeFeed(Path("/p/rsi_state.json"), Path("/t"))
        stop = threading.Event()
        first = time.monotonic()
        for _ in range(5):
            changes.dispatch(FileModifiedEvent("/p/rsi_state.json"))
            time.sleep(0.005)
        got = changes.next(stop, WatchSettings(debounce_ms=50, max_wait_ms=1000))
        assert got is not None and first <= got.at < first + 0.005 and not got.rescan
        assert time.monotonic() - first >= 0.05 + 0.02  # quiet window after the last event
        rescan = changes.next(stop, WatchSettings(rescan_ms=20))
        assert rescan is not None and rescan.rescan and rescan.at > got.at  # nothing pending

    def test_max_wait_bounds_a_file_that_never_settles(self) -> None:
        changes = ChangeFeed(Path("/p/rsi_state.json"), Path("/t"))
        stop = threading.Event()
        done = threading.Event()

        def keep_writing() -> None:
            while not done.is_set():
                changes.poke()
                time.sleep(0.01)

        writer = threading.Thread(target=keep_writing)
        writer.start()
        start = time.monotonic()
        changes.next(stop, WatchSettings(debounce_ms=50, max_wait_ms=200))
        waited = time.monotonic() - start
        done.set()
        writer.join()
        assert 0.15 < waited < 1.0

    def test_events_of_other_files_are_ignored(self) -> None:
        changes = ChangeFeed(Path("/p/rsi_state.json"), Path("/t"))
        changes.dispatch(FileModifiedEvent("/p/notes.txt"))
        changes.dispatch(FileModifiedEvent("/p/rsi_state.json.lock"))
        got = changes.next(threading.Event(), WatchSettings(rescan_ms=50))
        assert got is not None and got.rescan  # the rescan, not a change

    def test_stop_ends_the_wait(self) -> None:
        stop = threading.Event()
        stop.set()
        assert ChangeFeed(Path("/p/s.json"), Path("/t")).next(stop, WatchSettings()) is None


def test_our_own_reads_of_the_file_are_not_changes() -> None:
    changes = ChangeFeed(Path("/p/rsi_state.json"), Path("/t"))
    changes.dispatch(FileOpenedEvent("/p/rsi_state.json"))
    changes.dispatch(FileClosedNoWriteEvent("/p/rsi_state.json"))
    assert changes.settles(WatchSettings(debounce_ms=20))


def test_a_write_within_the_quiet_window_unsettles_a_refusal() -> None:
    changes = ChangeFeed(Path("/p/rsi_state.json"), Path("/t"))
    timer = threading.Timer(0.01, changes.poke)
    timer.start()
    assert not changes.settles(WatchSettings(debounce_ms=500))
    timer.join()


def test_stopping_with_events_in_flight_logs_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """watchdog's emitter read an event after stop() and logged an ERROR on a normal stop."""
    state = tmp_path / "rsi_state.json"
    templates = tmp_path / "templates"
    templates.mkdir()
    caplog.set_level(logging.INFO)
    for _ in range(40):
        feed = ChangeFeed(state, templates)
        observer = start_observer(feed, state, templates, WatchSettings())
        done = threading.Event()

        def write(target: Path = state, done: threading.Event = done) -> None:
            while not done.is_set():
                target.write_text("{}")

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.01)
        observer.stop()
        observer.join()
        done.set()
        writer.join()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
