"""Resource bounds: every collection and the file itself has a limit; at the limit a state is
accepted, one past it is refused with a clear one-line error naming the field."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hardening_corpus import load_corpus, serialize

from codegen.errors import StateError
from codegen.state import (
    MAX_JSON_DEPTH,
    MAX_STATE_BYTES,
    AttentionMechanism,
    load_state,
    parse_state,
)

BASE, _ = load_corpus()
Edit = Callable[[dict[str, Any], int], None]


def _experts(doc: dict[str, Any], n: int) -> None:
    doc["experts"] = {f"e{i}": {"kind": "tracking", "weight": 1.0} for i in range(n)}
    doc["routing"] = []


def _rules(doc: dict[str, Any], n: int) -> None:
    doc["routing"] = [{"when_all": ["afraid"], "boosts": {"deducer": 1.0}}] * n


def _boosts(doc: dict[str, Any], n: int) -> None:
    _experts(doc, n)
    doc["routing"] = [{"when_all": ["afraid"], "boosts": {f"e{i}": 1.0 for i in range(n)}}]


def _when_all(doc: dict[str, Any], n: int) -> None:
    doc["routing"][0]["when_all"] = [f"w{i}" for i in range(n)]


def _vocabulary(doc: dict[str, Any], n: int) -> None:
    doc["answer_vocabulary"] = [f"w{i}" for i in range(n)]


def _associations(doc: dict[str, Any], n: int) -> None:
    doc["associations"] = [{"cue": f"c{i}", "answer": "kitchen"} for i in range(n)]


def _lexicon_move(doc: dict[str, Any], n: int) -> None:
    doc["lexicon"] = {"move": [f"m{i}" for i in range(n)]}


def _plurals(doc: dict[str, Any], n: int) -> None:
    doc["lexicon"] = {"plurals": {f"p{i}": "x" for i in range(n)}}


def _directions(doc: dict[str, Any], n: int) -> None:
    doc["lexicon"] = {"directions": [{"word": "up", "dx": 0, "dy": 1, "short": "u"}] * n}


def _per_task(doc: dict[str, Any], n: int) -> None:
    doc["benchmark"] = {"per_task": {str(i): 0.5 for i in range(n)}}


def _approvals(doc: dict[str, Any], n: int) -> None:
    doc["safety"] = {"approval_required": ["architecture.attention"] * n}


def _name_length(doc: dict[str, Any], n: int) -> None:
    doc["experts"] = {"e" * n: {"kind": "tracking"}}
    doc["routing"] = []


def _word_length(doc: dict[str, Any], n: int) -> None:
    doc["answer_vocabulary"] = ["w" * n]


LIMITS: list[tuple[str, Edit, int, str]] = [
    (
        "experts",
        _experts,
        64,
        "experts: Dictionary should have at most 64 items after validation, not more",
    ),
    (
        "routing rules",
        _rules,
        256,
        "routing: Tuple should have at most 256 items after validation, not 257",
    ),
    (
        "boosts per rule",
        _boosts,
        16,
        "routing[0].boosts: Dictionary should have at most 16 items after validation, not more",
    ),
    (
        "words per rule",
        _when_all,
        4,
        "routing[0].when_all: Tuple should have at most 4 items after validation, not 5",
    ),
    (
        "answer vocabulary",
        _vocabulary,
        512,
        "answer_vocabulary: Tuple should have at most 512 items after validation, not 513",
    ),
    (
        "associations",
        _associations,
        256,
        "associations: Tuple should have at most 256 items after validation, not 257",
    ),
    (
        "lexicon word class",
        _lexicon_move,
        64,
        "lexicon.move: Tuple should have at most 64 items after validation, not 65",
    ),
    (
        "plurals",
        _plurals,
        256,
        "lexicon.plurals: Dictionary should have at most 256 items after validation, not more",
    ),
    (
        "directions",
        _directions,
        32,
        "lexicon.directions: Tuple should have at most 32 items after validation, not 33",
    ),
    (
        "benchmark tasks",
        _per_task,
        20,
        "benchmark.per_task: Dictionary should have at most 20 items after validation, not more",
    ),
    (
        "approvals",
        _approvals,
        64,
        "safety.approval_required: Tuple should have at most 64 items after validation, not 65",
    ),
    (
        "identifier length",
        _name_length,
        48,
        "experts['eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee'] (key): "
        "'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee' is not a plain identifier "
        "([A-Za-z_][A-Za-z0-9_]*, at most 48 chars)",
    ),
    (
        "word length",
        _word_length,
        32,
        "answer_vocabulary[0]: 'wwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwww' is not a lowercase word "
        "([a-z][a-z0-9]*, at most 32 chars)",
    ),
]


def _edited(edit: Edit, n: int) -> bytes:
    doc = copy.deepcopy(BASE)
    edit(doc, n)
    return serialize(doc)


@pytest.mark.parametrize(("what", "edit", "limit", "error"), LIMITS, ids=[x[0] for x in LIMITS])
def test_collection_limit(what: str, edit: Edit, limit: int, error: str) -> None:
    parse_state(_edited(edit, limit))  # the limit itself is allowed
    with pytest.raises(StateError, match=f"^{re.escape('rsi_state.json: ' + error)}$"):
        parse_state(_edited(edit, limit + 1))


def test_every_kernel_variant_slot_is_bounded_by_the_mechanisms() -> None:
    doc = copy.deepcopy(BASE)
    doc["kernels"]["tuned"] = {m.value: {"tile": 4} for m in AttentionMechanism}
    assert len(parse_state(serialize(doc)).kernels.tuned) == len(AttentionMechanism) <= 16
    doc["kernels"]["tuned"]["extra"] = {"tile": 4}
    with pytest.raises(
        StateError,
        match=r"^rsi_state.json: kernels.tuned.extra \(key\): Input "
        r"should be 'sdpa', 'multihead', ",
    ):
        parse_state(serialize(doc))


def _padded(size: int) -> bytes:
    data = serialize(BASE)
    return data[:-2] + b" " * (size - len(data)) + data[-2:]


def test_file_size_limit(tmp_path: Path) -> None:
    at_limit = _padded(MAX_STATE_BYTES)
    assert len(at_limit) == MAX_STATE_BYTES
    parse_state(at_limit)
    over = _padded(MAX_STATE_BYTES + 1)
    with pytest.raises(
        StateError, match=r"^rsi_state.json: file is 1048577 bytes, the limit is 1048576$"
    ):
        parse_state(over)
    path = tmp_path / "rsi_state.json"
    path.write_bytes(over)
    with pytest.raises(
        StateError, match=r"^rsi_state.json: file is larger than the limit of 1048576 bytes$"
    ):
        load_state(path)


def test_nesting_limit() -> None:
    def nested(depth: int) -> bytes:
        doc = json.loads(serialize(BASE))
        doc["benchmark"] = {"per_task": "PLACEHOLDER"}
        # The state itself is 2 levels deep at ``per_task``'s value.
        inner = "[" * (depth - 2) + "]" * (depth - 2)
        return json.dumps(doc).replace('"PLACEHOLDER"', inner).encode()

    with pytest.raises(
        StateError, match=r"^rsi_state.json: benchmark.per_task: Input should be an object$"
    ):
        parse_state(nested(MAX_JSON_DEPTH))  # deep but within the limit: a schema error
    with pytest.raises(StateError, match=r"^rsi_state.json: JSON nested deeper than 32 levels$"):
        parse_state(nested(MAX_JSON_DEPTH + 1))
