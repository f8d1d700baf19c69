"""A module Cython refuses is served as pure Python when that tier passes the checks and its
selftest; the manifest records every attempt with its template line and state field, and
``rsi status`` names the degraded module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from codegen.toolchain import CompileSettings
from runtime import cli
from runtime.project import Project

REPO = Path(__file__).resolve().parents[2]
WOBBLY = '''"""Valid Python that Cython refuses: a string assigned to a C int."""

import cython

RAG: float = {{ state.scoring.rag|num }}


def rsi_selftest() -> float:
    """Deterministic probe."""
    label: cython.int = {{ state.answer_vocabulary[1]|pyrepr }}
    return RAG * len(str(label))
'''


@pytest.mark.slow
def test_a_cython_error_degrades_one_module_and_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    shutil.copy(REPO / "tests" / "fixtures" / "templates" / "probe.py.j2", templates)
    (templates / "wobbly.py.j2").write_text(WOBBLY)
    state = json.loads((REPO / "rsi_state.json").read_text())
    state["version"] = 1
    (tmp_path / "rsi_state.json").write_text(json.dumps(state))
    project = Project(tmp_path / "rsi_state.json", template_dir=templates)
    settings = CompileSettings(backend="cython", shared_utility=False, jobs=1)
    report = project.build(settings)

    manifest = json.loads((project.generated_dir / report.build_id / "manifest.json").read_text())
    assert manifest["degraded"] == ["wobbly"]
    modules = manifest["modules"]
    assert (modules["probe"]["tier"], modules["wobbly"]["tier"]) == ("cython", "python")
    assert modules["wobbly"]["attempts"] == [
        {
            "backend": "cython",
            "flags": ["-O1", "-pipe", "-fno-strict-aliasing"],
            "outcome": "failed",
            "diagnostic": "cython: wobbly.py: wobbly.py:10:24: Only single-character string "
            "literals can be coerced into ints.",
            "kind": "cython",
            "origin": "from wobbly.py.j2:10 `label: cython.int = {{ state.answer_vocabulary[1]"
            "|pyrepr }}`, state field answer_vocabulary[1]",
        },
        {
            "backend": "python",
            "flags": [],
            "outcome": "fallback",
            "diagnostic": "",
            "kind": "",
            "origin": "",
        },
    ]
    loaded = project.load_active()
    assert loaded.module("wobbly").rsi_selftest() == state["scoring"]["rag"] * 2
    assert loaded.module("probe").rsi_selftest() == state["scoring"]["rag"] * 3.0

    assert cli.main(["status", "--state", str(project.state_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        "degraded: wobbly runs as pure Python (1 failed attempts; cython: wobbly.py: "
        "wobbly.py:10:24: Only single-character string literals can be coerced into ints. "
        "[from wobbly.py.j2:10 `label: cython.int = {{ state.answer_vocabulary[1]|pyrepr }}`, "
        "state field answer_vocabulary[1]])"
    )
