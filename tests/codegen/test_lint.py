"""ruff's default rules and F rules on rendered sources: the build's lint step."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from codegen.check import lint_sources
from codegen.errors import CheckError
from codegen.render import MECHANISM_FAMILY, module_names, render_module, render_sources
from codegen.state import AttentionMechanism, load_state, parse_state

CLEAN = "import math\n\n\ndef f(x: float) -> float:\n    return math.sqrt(x)\n"


def test_an_unused_import_fails_with_file_line_and_rule(tmp_path: Path) -> None:
    with pytest.raises(CheckError) as err:
        lint_sources({"m": "import cython\n\nX: int = 1\n"}, tmp_path)
    assert str(err.value) == "ruff: m.py:1:8: F401 [*] `cython` imported but unused"


def test_an_unused_local_fails(tmp_path: Path) -> None:
    source = "def f() -> int:\n    i: int\n    return 1\n"
    with pytest.raises(CheckError, match="F842 Local variable `i` is annotated but never used"):
        lint_sources({"k": source}, tmp_path)


def test_an_import_below_code_fails(tmp_path: Path) -> None:
    source = "import math\n\nX = 1\nimport cython  # noqa: F401\n\nY = math.pi\n"
    with pytest.raises(CheckError, match="E402 Module level import not at top of file"):
        lint_sources({"k": source}, tmp_path)


def test_clean_sources_pass_and_are_remembered(tmp_path: Path) -> None:
    lint_sources({"m": CLEAN}, tmp_path)
    assert len(list(tmp_path.glob("lint-*"))) == 1
    lint_sources({"m": CLEAN}, tmp_path)  # known clean: no ruff run, same marker
    assert len(list(tmp_path.glob("lint-*"))) == 1


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "state_file",
    ["rsi_state.json", "states/uniform.json", "states/kernels_n100.json", "states/routed.json"],
)
def test_every_module_of_a_build_is_clean(state_file: str, tmp_path: Path) -> None:
    lint_sources(render_sources(load_state(REPO / state_file)), tmp_path)


@pytest.mark.slow
def test_every_attention_mechanism_is_clean(tmp_path: Path) -> None:
    """Every mechanism's kernel, causal or not, multi-head with one head and with two (the
    kernel tooling renders them all)."""
    data = load_state(REPO / "rsi_state.json").model_dump(mode="json")
    variants = [(m, 1) for m in AttentionMechanism] + [(AttentionMechanism.multihead, 2)]
    sources = {}
    for (mechanism, heads), causal in itertools.product(variants, (False, True)):
        data["architecture"].update(attention=mechanism.value, causal=causal, heads=heads)
        variant = parse_state(json.dumps(data).encode())
        name = f"{MECHANISM_FAMILY}{mechanism.value}"
        if name not in module_names():
            name = "attention"  # sdpa: the template every build carries
        sources[f"{name}_{mechanism.value}_{heads}_{causal}"] = render_module(name, variant)
    lint_sources(sources, tmp_path)


def test_a_roster_without_a_motivation_expert_is_clean(tmp_path: Path) -> None:
    """The knowledge module then has no row to write: nothing is left unused."""
    data = load_state(REPO / "rsi_state.json").model_dump(mode="json")
    data["experts"] = {"tracker": {"kind": "tracking", "weight": 1.0}}
    lint_sources(render_sources(parse_state(json.dumps(data).encode())), tmp_path)
