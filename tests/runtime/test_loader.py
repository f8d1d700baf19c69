"""One importer: a module is shared between builds only when it would run the same code."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from codegen.toolchain import CompileSettings
from runtime.loader import LoadedBuild, load_build
from runtime.project import Project
from tests.conftest import PROBE_TEMPLATES, edit_state

USER = '''"""Reads the static module's value."""

from . import lib

RAG: float = {{ state.scoring.rag|num }}


def value() -> int:
    """The static module's value."""
    return lib.VALUE
'''


def _templates(root: Path, value: int) -> Path:
    shutil.copytree(PROBE_TEMPLATES, root, dirs_exist_ok=True)
    (root / "user.py.j2").write_text(USER)
    (root / "lib.py").write_text(f'"""A static module."""\n\nVALUE: int = {value}\n')
    return root


def test_a_changed_static_module_reaches_its_unchanged_importer(
    make_project: Callable[..., Project], tmp_path: Path
) -> None:
    templates = tmp_path / "templates"

    def edit_the_static_module(project: Project) -> None:
        _templates(templates, 2)  # `user` renders the same
        edit_state(project, version=2)

    first, second = _two_builds(make_project, templates, edit_the_static_module)
    assert first.manifest.modules["user"].artifact_sha256 == (
        second.manifest.modules["user"].artifact_sha256
    )
    assert (first.module("user").value(), second.module("user").value()) == (1, 2)


def test_an_unchanged_module_is_shared(
    make_project: Callable[..., Project], tmp_path: Path
) -> None:
    first, second = _two_builds(
        make_project,
        tmp_path / "templates",
        lambda project: edit_state(project, version=2, scoring__rag=2.5),
    )
    assert second.module("user") is not first.module("user")  # its own RAG changed
    assert second.module("lib") is first.module("lib")
    assert second.module("probe") is not first.module("probe")


def _two_builds(
    make_project: Callable[..., Project], templates: Path, change: Callable[[Project], object]
) -> tuple[LoadedBuild, LoadedBuild]:
    """A build of the templates (``lib.VALUE`` 1), then one after ``change``, both loaded."""
    project = make_project(templates=_templates(templates, 1))
    python = CompileSettings(backend="python")
    first = load_build(Path(project.build(python).path), template_dir=templates)
    change(project)
    return first, load_build(Path(project.build(python).path), template_dir=templates)
