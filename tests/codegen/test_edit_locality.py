"""Each kind of single-field edit changes the source of exactly one small generated module."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from codegen.check import type_skeleton
from codegen.render import render_sources
from codegen.state import parse_state

REPO = Path(__file__).resolve().parents[2]
SHIPPED = json.loads((REPO / "rsi_state.json").read_text())
RULE = {"when_all": ["where"], "boosts": {"tracker": 0.75}}


def _coefficient(d: dict[str, Any]) -> None:
    d["scoring"]["attention"] = 3.25


def _weight(d: dict[str, Any]) -> None:
    d["experts"]["embedder"]["weight"] = 0.5


def _add_rule(d: dict[str, Any]) -> None:
    d["routing"].append(RULE)


def _association(d: dict[str, Any]) -> None:
    d["associations"][0]["weight"] = 0.25


def _new_association(d: dict[str, Any]) -> None:
    d["associations"].append({"cue": "sleepy", "answer": "bedroom", "weight": 0.5})


def _lexicon_word(d: dict[str, Any]) -> None:
    d.setdefault("lexicon", {})["move"] = ["went", "moved", "journeyed", "travelled", "strolled"]


EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "scoring coefficient": (_coefficient, "scoring"),
    "expert weight": (_weight, "scoring"),
    "routing rule": (_add_rule, "scoring"),
    "association weight": (_association, "knowledge"),
    "new association": (_new_association, "knowledge"),
    # The parser is the static ``parsing`` module's: a lexicon edit changes its tables only.
    "lexicon word": (_lexicon_word, "encoding"),
}


@pytest.fixture(scope="module")
def memo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("black-memo")


@pytest.fixture(scope="module")
def base(memo: Path) -> dict[str, str]:
    return render_sources(parse_state(json.dumps(SHIPPED).encode()), memo_dir=memo)


@pytest.mark.parametrize("kind", list(EDITS))
def test_an_edit_changes_one_module(kind: str, base: dict[str, str], memo: Path) -> None:
    edit, module = EDITS[kind]
    data = json.loads(json.dumps(SHIPPED))
    edit(data)
    edited = render_sources(parse_state(json.dumps(data).encode()), memo_dir=memo)
    assert [name for name in base if base[name] != edited[name]] == [module]


#: Edits that change values, not types: the changed module needs no mypy run.
SAME_TYPES = ("scoring coefficient", "expert weight", "association weight", "new association")


@pytest.mark.parametrize("kind", SAME_TYPES)
def test_an_edit_keeps_the_type_skeleton(kind: str, base: dict[str, str], memo: Path) -> None:
    edit, module = EDITS[kind]
    data = json.loads(json.dumps(SHIPPED))
    edit(data)
    edited = render_sources(parse_state(json.dumps(data).encode()), memo_dir=memo)
    assert type_skeleton(edited[module]) == type_skeleton(base[module])


def test_a_rule_beside_another_keeps_the_type_skeleton(memo: Path) -> None:
    """Rules are a table: a second rule on the same words adds a row, not a branch."""
    data = json.loads(json.dumps(SHIPPED))
    data["routing"] = [RULE]
    one = render_sources(parse_state(json.dumps(data).encode()), memo_dir=memo)["scoring"]
    data["routing"].append({"when_all": ["where"], "boosts": {"motive": 0.5}})
    two = render_sources(parse_state(json.dumps(data).encode()), memo_dir=memo)["scoring"]
    assert one != two
    assert type_skeleton(one) == type_skeleton(two)


def test_removing_a_routing_rule_changes_only_scoring(memo: Path) -> None:
    data = json.loads(json.dumps(SHIPPED))
    data["routing"] = [RULE, {"when_all": ["why"], "boosts": {"motive": 0.5}}]
    two = render_sources(parse_state(json.dumps(data).encode()), memo_dir=memo)
    data["routing"] = data["routing"][1:]
    one = render_sources(parse_state(json.dumps(data).encode()), memo_dir=memo)
    assert [name for name in two if two[name] != one[name]] == ["scoring"]
