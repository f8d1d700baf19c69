"""Line maps: a generated line traced to its template line (macros included) and to the
concrete state field, through loops, ``dictsort`` and ``set`` variables."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hardening_corpus import load_corpus, serialize

from codegen.diagnostics import locate, origin_of_message, with_origin
from codegen.errors import CompileError
from codegen.render import render_sources
from codegen.state import RSIState, parse_state

BASE, _ = load_corpus()

MODULE = """\
{% import "_macros.j2" as m %}
{% set names = state.experts|list %}
\"\"\"Generated.\"\"\"

RAG: float = {{ state.scoring.rag|num }}
{% for name, expert in state.experts.items() %}
{{ name|ident|upper }}: float = {{ expert.weight|num }}
{% endfor %}
{% for rule in state.routing %}
{% for name, boost in rule.boosts|dictsort %}
BOOST_{{ loop.index }}: float = {{ boost|num }}  # {{ names.index(name) }}
{% endfor %}
{% endfor %}
{{ m.constant("SCALE", state.scoring.temperature) }}
WORDS = [{% for w in state.answer_vocabulary %}{{ w|pyrepr }}, {% endfor %}]
"""
MACROS = """\
{% macro constant(name, value) %}
{{ name }}: float = {{ value|num }}
{% endmacro %}
"""


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    (tmp_path / "mod.py.j2").write_text(MODULE)
    (tmp_path / "_macros.j2").write_text(MACROS)
    return tmp_path


def _state(**scoring: float) -> RSIState:
    doc = copy.deepcopy(BASE)
    doc["experts"]["deducer"]["weight"] = 1.0  # two experts, equal weights: lines alike
    doc["routing"] = [{"when_all": ["afraid"], "boosts": {"tracker": 0.5, "deducer": 2.0}}]
    doc["scoring"].update(scoring)
    return parse_state(serialize(doc))


def _line_of(source: str, text: str) -> int:
    return source.splitlines().index(text) + 1


def test_trace_through_loops_dictsort_and_macros(templates: Path) -> None:
    state = _state(temperature=4.5)
    source = render_sources(state, templates)["mod"]

    def trace(text: str) -> tuple[str, int, tuple[str, ...]]:
        origin = locate("mod", _line_of(source, text), state, templates, source=source)
        assert origin is not None, text
        return origin.template, origin.template_line, origin.fields

    assert trace("RAG: float = 1.0") == ("mod.py.j2", 5, ("scoring.rag",))
    assert trace("TRACKER: float = 1.0") == (
        "mod.py.j2",
        7,
        ("experts.tracker (key)", "experts.tracker.weight"),
    )
    assert trace("DEDUCER: float = 1.0") == (
        "mod.py.j2",
        7,
        ("experts.deducer (key)", "experts.deducer.weight"),
    )
    assert trace("BOOST_1: float = 2.0  # 1") == (
        "mod.py.j2",
        11,
        ("routing[0].boosts.deducer", "experts"),
    )
    assert trace("SCALE: float = 4.5") == ("_macros.j2", 2, ())
    # black exploded the list over lines: each item still traces to its field.
    assert trace('    "no",') == ("mod.py.j2", 15, ("answer_vocabulary[1]",))


def test_a_message_naming_a_generated_line_gets_its_origin(templates: Path) -> None:
    state = _state()
    sources = render_sources(state, templates)
    line = _line_of(sources["mod"], "RAG: float = 1.0")
    exc = with_origin(
        CompileError(f"cython: mod.py: mod.py:{line}:4: bad"), state, templates, sources
    )
    assert str(exc) == (
        f"cython: mod.py: mod.py:{line}:4: bad [from mod.py.j2:5 `RAG: float = "
        "{{ state.scoring.rag|num }}`, state field scoring.rag]"
    )
    assert isinstance(exc, CompileError)


def test_an_untraceable_message_is_left_alone(templates: Path) -> None:
    state = _state()
    exc = CompileError("gcc: internal compiler error")
    assert with_origin(exc, state, templates, render_sources(state, templates)) is exc
    assert origin_of_message("other.py:3: error", state, templates, {}) is None
