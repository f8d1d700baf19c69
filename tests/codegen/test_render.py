"""Rendering: golden output of the probe template, injection-safe filters, version-neutral."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from codegen.errors import RenderError
from codegen.render import (
    _num,
    _pyrepr,
    build_modules,
    module_names,
    render_module,
    render_raw,
    render_sources,
)
from codegen.state import AttentionMechanism, load_state
from tests.conftest import PROBE_TEMPLATES, SHIPPED_STATE

REPO = SHIPPED_STATE.parent

GOLDEN = '''"""A tiny generated module for tests: one coefficient baked in."""

RAG: float = 2.5
'''


class TestGolden:
    def test_probe_module_bakes_the_coefficient(self) -> None:
        state = load_state(SHIPPED_STATE)
        state = state.model_copy(update={"scoring": state.scoring.model_copy(update={"rag": 2.5})})
        source = render_sources(state, PROBE_TEMPLATES)["probe"]
        assert source.startswith(GOLDEN)
        assert "return RAG * x" in source

    def test_version_does_not_reach_generated_code(self) -> None:
        state = load_state(SHIPPED_STATE)
        bumped = state.model_copy(update={"version": state.version + 41})
        assert render_sources(state) == render_sources(bumped)


class TestModuleNames:
    def test_one_module_per_template(self) -> None:
        assert module_names(PROBE_TEMPLATES) == ("probe",)

    def test_a_build_carries_only_the_selected_attention_mechanism(self) -> None:
        state = load_state(SHIPPED_STATE)
        arch = state.architecture.model_copy(update={"attention": AttentionMechanism.flash})
        names = build_modules(state.model_copy(update={"architecture": arch}))
        assert "attention_flash" in names and "attention_moe" not in names
        assert {"attention", "experts", "scoring"} <= set(names)

    def test_empty_dir_is_an_error(self, tmp_path: Path) -> None:
        with pytest.raises(RenderError, match=r"no templates"):
            module_names(tmp_path)


class TestFilters:
    @pytest.mark.parametrize("value", [float("nan"), float("inf"), "1+1", None, [1.0]])
    def test_num_refuses_non_numbers(self, value: object) -> None:
        with pytest.raises(ValueError):
            _num(value)

    def test_pyrepr_quotes_strings(self) -> None:
        assert _pyrepr("a'\n") == repr("a'\n")

    def test_pyrepr_refuses_containers(self) -> None:
        with pytest.raises(ValueError):
            _pyrepr({"a": 1})


class TestBadTemplates:
    def test_an_error_in_an_expression_names_the_template_line(self, tmp_path: Path) -> None:
        (tmp_path / "bad.py.j2").write_text("X = 1\nY = {{ 1 // 0 }}\n")
        with pytest.raises(
            RenderError, match=r"^bad.py.j2:2: ZeroDivisionError: integer division or modulo"
        ):
            render_sources(load_state(SHIPPED_STATE), tmp_path)

    def test_undefined_variable_names_the_template(self, tmp_path: Path) -> None:
        (tmp_path / "bad.py.j2").write_text("X = {{ state.nope }}\n")
        with pytest.raises(RenderError, match=r"^bad.py.j2:1: UndefinedError: .*nope"):
            render_sources(load_state(SHIPPED_STATE), tmp_path)

    def test_invalid_python_is_reported(self, tmp_path: Path) -> None:
        (tmp_path / "bad.py.j2").write_text("def f(:\n")
        with pytest.raises(RenderError, match=r"^bad.py.j2: rendered source is not valid Python"):
            render_sources(load_state(SHIPPED_STATE), tmp_path)


class TestBlackStable:
    @pytest.mark.parametrize("value", ["a", "it's", 'say "x"', "both ' \"", "nl\n", "back\\slash"])
    def test_pyrepr_round_trips(self, value: str) -> None:
        assert ast.literal_eval(_pyrepr(value)) == value

    def test_pyrepr_prefers_double_quotes(self) -> None:
        assert _pyrepr("tracker") == '"tracker"'


@pytest.mark.parametrize(
    "state_file", ["rsi_state.json", "states/routed.json", "states/uniform.json"]
)
@pytest.mark.parametrize("name", ["scoring", "knowledge", "encoding"])
def test_a_module_single_field_edits_rebuild_is_written_as_black_writes_it(
    name: str, state_file: str
) -> None:
    """black runs a second pass over a result it changed: these re-render on every edit."""
    state = load_state(REPO / state_file)
    assert render_raw(name, state) == render_module(name, state)
