"""A save that watch mode committed under another version number (renumbered) is an alias of
that version: ``rsi status``, ``rollback``, ``build`` and ``promote`` take the file for it."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from codegen.state import dump_state, parse_state
from codegen.toolchain import CompileSettings
from runtime.cli import main
from runtime.gate import Decision, Verdict
from runtime.ledger import CommitRequest, Ledger
from runtime.project import Project
from runtime.promote import promote

PURE = CompileSettings(backend="python")


def _renumbered_save(project: Project) -> tuple[bytes, bytes]:
    """Commit an edit saved as version 1 as v2 the way the watcher does (the decision and
    the commit in one transaction); the file keeps the saved bytes. Returns (saved, v2)."""
    data = json.loads(project.state_path.read_bytes())
    data["scoring"]["attention"] = 4.5
    saved = (json.dumps(data, indent=2) + "\n").encode()  # "version": 1, as saved
    committed = dump_state(parse_state(saved).model_copy(update={"version": 2}))
    state = parse_state(committed)
    built = project.build_candidate(state, committed, PURE)
    active = project.ledger.active()
    assert active is not None
    decision = Decision(
        Verdict.PROMOTE, "not-worse", built.build_id, active.build_id, "changes no answer", {}
    )
    project.ledger.record_decision(
        decision,
        candidate_data=committed,
        candidate_version=2,
        commit_as=CommitRequest(built.build_id, built.tier, 10, saved=saved),
    )
    project.state_path.write_bytes(saved)
    return saved, committed


@pytest.fixture
def renumbered(make_project: Callable[..., Project]) -> tuple[Project, bytes, bytes]:
    project = make_project()
    project.build(PURE)
    return (project, *_renumbered_save(project))


def test_status_reads_a_renumbered_save_as_its_committed_version(
    renumbered: tuple[Project, bytes, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    project, saved, _ = renumbered
    report = project.status()
    assert (report.state_file_version, report.state_file_committed) == (2, True)
    assert report.state_file_saved_as == 1
    assert main(["status", "--state", str(project.state_path)]) == 0
    assert "; state file v2 (saved as version 1) matches; history [1, 2]" in capsys.readouterr().out
    assert project.state_path.read_bytes() == saved


def test_build_takes_a_renumbered_save_for_its_committed_version(
    renumbered: tuple[Project, bytes, bytes],
) -> None:
    project, saved, committed = renumbered
    active = project.ledger.active()
    report = project.build(PURE)  # was: "version 1 is already committed with different content"
    assert (report.state_version, report.build_id) == (2, active.build_id if active else None)
    assert project.ledger.state(2).data == committed
    assert project.state_path.read_bytes() == saved  # left as saved


def test_rollback_keeps_no_copy_of_a_renumbered_save(
    renumbered: tuple[Project, bytes, bytes],
) -> None:
    project, _, _ = renumbered
    report = project.rollback()
    assert (report.state_version, report.kept_uncommitted) == (1, None)
    assert list(project.state_path.parent.glob("*.uncommitted-*")) == []


def test_promote_takes_a_renumbered_save_for_its_committed_version(
    renumbered: tuple[Project, bytes, bytes],
) -> None:
    project, saved, _ = renumbered
    report = promote(project, saved, settings=PURE, source=project.state_path.name)
    assert report.promoted and report.state_version == 2  # already committed: nothing decided
    assert report.warnings == ()
    assert project.state_path.read_bytes() == saved


def test_aliases_follow_the_history_limit(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.commit(1, b'{"version": 1}', "a" * 16, "python", limit=2)
    decision = Decision(Verdict.PROMOTE, "not-worse", "b" * 16, "a" * 16, "r", {})
    saved = b'{"version": 1, "x": 1}'
    ledger.record_decision(
        decision,
        candidate_data=b'{"version": 2, "x": 1}',
        candidate_version=2,
        commit_as=CommitRequest("b" * 16, "python", 2, saved=saved),
    )
    assert ledger.committed_version(saved) == 2
    assert ledger.resolve(saved) == b'{"version": 2, "x": 1}'
    assert ledger.resolve(b'{"version": 1}') == b'{"version": 1}'  # a commit is itself
    ledger.commit(3, b'{"version": 3}', "c" * 16, "python", limit=2)
    ledger.commit(4, b'{"version": 4}', "d" * 16, "python", limit=2)
    assert 2 not in ledger.versions()
    assert ledger.committed_version(saved) is None
    assert ledger.resolve(saved) == saved
    with sqlite3.connect(ledger.path) as db:
        assert db.execute("SELECT COUNT(*) FROM aliases").fetchone() == (0,)


def test_a_ledger_from_before_aliases_is_read_and_gains_them(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as db:  # the tables a ledger had before aliases
        db.executescript(
            "CREATE TABLE states (version INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, "
            "data BLOB NOT NULL, build_id TEXT NOT NULL, tier TEXT NOT NULL, "
            "committed_at REAL NOT NULL);"
            "CREATE TABLE active (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER "
            "NOT NULL, build_id TEXT NOT NULL, tier TEXT NOT NULL);"
        )
        data = b'{"version": 1}'
        digest = hashlib.sha256(data).hexdigest()
        db.execute("INSERT INTO states VALUES (1, ?, ?, 'a', 'python', 0)", (digest, data))
        db.execute("INSERT INTO active VALUES (1, 1, 'a', 'python')")
    ledger = Ledger(path)
    assert ledger.committed_version(b"anything") is None
    assert ledger.resolve(b"anything") == b"anything"
    assert ledger.versions() == [1]
    assert ledger.committed_version(data) == 1
    with sqlite3.connect(path) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "aliases" in tables
