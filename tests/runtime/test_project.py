"""Project API: build, commit, rollback byte for byte with no compiler, restart, diff."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

import codegen.compile
from codegen.errors import StateError
from codegen.state import RSIState, parse_state
from codegen.toolchain import CompileSettings
from runtime.project import Project
from tests.conftest import REPO, edit_state

PY = CompileSettings(backend="python")


class TestBuild:
    def test_unchanged_state_is_a_cache_hit(self, make_project: Callable[..., Project]) -> None:
        project = make_project()
        first = project.build(PY)
        again = project.build(PY)
        assert again.build_id == first.build_id
        assert again.modules_compiled == 0

    def test_version_must_move_forward(self, make_project: Callable[..., Project]) -> None:
        project = make_project()
        project.build(PY)
        edit_state(project, scoring__rag=3.0)
        with pytest.raises(
            StateError,
            match=r"^rsi_state.json: version 1 is already committed with different content; "
            r'set "version" to 2$',
        ):
            project.build(PY)

    def test_a_version_jump_that_would_exhaust_the_schema_is_refused(
        self, make_project: Callable[..., Project]
    ) -> None:
        project = make_project()
        project.build(PY)
        edit_state(project, version=2**53, scoring__rag=3.0)
        with pytest.raises(
            StateError,
            match=r"^rsi_state.json: version 9007199254740992 jumps more than 1000000000 past "
            r'the committed 1; set "version" to 2$',
        ):
            project.build(PY)
        edit_state(project, version=1_000_000_001, scoring__rag=3.0)
        assert project.build(PY).state_version == 1_000_000_001

    def test_only_the_changed_module_recompiles(self, make_project: Callable[..., Project]) -> None:
        project = make_project(templates=None)
        project.build(PY)
        edit_state(project, version=2, scoring__rag=3.0)
        report = project.build(PY)
        assert report.modules_compiled == 1


class TestRollback:
    def test_restores_bytes_and_build_without_compiler(
        self, make_project: Callable[..., Project], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        project = make_project()
        v1 = project.build(CompileSettings())
        v1_bytes = project.state_path.read_bytes()
        edit_state(project, version=2, scoring__rag=4.0)
        v2 = project.build(CompileSettings())
        assert v2.build_id != v1.build_id

        def no_compiler(*args: object, **kwargs: object) -> None:
            raise AssertionError("rollback must not compile")

        monkeypatch.setattr(codegen.compile, "_cc", no_compiler)
        monkeypatch.setattr(codegen.compile, "_cythonize", no_compiler)
        report = project.rollback()
        assert report.state_version == 1 and not report.compiled
        assert project.state_path.read_bytes() == v1_bytes
        assert report.build_id == v1.build_id
        assert project.load_active().build_id == v1.build_id

    def test_rollback_to_a_version_and_forward_again(
        self, make_project: Callable[..., Project]
    ) -> None:
        project = make_project()
        project.build(PY)
        edit_state(project, version=2, scoring__rag=4.0)
        v2_bytes = project.state_path.read_bytes()
        v2 = project.build(PY)
        project.rollback(1)
        assert project.rollback(2).build_id == v2.build_id
        assert project.state_path.read_bytes() == v2_bytes


class TestRestart:
    def test_active_build_persists_across_processes(
        self, make_project: Callable[..., Project]
    ) -> None:
        project = make_project()
        report = project.build(PY)
        code = (
            "from pathlib import Path; from runtime.project import Project; "
            f"p = Project(Path({str(project.state_path)!r}), "
            f"template_dir=Path({str(project.template_dir)!r})); "
            "print(p.load_active().build_id)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
        )
        assert out.stdout.strip() == report.build_id


class TestDiff:
    def test_diff_shows_the_changed_constant(self, make_project: Callable[..., Project]) -> None:
        project = make_project()
        edit_state(project, scoring__rag=1.0)
        project.build(PY)
        edit_state(project, version=2, scoring__rag=2.0)
        project.build(PY)
        diff = project.diff("v1", "v2")
        assert "-RAG: float = 1.0" in diff and "+RAG: float = 2.0" in diff


class TestGc:
    def test_removes_only_unreferenced_builds(self, make_project: Callable[..., Project]) -> None:
        project = make_project()
        v1 = project.build(PY)
        edit_state(project, scoring__rag=9.0)
        orphan = project.build_candidate(*_state_and_bytes(project), PY)  # built, never committed
        assert (project.generated_dir / orphan.build_id).exists()
        report = project.gc()
        assert report.removed_builds == [orphan.build_id]
        assert project.load_active().build_id == v1.build_id


def _state_and_bytes(project: Project) -> tuple[RSIState, bytes]:
    data = project.state_path.read_bytes()
    return parse_state(data), data
