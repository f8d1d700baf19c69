"""The Nuitka backend end to end on the smallest build (one module): compiled through the
same cache, loaded side by side with another content of the same module, Nuitka's cache
kept between builds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codegen.toolchain import EXT_SUFFIX, CompileSettings
from runtime.project import Project

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "tests" / "fixtures" / "templates"

pytest.importorskip("nuitka", reason="the nuitka extra is not installed: pip install '.[nuitka]'")


@pytest.mark.slow
def test_nuitka_builds_load_side_by_side(tmp_path: Path) -> None:
    state = json.loads((REPO / "rsi_state.json").read_text())
    state.update(version=1, experts={"tracker": {"kind": "tracking", "weight": 1.0}})
    (tmp_path / "rsi_state.json").write_text(json.dumps(state))
    project = Project(tmp_path / "rsi_state.json", template_dir=PROBE)
    settings = CompileSettings(backend="nuitka", jobs=1)
    first = project.build(settings)
    manifest = json.loads((project.generated_dir / first.build_id / "manifest.json").read_text())
    assert manifest["tier"] == "nuitka" and manifest["degraded"] == []
    assert manifest["modules"]["probe"]["artifact"] == f"probe{EXT_SUFFIX}"
    assert manifest["modules"]["probe"]["attempts"][0]["outcome"] == "compiled"
    old = project.load_active().module("probe")
    first_rag = state["scoring"]["rag"]
    assert old.rsi_selftest() == first_rag * 3.0
    nuitka_cache = project.generated_dir / ".cache" / "nuitka"
    assert nuitka_cache.is_dir() and any(nuitka_cache.iterdir())

    state.update(version=2, scoring={**state["scoring"], "rag": 2.5})
    (tmp_path / "rsi_state.json").write_text(json.dumps(state))
    second = project.build(settings)
    assert second.build_id != first.build_id
    new = project.load_active().module("probe")
    # Both compiled contents of `probe` live in one process, each under its build's name.
    assert old is not new and new.__name__ == f"rsi_build_{second.build_id}.probe"
    assert (old.rsi_selftest(), new.rsi_selftest()) == (first_rag * 3.0, 7.5)
