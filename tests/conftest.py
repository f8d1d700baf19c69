"""Shared fixtures: throwaway projects that share one module cache per test session."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from runtime.project import Project

REPO = Path(__file__).resolve().parents[1]
SHIPPED_STATE = REPO / "rsi_state.json"
PROBE_TEMPLATES = REPO / "tests" / "fixtures" / "templates"

#: Tests whose assertions hold only if the process gets the CPU on time: ``make test`` runs
#: them alone (``-m serial``) after the parallel pass (``-n 2 -m "not serial"``). Path prefix
#: relative to the repository -> why.
SERIAL = {
    "tests/runtime/kernels/test_gil.py": "a spinner thread must be scheduled within a 1 ms window",
    "tests/runtime/watch/": "debounce and quiet windows of tens of milliseconds, timed",
    "tests/runtime/test_watch": "debounce windows of 30-300 ms and sleeps that wait them out",
    "tests/hardening/test_loop_lock.py": "a refusal within 30 s of wall-clock time",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests listed in :data:`SERIAL` ``serial``."""
    for item in items:
        path = item.path.relative_to(REPO).as_posix()
        if any(path.startswith(prefix) for prefix in SERIAL):
            item.add_marker(pytest.mark.serial)


def pytest_configure(config: pytest.Config) -> None:
    """Every command runs in its own process: no ``rsi build`` of the suite, a session or
    module fixture's included, uses or starts the build server (an autouse fixture covered
    only the tests themselves, and a module fixture's build left a server running).
    tests/runtime/test_server.py switches it on for its own commands."""
    os.environ["RSI_BUILD_SERVER"] = "0"


@pytest.fixture(scope="session")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compiled-module cache for the whole session (compiling is the slow part)."""
    return tmp_path_factory.mktemp("module-cache")


@pytest.fixture
def make_project(tmp_path: Path, module_cache: Path) -> Callable[..., Project]:
    """Factory: a project dir with a copy of the shipped state (optionally edited)."""

    def make(
        *, templates: Path | None = PROBE_TEMPLATES, name: str = "proj", **edits: Any
    ) -> Project:
        root = tmp_path / name
        (root / "generated").mkdir(parents=True)
        (root / "generated" / ".cache").symlink_to(module_cache)
        data = json.loads(SHIPPED_STATE.read_text())
        data["version"] = 1  # tests count versions from 1, whatever the shipped state says
        data.update(edits)
        (root / "rsi_state.json").write_text(json.dumps(data, indent=2) + "\n")
        return Project(root / "rsi_state.json", template_dir=templates)

    return make


def edit_state(project: Project, **changes: Any) -> bytes:
    """Rewrite the project's state file with top-level or dotted-path changes."""
    data = json.loads(project.state_path.read_text())
    for key, value in changes.items():
        target = data
        *parents, leaf = key.split("__")
        for part in parents:
            target = target[part]
        target[leaf] = value
    raw = (json.dumps(data, indent=2) + "\n").encode()
    project.state_path.write_bytes(raw)
    return raw


def load_tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` (a script, not a package module) as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def copy_state(dst: Path) -> Path:
    """Copy the shipped state into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(SHIPPED_STATE, dst / "rsi_state.json"))
