"""Static modules: state-independent code every build carries verbatim and compiles once."""

from __future__ import annotations

import json
from pathlib import Path

from codegen.build import build_state
from codegen.render import TEMPLATE_DIR, render_sources, static_sources
from codegen.state import parse_state
from codegen.toolchain import CompileSettings

REPO = Path(__file__).resolve().parents[2]
SHIPPED = json.loads((REPO / "rsi_state.json").read_text())
STATIC = ("kernel_checks", "opcodes", "parsing", "reasoning", "selftests")


def _state_bytes(lexicon_move: list[str] | None = None) -> bytes:
    data = json.loads(json.dumps(SHIPPED))
    if lexicon_move is not None:
        data.setdefault("lexicon", {})["move"] = lexicon_move
    return json.dumps(data).encode()


def test_the_template_dir_holds_the_static_modules() -> None:
    assert tuple(static_sources()) == STATIC


def test_a_build_carries_each_static_module_verbatim() -> None:
    sources = render_sources(parse_state(_state_bytes()))
    for name in STATIC:
        assert sources[name] == (TEMPLATE_DIR / f"{name}.py").read_text()


def test_the_specialized_templates_stay_small() -> None:
    for name in ("experts", "encoding"):
        lines = (TEMPLATE_DIR / f"{name}.py.j2").read_text().count("\n")
        assert lines <= 150, f"{name}.py.j2 has {lines} lines"


def test_a_lexicon_edit_reuses_the_compiled_static_modules(tmp_path: Path) -> None:
    settings = CompileSettings(backend="python")
    first = _state_bytes()
    build_state(parse_state(first), first, settings, tmp_path)
    edited = _state_bytes(["went", "moved", "journeyed", "travelled", "strolled"])
    result = build_state(parse_state(edited), edited, settings, tmp_path)
    assert result.compiled == ("encoding",)  # the static modules came from the cache
    assert set(STATIC) <= set(render_sources(parse_state(edited)))
