"""Watch mode: debounce, merging, hash skip, editor saves, rescan, lock, shutdown, e2e."""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import codegen.build
from codegen.toolchain import CompileSettings
from runtime.cli import main
from runtime.project import Project
from runtime.watch import (
    Outcome,
    WatchError,
    WatchHandle,
    WatchSettings,
    watch,
)
from runtime.watch.changes import ChangeFeed
from tests.conftest import PROBE_TEMPLATES, REPO

PURE = CompileSettings(backend="python")
#: The module (``runtime.watch.judge`` is the function the package exports).
JUDGE = importlib.import_module("runtime.watch.judge")
FAST = WatchSettings(debounce_ms=30, max_wait_ms=300, rescan_ms=300, compile=PURE, screen=False)


@pytest.fixture
def built(make_project: Callable[..., Project]) -> Project:
    project = make_project()
    project.build(PURE)
    return project


@pytest.fixture
def handle(built: Project) -> Iterator[WatchHandle]:
    h = watch(built.state_path, settings=FAST, template_dir=PROBE_TEMPLATES)
    yield h
    h.stop()


def _invalid(project: Project, value: object = "x") -> bytes:
    data = json.loads(project.state_path.read_text())
    data["scoring"]["attention"] = value
    return (json.dumps(data, indent=2) + "\n").encode()


def _next(h: WatchHandle, count: int, timeout_s: float = 20.0) -> list[Outcome]:
    events = h.wait_for(count, timeout_s=timeout_s)
    assert len(events) >= count, f"no event {count} within {timeout_s} s: {events}"
    return [e.outcome for e in events]


class TestRefusal:
    def test_invalid_edit_is_refused_in_one_line_and_left_untouched(
        self, built: Project, handle: WatchHandle
    ) -> None:
        serving = handle.current().build_id
        bad = _invalid(built)
        built.state_path.write_bytes(bad)
        _next(handle, 1)
        (event,) = handle.history()
        assert event.outcome is Outcome.REFUSED
        assert event.message == "rsi_state.json: scoring.attention: Input should be a valid number"
        assert built.state_path.read_bytes() == bad
        assert handle.current().build_id == serving

    def test_unchanged_content_is_skipped(self, built: Project, handle: WatchHandle) -> None:
        bad = _invalid(built)
        built.state_path.write_bytes(bad)
        _next(handle, 1)
        built.state_path.write_bytes(bad)  # same bytes again: an event, no new judgement
        os.utime(built.state_path)
        time.sleep(0.5)
        assert len(handle.history()) == 1

    def test_writes_within_one_window_merge_into_the_newest(
        self, built: Project, handle: WatchHandle
    ) -> None:
        for value in ("a", "b", "c"):
            built.state_path.write_bytes(_invalid(built, value))
        _next(handle, 1)
        time.sleep(0.4)
        events = handle.history()
        assert len(events) == 1
        assert events[0].state_sha256 == _sha(built.state_path.read_bytes())


class TestEditorSaves:
    """Each way an editor saves is seen (the content is invalid, so judging is quick)."""

    @pytest.mark.parametrize("style", ["in-place", "rename-over", "vim-backup", "sed-i"])
    def test_save_style_is_seen(self, built: Project, handle: WatchHandle, style: str) -> None:
        path = built.state_path
        bad = _invalid(built)
        if style == "in-place":
            with open(path, "r+b") as fh:
                fh.truncate(0)
                fh.write(bad)
        elif style == "rename-over":
            tmp = path.with_name(".rsi_state.json.swp-tmp")
            tmp.write_bytes(bad)
            os.replace(tmp, path)
        elif style == "vim-backup":  # backupcopy=no: rename to a backup, write new, delete
            backup = path.with_name("rsi_state.json~")
            os.rename(path, backup)
            path.write_bytes(bad)
            backup.unlink()
        else:
            subprocess.run(["sed", "-i", 's/"attention": [0-9.e+-]*/"attention": "x"/', path])
        _next(handle, 1)
        assert handle.history()[0].outcome is Outcome.REFUSED


