"""Fixtures for the hardening tests: a project that serves a known good build."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hardening_corpus import TEMPLATES, load_corpus, serialize

from codegen.toolchain import CompileSettings
from runtime.project import Project

PURE = CompileSettings(backend="python")


@dataclass(frozen=True)
class Served:
    """A project whose state v1 is built and active."""

    project: Project
    build_id: str
    good: bytes


def serve(root: Path, cache: Path, *, templates: Path = TEMPLATES) -> Served:
    """Create a project in ``root`` from the corpus base state, build and activate it."""
    (root / "generated").mkdir(parents=True)
    (root / "generated" / ".cache").symlink_to(cache)
    base, _ = load_corpus()
    good = serialize(base)
    (root / "rsi_state.json").write_bytes(good)
    project = Project(root / "rsi_state.json", template_dir=templates)
    report = project.build(PURE)
    return Served(project, report.build_id, good)


@pytest.fixture(scope="session")
def hardening_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One render/check/module cache for every hardening project of the session."""
    return tmp_path_factory.mktemp("hardening-cache")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, hardening_cache: Path) -> Served:
    """A project serving the corpus base state (shared by one test module)."""
    return serve(tmp_path_factory.mktemp("served"), hardening_cache)
