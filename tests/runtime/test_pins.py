"""In-flight pins: gc in another process never deletes a build a promotion is judging."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import runtime.promote
from codegen.state import parse_state
from codegen.toolchain import CompileSettings
from runtime.pins import pins_dir
from runtime.project import Project
from runtime.promote import promote
from runtime.sandbox import SandboxReport
from tests.conftest import REPO

PYTHON = CompileSettings(backend="python")


def edited(project: Project, version: int, rag: float) -> bytes:
    data = json.loads(project.state_path.read_text())
    data["version"] = version
    data["scoring"]["rag"] = rag
    return (json.dumps(data, indent=2) + "\n").encode()


def test_gc_keeps_a_build_pinned_by_a_live_process_only(
    make_project: Callable[..., Project],
) -> None:
    project = make_project(templates=None)
    project.build(PYTHON)
    raw = edited(project, 2, 5.5)
    build_id = project.build_candidate(parse_state(raw, "cand"), raw, PYTHON).build_id
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from runtime.pins import pin\n"
            "with pin(Path(sys.argv[1]), sys.argv[2]):\n"
            "    print('pinned', flush=True)\n"
            "    time.sleep(120)\n",
            str(project.state_path),
            build_id,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "pinned\n"
        assert build_id not in project.gc().removed_builds
        assert (project.generated_dir / build_id).is_dir()
    finally:
        holder.kill()  # SIGKILL: the pin file stays behind, as after a killed promotion
        holder.wait()
    (dead,) = pins_dir(project.state_path).iterdir()
    assert dead.name.startswith(f"{build_id}.{holder.pid}.")
    assert project.gc().removed_builds == [build_id]
    assert list(pins_dir(project.state_path).iterdir()) == []


def test_gc_in_another_process_during_a_promotion_keeps_the_candidate(
    make_project: Callable[..., Project], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(templates=None)
    project.build(PYTHON)
    real_first_run = runtime.promote.first_run
    gc_output: list[str] = []

    def gc_meanwhile(build_dir: Path, **kwargs: Any) -> SandboxReport:
        done = subprocess.run(
            [sys.executable, "-m", "runtime.cli", "gc", "--state", str(project.state_path)],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        gc_output.append(done.stdout)
        return real_first_run(build_dir, **kwargs)

    monkeypatch.setattr(runtime.promote, "first_run", gc_meanwhile)
    report = promote(project, edited(project, 2, 5.5), settings=PYTHON)
    assert gc_output == ["removed 0 builds, 0.0 MB freed\n"]
    assert report.promoted, report.decision.reason
    assert (project.generated_dir / report.build_id).is_dir()
    assert list(pins_dir(project.state_path).iterdir()) == []
