"""``build_in_worker``: :func:`codegen.build.build_state` in a warm build worker process (watch
mode's pure tier): the same build, the same errors (class and message), and a worker gone
meanwhile replaced once."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import codegen.build
import codegen.compile
from codegen.build import build_in_worker, build_state
from codegen.compile import prestart_build_worker, stop_workers
from codegen.errors import CheckError, RenderError, RSIError
from codegen.manifest import STATE_FILE
from codegen.state import parse_state
from codegen.toolchain import CompileSettings
from runtime.project import Project
from tests.conftest import PROBE_TEMPLATES

PURE = CompileSettings(backend="python")
BUILD_POOL = codegen.compile._BUILD_POOL  # ("build", 0): not reniced


@pytest.fixture(autouse=True)
def _fresh_pool() -> Iterator[None]:
    stop_workers()
    yield
    stop_workers()


def _in_process_builds_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    def in_process(*args: object) -> None:
        raise AssertionError("built in the calling interpreter")

    monkeypatch.setattr(codegen.build, "_build_state", in_process)


def test_the_worker_builds_what_build_state_builds(
    make_project: Callable[..., Project], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project()
    data = project.state_path.read_bytes()
    state = parse_state(data)
    here = build_state(state, data, PURE, project.generated_dir, PROBE_TEMPLATES)
    shutil.rmtree(here.path)  # built again, in the worker
    _in_process_builds_fail(monkeypatch)
    there = build_in_worker(state, data, PURE, project.generated_dir, PROBE_TEMPLATES)
    assert (there.build_id, there.path, there.tier) == (here.build_id, here.path, "python")
    assert there.modules == here.modules == 1
    assert (there.path / STATE_FILE).read_bytes() == data


def _broken(tmp_path: Path, line: str) -> Path:
    templates = tmp_path / "templates"
    shutil.copytree(PROBE_TEMPLATES, templates)
    probe = templates / "probe.py.j2"
    probe.write_text(probe.read_text() + line)
    return templates


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("\n{{ undefined_name.field }}\n", RenderError),
        ("\nX = eval('{{ state.scoring.rag }}')\n", CheckError),
    ],
    ids=["render", "guard"],
)
def test_an_error_comes_back_as_its_class_with_its_message(
    make_project: Callable[..., Project],
    tmp_path: Path,
    line: str,
    kind: type[RSIError],
) -> None:
    templates = _broken(tmp_path, line)
    project = make_project(templates=templates)
    data = project.state_path.read_bytes()
    state = parse_state(data)
    with pytest.raises(kind) as here:
        build_state(state, data, PURE, project.generated_dir, templates)
    with pytest.raises(kind) as there:
        build_in_worker(state, data, PURE, project.generated_dir, templates)
    assert type(there.value) is kind
    assert str(there.value) == str(here.value)
    assert "probe.py.j2:" in str(there.value)  # the template line survives the trip


def test_a_build_worker_gone_meanwhile_is_replaced(
    make_project: Callable[..., Project], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project()
    prestart_build_worker()
    (gone,) = codegen.compile._warm_idle[BUILD_POOL]
    gone.kill()
    gone.wait()
    _in_process_builds_fail(monkeypatch)
    data = project.state_path.read_bytes()
    built = build_in_worker(parse_state(data), data, PURE, project.generated_dir, PROBE_TEMPLATES)
    assert built.path.is_dir()
    (fresh,) = codegen.compile._warm_idle[BUILD_POOL]
    assert fresh.pid != gone.pid and fresh.poll() is None


def test_a_fresh_worker_killed_mid_job_is_replaced_once(
    make_project: Callable[..., Project], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team: a worker killed during its first job failed the edit ("build worker died"),
    and nothing judged it again; only a worker found dead in the idle list was replaced."""
    project = make_project()
    asked = codegen.compile._ask
    killed: list[int] = []

    def kill_the_first(proc: Any, spec: dict[str, object]) -> dict[str, object] | None:
        if not killed:
            proc.kill()
            proc.wait()
            killed.append(proc.pid)
        return asked(proc, spec)

    monkeypatch.setattr(codegen.compile, "_ask", kill_the_first)
    _in_process_builds_fail(monkeypatch)
    data = project.state_path.read_bytes()
    built = build_in_worker(parse_state(data), data, PURE, project.generated_dir, PROBE_TEMPLATES)
    assert built.path.is_dir() and len(killed) == 1
