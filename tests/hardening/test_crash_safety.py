"""Crash safety: what a killed build, promotion or rollback leaves behind is never taken for
a build, is cleaned by the next command, and loses nothing (``tools/crash_trials.py``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PURE, Served

from codegen.build import MANIFEST
from runtime.loader import LoadError
from tests.conftest import load_tool

REPO = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _fake_staging(parent: Path, pid: int, served: Served) -> Path:
    """A staging dir as a killed publish leaves it: a full copy of a build, manifest too."""
    staging = parent / f".tmp-{pid}-abcdefgh"
    shutil.copytree(served.project.generated_dir / served.build_id, staging)
    return staging


def test_staging_left_by_a_killed_process_is_never_a_build_and_is_removed(
    served: Served,
) -> None:
    project = served.project
    dead = _dead_pid()
    left = [
        _fake_staging(project.generated_dir, dead, served),
        _fake_staging(project.generated_dir / ".cache", dead, served),
    ]
    tmp_state = project.state_path.with_name(f".{project.state_path.name}.x1y2.tmp")
    tmp_state.write_bytes(b'{"version": 1, "experts": {')  # a torn atomic write
    with pytest.raises(
        LoadError, match=r"^'.tmp' names no build; give a build id, a unique prefix or vN$"
    ):
        project.resolve_build(".tmp")
    assert project.resolve_build(served.build_id[:6]).name == served.build_id

    project.build(PURE)

    assert not any(path.exists() for path in left)
    assert not tmp_state.exists()
    assert project.status().active_build == served.build_id


def test_staging_of_a_live_process_is_kept(served: Served) -> None:
    live = _fake_staging(served.project.generated_dir, os.getpid(), served)
    try:
        served.project.build(PURE)
        assert (live / MANIFEST).exists()
    finally:
        shutil.rmtree(live)


def test_rollback_removes_leftovers_too(served: Served) -> None:
    project = served.project
    edited = json.loads(served.good)
    edited["version"] = 2
    edited["scoring"]["rag"] = 4.0
    project.state_path.write_text(json.dumps(edited, indent=2) + "\n")
    v2 = project.build(PURE)
    left = _fake_staging(project.generated_dir, _dead_pid(), served)

    report = project.rollback(1)

    assert not left.exists()
    assert (report.state_version, report.build_id) == (1, served.build_id)
    assert project.state_path.read_bytes() == served.good
    assert v2.build_id != served.build_id


@pytest.mark.slow
def test_crash_trials(tmp_path: Path) -> None:
    trials = load_tool("crash_trials")
    ops = ("build", "promote", "rollback", "gc")
    results, _ = trials.run_trials(5, cython_share=0.0, seed=7, work=tmp_path, ops=ops)
    failures = [f"{r.trial}: {r.error}" for r in results if r.error]
    assert not failures, failures
    assert sum(r.killed for r in results) >= 3
    assert {r.trial.op for r in results} == {"build", "promote", "rollback", "gc"}


@pytest.mark.slow
def test_gate_crash_trials(tmp_path: Path) -> None:
    """``rsi promote`` killed mid-way, once with a candidate the gate promotes, once with one
    it rejects: ledger, state file, builds and the kept candidate stay whole."""
    trials = load_tool("crash_trials")
    results, _ = trials.run_trials(2, cython_share=0.0, seed=7, work=tmp_path, ops=("gate",))
    failures = [f"{r.trial}: {r.error}" for r in results if r.error]
    assert not failures, failures
    assert [(r.trial.reject, r.trial.promotes) for r in results] == [(False, True), (True, False)]
