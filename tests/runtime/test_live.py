"""Two-tier rebuild: pure-Python tier live first, compiled tier after a differential test."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from codegen.render import render_sources
from codegen.state import load_state
from codegen.toolchain import CompileSettings
from runtime.live import LiveProject, TierMismatch, differential_check
from runtime.loader import load_build
from runtime.project import Project
from runtime.tiers import SELFTEST_ABS_TOL, SELFTEST_REL_TOL, agree
from tests.conftest import SHIPPED_STATE, edit_state


def test_two_tier_rebuild(make_project: Callable[..., Project]) -> None:
    project = make_project()
    project.build(CompileSettings(backend="python"))
    live = LiveProject(project)
    edit_state(project, version=2, scoring__rag=5.0)
    swap = live.rebuild(CompileSettings(), two_tier=True)
    assert swap.interim is not None and swap.interim.tier == "python"
    assert live.current().tier == "cython"
    assert live.current().module("probe").weighted(2.0) == 10.0


def test_agreeing_tiers_are_compared(make_project: Callable[..., Project]) -> None:
    project = make_project()
    a = load_build(
        project.generated_dir / project.build(CompileSettings(backend="python")).build_id,
        template_dir=project.template_dir,
    )
    b = load_build(
        project.generated_dir / project.build(CompileSettings()).build_id,
        template_dir=project.template_dir,
    )
    assert differential_check(a, b) == ["probe"]


def test_shipped_templates_have_selftests() -> None:
    sources = render_sources(load_state(SHIPPED_STATE))
    assert [n for n, src in sources.items() if "def rsi_selftest()" in src] == [
        "attention",
        "scoring",
    ]


def test_mismatch_is_detected(make_project: Callable[..., Project]) -> None:
    project = make_project()
    edit_state(project, scoring__rag=1.0)
    a = load_build(
        project.generated_dir / project.build(CompileSettings(backend="python")).build_id,
        template_dir=project.template_dir,
    )
    edit_state(project, version=2, scoring__rag=2.0)
    b = load_build(
        project.generated_dir / project.build(CompileSettings()).build_id,
        template_dir=project.template_dir,
    )
    with pytest.raises(TierMismatch, match=r"^module probe: cython tier of build \w+ disagrees"):
        differential_check(a, b)


def _close(a: object, b: object) -> bool:
    return agree(a, b, rel_tol=SELFTEST_REL_TOL, abs_tol=SELFTEST_ABS_TOL)


class TestTolerance:
    def test_float32_rounding_against_float64_passes(self) -> None:
        assert _close([0.18, 2e-6, 0.05], [0.18 + 3e-6, 6e-6, 0.05])

    def test_a_real_difference_fails(self) -> None:
        assert not _close([0.18, 0.0, 0.05], [0.18, 1e-3, 0.05])

    def test_lengths_must_match(self) -> None:
        assert not _close([1.0], [1.0, 1.0])

    def test_exact_answers_with_zero_tolerance(self) -> None:
        assert agree(("kitchen", 0.5), ("kitchen", 0.5), rel_tol=0.0, abs_tol=0.0)
        assert not agree(("kitchen", 0.5), ("kitchen", 0.5 + 1e-12), rel_tol=0.0, abs_tol=0.0)
        assert not agree(("kitchen", 0.5), ("garden", 0.5), rel_tol=0.0, abs_tol=0.0)