def test_dropped_events_are_caught_by_the_rescan(
    built: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ChangeFeed, "dispatch", lambda self, event: None)  # an overflow drops all
    h = watch(built.state_path, settings=FAST, template_dir=PROBE_TEMPLATES)
    try:
        built.state_path.write_bytes(_invalid(built))
        _next(h, 1, timeout_s=5.0)
        assert h.history()[0].outcome is Outcome.REFUSED
    finally:
        h.stop()


def test_a_broken_template_names_its_line_and_keeps_serving(built: Project, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(PROBE_TEMPLATES, templates)
    project = Project(built.state_path, template_dir=templates)
    h = watch(project.state_path, settings=FAST, template_dir=templates)
    serving = h.current().build_id
    try:
        probe = templates / "probe.py.j2"
        probe.write_text(probe.read_text() + "\n{{ undefined_name.field }}\n")
        _next(h, 1)
        event = h.history()[0]
        assert event.outcome is Outcome.BUILD_FAILED
        assert "probe.py.j2" in event.message
        assert h.current().build_id == serving
    finally:
        h.stop()


def test_a_deleted_state_file_is_reported_once_and_once_back(
    built: Project, handle: WatchHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runtime.watch.judge")
    data = built.state_path.read_bytes()
    built.state_path.unlink()
    time.sleep(1.5)  # five rescans
    built.state_path.write_bytes(data)
    time.sleep(0.8)
    said = [r.getMessage() for r in caplog.records if r.name == "runtime.watch.judge"]
    serving = handle.current().build_id
    assert said == [
        f"rsi_state.json is gone; build {serving} keeps serving",
        "rsi_state.json is back",
    ]


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_a_bad_templates_option_names_it_the_path_and_the_fix(
    built: Project, tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "templates"
    why = "does not exist"
    if kind == "file":
        folder.write_text("")
        why = "is not a folder"
    elif kind == "empty":
        folder.mkdir()
        why = "holds no templates (*.py.j2)"
    argv = ["watch", "--state", str(built.state_path), "--backend", "python"]
    assert main([*argv, "--templates", str(folder)]) == 2
    assert capsys.readouterr().err == (
        f"rsi: error: --templates {folder}: {why}; give the folder of the *.py.j2 templates "
        "to watch, or leave --templates out to watch the shipped ones\n"
    )


def test_a_second_watcher_is_refused_in_one_line(built: Project, handle: WatchHandle) -> None:
    with pytest.raises(WatchError) as caught:
        watch(built.state_path, settings=FAST, template_dir=PROBE_TEMPLATES)
    assert str(caught.value) == (
        f"rsi_state.json: already watched by process {os.getpid()} "
        "(.rsi/rsi_state.json/watch.lock); stop that watcher first"
    )


def test_a_hard_link_of_a_watched_state_file_is_refused_in_one_line(
    built: Project, handle: WatchHandle
) -> None:
    """Red team: another name of the same file has its own ledger and watch lock, so a
    second watcher started on it, and two watchers judged and restored one file."""
    other = built.state_path.with_name("other.json")
    os.link(built.state_path, other)
    with pytest.raises(WatchError) as caught:
        watch(other, settings=FAST, template_dir=PROBE_TEMPLATES)
    assert str(caught.value) == (
        "other.json: already watched under another of its 2 names (a hard link: the same "
        "file); stop that watcher first, or give this one a copy of its own"
    )
    assert not (built.state_path.parent / ".rsi" / "other.json" / "ledger.sqlite3").exists()


def test_a_hard_link_made_after_a_save_by_rename_is_refused(
    built: Project, handle: WatchHandle
) -> None:
    """Red team: the lock stayed on the inode the save replaced, so a hard link of the new
    file got a second watcher."""
    tmp = built.state_path.with_name(".rsi_state.json.tmp")
    tmp.write_bytes(_invalid(built))
    os.replace(tmp, built.state_path)
    _next(handle, 1)
    other = built.state_path.with_name("other.json")
    os.link(built.state_path, other)
    with pytest.raises(WatchError, match="already watched under another of its 2 names"):
        watch(other, settings=FAST, template_dir=PROBE_TEMPLATES)


def test_sigterm_stops_rsi_watch_cleanly(built: Project) -> None:
    proc = _rsi_watch(built)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "watching" in json.loads(line)["message"]:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    # The lock is free again: a new watcher starts.
    watch(built.state_path, settings=FAST, template_dir=PROBE_TEMPLATES).stop()


def test_rm_rf_rsi_under_the_watcher_stops_it_in_one_line(built: Project) -> None:
    """The lock lived in the deleted folder: a second watcher got in and the first went on
    writing a new history (red team). The first stops; nothing is written behind it."""
    proc = _rsi_watch(built)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            if "watching" in json.loads(line)["message"]:
                break
        shutil.rmtree(built.state_path.parent / ".rsi")
        assert proc.wait(timeout=10) == 2
        assert proc.stderr.read().splitlines()[-1] == (
            "rsi: error: rsi_state.json: .rsi/rsi_state.json (the ledger and the watch lock) "
            "was deleted while watching; the watcher stopped rather than start a new history "
            "behind it; run rsi watch again to start one"
        )
    finally:
        proc.kill()
    assert not (built.state_path.parent / ".rsi").exists()


def _rsi_watch(project: Project) -> subprocess.Popen[str]:
    argv = ["watch", "--state", str(project.state_path), "--log-json", "--no-screen"]
    return subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", *argv, "--templates", str(PROBE_TEMPLATES)],
        cwd=REPO,
        env=dict(os.environ, RSI_BACKEND="python"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_kill_9_of_the_watcher_leaves_no_compiler_running(built: Project, tmp_path: Path) -> None:
    """The compile workers died with the watcher, but the C compilers they had started kept
    running, orphaned (red team). ``CC`` is a compiler that takes two minutes."""
    cache = built.generated_dir / ".cache"
    cache.unlink()  # not the session's module cache: this compile must run the compiler
    cache.mkdir()
    cc = tmp_path / "slow-cc"
    cc.write_text('#!/bin/sh\ncase "$*" in *--version*) exec cc "$@";; esac\nsleep 120\n')
    cc.chmod(0o755)
    argv = ["watch", "--state", str(built.state_path), "--backend", "cython", "--log-json"]
    argv += ["--no-screen", "--templates", str(PROBE_TEMPLATES)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", *argv],
        cwd=REPO,
        env=dict(os.environ, CC=str(cc)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: dict[int, str] = {}  # every process the watcher started: pid -> name
    try:
        deadline = time.monotonic() + 120
        while "sleep" not in seen.values():
            assert time.monotonic() < deadline, "no compiler started within 120 s"
            assert proc.poll() is None, "the watcher ended"
            seen |= {pid: _name(pid) for pid in _descendants(proc.pid) if pid not in seen}
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while (alive := {pid for pid in seen if _alive(pid)}) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {_name(pid) for pid in alive} == set()
    finally:
        proc.kill()
        for pid, name in seen.items():
            if _alive(pid) and _name(pid) == name:  # not a pid reused meanwhile
                os.kill(pid, signal.SIGKILL)


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    todo = [root]
    while todo:
        parent = todo.pop()
        children = {pid for pid, ppid in parents.items() if ppid == parent}
        found |= children
        todo.extend(children)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.mark.slow
class TestVersions:
    """A save without a bumped "version" is committed as the next one; the file is left as
    saved. A bumped save keeps its number."""

    def test_unbumped_and_bumped_saves(self, make_project: Callable[..., Project]) -> None:
        project = make_project(templates=None)
        project.build(PURE)
        settings = WatchSettings(debounce_ms=30, rescan_ms=200, compile=PURE)
        path = project.state_path
        h = watch(path, settings=settings)
        try:
            unbumped = _edited(path, version=1, attention=4.5)
            path.write_bytes(unbumped)
            _next(h, 1, timeout_s=60)
            (live,) = h.history()
            assert (
                live.message
                == f"v2 (saved as version 1): pure tier {live.serving} live (gate: screen)"
            )
            assert (live.outcome, live.version, live.state_sha256) == (
                Outcome.PURE_LIVE,
                2,
                _sha(unbumped),
            )
            assert path.read_bytes() == unbumped  # never rewritten behind the editor
            committed = json.loads(project.ledger.state(2).data)
            assert committed == dict(json.loads(unbumped), version=2)
        finally:
            h.stop()
        status = project.status()  # the file is the committed v2, not an uncommitted edit
        assert (status.state_file_version, status.state_file_saved_as) == (2, 1)
        # A restart (and every rescan) takes the file for the committed v2: nothing to judge.
        h = watch(path, settings=settings)
        try:
            time.sleep(0.6)
            assert h.history() == ()
            path.write_bytes(_edited(path, version=1, attention=4.0))  # unbumped again
            _next(h, 1, timeout_s=60)
            assert h.history()[0].message.startswith("v3 (saved as version 1): pure tier ")
            bumped = _edited(path, version=7, attention=3.5)
            path.write_bytes(bumped)
            _next(h, 2, timeout_s=60)
            event = h.history()[1]
            assert event.message == f"v7: pure tier {event.serving} live (gate: screen)"
            assert project.ledger.versions() == [1, 2, 3, 7]
            assert project.ledger.state(7).data == bumped
        finally:
            h.stop()


@pytest.mark.slow
def test_a_worse_template_edit_made_while_nobody_watched_is_judged_at_start(
    make_project: Callable[..., Project], tmp_path: Path
) -> None:
    """Red team: the edited templates were taken for the serving build's, and went live with
    the next state edit ungated; a rejected template edit overwrote the kept state edit."""
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "codegen" / "templates", templates)
    project = make_project(templates=templates)
    serving = project.build(PURE).build_id
    kept = project.state_path.parent / "rsi_state.rejected.json"
    kept.write_bytes(b"an earlier rejected edit\n")
    state_before = project.state_path.read_bytes()
    reasoning = templates / "reasoning.py"
    original = reasoning.read_text()
    broken = original.replace(
        "def _number_id(numbers: cython.int[::1], n: cython.int) -> cython.int:\n",
        "def _number_id(numbers: cython.int[::1], n: cython.int) -> cython.int:\n    return -1\n",
    )
    reasoning.write_text(broken)  # counting answers lose their number words: worse
    h = watch(project.state_path, settings=replace(FAST, screen=True), template_dir=templates)
    try:
        _next(h, 1, timeout_s=120)
        (event,) = h.history()
        assert event.outcome is Outcome.ROLLED_BACK, event.message
        assert event.message.startswith("template change not promoted (reject: held-out ")
        assert event.message.endswith(
            f"build {serving} keeps serving; {templates} is left as edited: fix or revert it"
        )
        assert h.current().build_id == serving
        assert kept.read_bytes() == b"an earlier rejected edit\n"
        assert project.state_path.read_bytes() == state_before
        # A state edit while the rejected templates are still there would take their blame:
        # it waits, untouched, and is judged once they are reverted.
        edit = _edited(project.state_path, version=2, attention=4.5)
        project.state_path.write_bytes(edit)
        _next(h, 2, timeout_s=120)
        refused = h.history()[1]
        assert (refused.outcome, refused.message) == (
            Outcome.REFUSED,
            f"rsi_state.json: not judged while {templates} holds the template change the gate "
            "rejected; fix or revert it, and this edit is judged with it",
        )
        assert project.state_path.read_bytes() == edit
        reasoning.write_text(original)
        _next(h, 3, timeout_s=120)
        assert h.history()[2].outcome is Outcome.PURE_LIVE, h.history()[2].message
        assert project.ledger.state(2).data == edit
    finally:
        h.stop()
    assert kept.read_bytes() == b"an earlier rejected edit\n"


@pytest.mark.slow
def test_a_rollback_during_a_judgement_wins(
    make_project: Callable[..., Project], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team: `rsi rollback` while an edit was judged was undone by the judgement, and the
    restored file was then committed as a new edit."""
    project = make_project(templates=None)
    project.build(PURE)
    v1 = project.state_path.read_bytes()
    settings = WatchSettings(debounce_ms=30, rescan_ms=200, compile=PURE)
    h = watch(project.state_path, settings=settings)
    try:
        project.state_path.write_bytes(_edited(project.state_path, version=2, attention=4.5))
        _next(h, 1, timeout_s=60)
        judge_pure = JUDGE._pure

        def rolled_back_meanwhile(ctx: Any, good: Any) -> Any:
            built = judge_pure(ctx, good)
            Project(project.state_path).rollback()  # another command, mid-judgement
            return built

        monkeypatch.setattr(JUDGE, "_pure", rolled_back_meanwhile)
        project.state_path.write_bytes(_edited(project.state_path, version=3, attention=4.0))
        _next(h, 2, timeout_s=60)
        followed = h.history()[1]
        assert (followed.outcome, followed.version) == (Outcome.FOLLOWED, 1), followed.message
        time.sleep(1.0)  # rescans: the restored file is not taken for a new edit
        assert len(h.history()) == 2
        active = project.ledger.active()
        assert active is not None and active.version == 1
        assert h.current().build_id == active.build_id
        assert project.state_path.read_bytes() == v1
    finally:
        h.stop()


def _edited(path: Path, *, version: int, attention: float) -> bytes:
    data = json.loads(path.read_text())
    data["version"] = version
    data["scoring"]["attention"] = attention
    return (json.dumps(data, indent=2) + "\n").encode()


@pytest.mark.slow
def test_end_to_end_pure_tier(make_project: Callable[..., Project]) -> None:
    """Shipped templates, pure tier: a coefficient edit goes live, a worse one rolls back."""
    project = make_project(templates=None)
    project.build(PURE)
    swapped: list[str] = []
    settings = WatchSettings(debounce_ms=30, compile=PURE)
    h = watch(project.state_path, settings=settings, on_swap=lambda b: swapped.append(b.build_id))
    try:
        good = json.loads(project.state_path.read_text())
        good["version"] = 2
        good["scoring"]["attention"] = 4.5
        project.state_path.write_text(json.dumps(good, indent=2) + "\n")
        _next(h, 1, timeout_s=60)
        live = h.history()[0]
        assert live.outcome is Outcome.PURE_LIVE and live.gate == "screen"
        assert swapped == [h.current().build_id]
        worse = dict(good, version=3)
        worse["experts"] = {k: dict(v, weight=0.0) for k, v in good["experts"].items()}
        raw = (json.dumps(worse, indent=2) + "\n").encode()
        project.state_path.write_bytes(raw)
        _next(h, 2, timeout_s=60)
        event = h.history()[1]
        assert event.outcome is Outcome.ROLLED_BACK
        assert h.current().build_id == swapped[-1]
        assert project.state_path.read_bytes() == project.ledger.state(2).data
        assert (project.state_path.parent / "rsi_state.rejected.json").read_bytes() == raw
        # The same worse content saved again (it merges with the restore's events): judged
        # again, not taken for the content already judged.
        project.state_path.write_bytes(raw)
        _next(h, 3, timeout_s=60)
        assert h.history()[2].outcome is Outcome.ROLLED_BACK
        assert project.state_path.read_bytes() == project.ledger.state(2).data
        # Another command (rsi rollback) activates v1: the watcher serves it and takes it as
        # the last good state, never the build it had before.
        Project(project.state_path).rollback()
        _next(h, 4, timeout_s=60)
        followed = h.history()[3]
        assert followed.outcome is Outcome.FOLLOWED and followed.version == 1
        active = project.ledger.active()
        assert active is not None and h.current().build_id == active.build_id
    finally:
        h.stop()


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_the_pure_tier_is_built_outside_the_serving_interpreter(
    built: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its threads serve: the pure tier renders, checks and publishes in the warm build
    worker (`codegen.build.build_in_worker`), whose error comes back as it was raised."""

    def in_process(*args: object) -> None:
        raise AssertionError("built in the serving interpreter")

    templates = tmp_path / "templates"
    shutil.copytree(PROBE_TEMPLATES, templates)
    project = Project(built.state_path, template_dir=templates)
    h = watch(project.state_path, settings=FAST, template_dir=templates)
    serving = h.current().build_id
    monkeypatch.setattr(codegen.build, "_build_state", in_process)
    try:
        probe = templates / "probe.py.j2"
        lines = probe.read_text().count("\n")
        probe.write_text(probe.read_text() + "{{ undefined_name.field }}\n")
        _next(h, 1)
        (event,) = h.history()
        assert (event.outcome, event.message) == (
            Outcome.BUILD_FAILED,
            f"probe.py.j2:{lines + 1}: UndefinedError: 'undefined_name' is undefined",
        )
        assert h.current().build_id == serving
    finally:
        h.stop()
