"""Hostile states: every corpus case is refused before rendering, in one line naming the
field, and the last good state and build keep serving."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest
from conftest import PURE, Served
from hardening_corpus import load_corpus, put_case

import codegen.render
import runtime.project
from codegen.errors import StateError

REPO = Path(__file__).resolve().parents[2]
BASE, CASES = load_corpus()
BY_ID = {case["id"]: case for case in CASES}


def _never(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError("a hostile state reached rendering")


def expected_message(case: dict[str, Any], state_path: Path) -> str:
    return str(case["error"]).replace("{path}", str(state_path))


def test_corpus_covers_the_issue() -> None:
    ids = set(BY_ID)
    assert len(CASES) >= 100
    for needed in (
        "name-newline-import",
        "name-single-quote",
        "name-backslash",
        "name-dunder-init",
        "name-python-keyword",
        "name-c-keyword",
        "name-cyrillic-a",
        "weight-nan",
        "weight-infinity",
        "rag-minus-infinity",
        "version-huge-literal",
        "weight-negative",
        "deep-nesting",
        "huge-file",
        "duplicate-top-level-key",
        "version-string",
        "truncated-half",
        "empty-file",
        "directory",
        "symlink-to-valid-state",
    ):
        assert needed in ids


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hostile_state_is_rejected_before_rendering(
    case: dict[str, Any], served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = served.project
    monkeypatch.setattr(codegen.render, "render_sources", _never)  # build imports it on use
    monkeypatch.setattr(runtime.project, "build_state", _never)
    written = put_case(case, BASE, project.state_path)
    message = expected_message(case, project.state_path)

    with pytest.raises(StateError, match=f"^{re.escape(message)}$"):
        project.build(PURE)

    assert "\n" not in message
    if written is not None:  # the user's file is left as they wrote it, to be fixed
        assert project.state_path.read_bytes() == written
    status = project.status()
    assert (status.active_build, status.state_version) == (served.build_id, 1)
    assert (status.state_file_version, status.state_file_committed) == (None, False)
    loaded = project.load_active()
    assert loaded.build_id == served.build_id
    assert loaded.module("tiny").rsi_selftest() == 3.0


def test_good_state_builds_again_after_the_corpus(served: Served) -> None:
    served.project.state_path.unlink(missing_ok=True)
    served.project.state_path.write_bytes(served.good)
    report = served.project.build(PURE)
    assert (report.build_id, report.modules_compiled) == (served.build_id, 0)
    assert served.project.status().state_file_committed


@pytest.mark.parametrize(
    "case_id", ["name-newline-import", "weight-nan", "truncated-half", "symlink-to-etc-passwd"]
)
def test_cli_prints_one_line_and_exits_2(case_id: str, served: Served) -> None:
    project = served.project
    case = BY_ID[case_id]
    put_case(case, BASE, project.state_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "runtime.cli", "build", "--backend", "python"]
    proc = subprocess.run(
        [*cmd, "--state", str(project.state_path)], capture_output=True, text=True, env=env
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == f"rsi: error: {expected_message(case, project.state_path)}\n"
    assert project.status().active_build == served.build_id
