"""The plan: every derived decision of a state, made once in Python."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from codegen.plan import CHANNELS, kernel_plan, plan
from codegen.state import AttentionMechanism, KernelChoice, RSIState, load_state, parse_state

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shipped() -> RSIState:
    return load_state(REPO / "rsi_state.json")


def _with(state: RSIState, **changes: object) -> RSIState:
    data = state.model_dump(mode="json")
    data.update(changes)
    return parse_state(json.dumps(data).encode())


def test_rows_follow_the_roster_and_channels(shipped: RSIState) -> None:
    p = plan(shipped)
    assert [e.name for e in p.experts] == list(shipped.experts)
    assert p.n_rows == sum(len(CHANNELS[e.kind]) for e in shipped.experts.values())
    embedder = next(e for e in p.experts if e.name == "embedder")
    rows = [r for r in p.rows if r.expert == "embedder"]
    assert [r.channel for r in rows] == ["embedding_similarity", "attention", "rag"]
    assert p.rows[embedder.first_row] == rows[0]
    assert rows[1].coefficient == shipped.scoring.attention


def test_fixed_ids_are_vocabulary_then_association_words(shipped: RSIState) -> None:
    p = plan(shipped)
    assert p.vocabulary[: len(shipped.answer_vocabulary)] == shipped.answer_vocabulary
    assert p.vocabulary[len(shipped.answer_vocabulary) :] == ("bored", "hungry", "thirsty", "tired")
    assert (p.yes_id, p.no_id, p.maybe_id, p.nothing_id) == (0, 1, 12, 8)
    assert p.fixed_id("four") == -1
    assert p.number_ids == (6, 4, 16, 17, -1, -1, -1, -1, -1, -1, -1)  # by number: none..ten
    first = p.associations[0]
    assert (p.vocabulary[first.cue_id], p.vocabulary[first.answer_id]) == ("bored", "garden")


def test_opposites_are_the_nearest_negated_direction(shipped: RSIState) -> None:
    dirs = plan(shipped).directions
    assert [d.opposite for d in dirs] == [1, 0, 3, 2, 5, 4, 7, 6]
    assert [d.short_id for d in dirs] == [3, 7, 2, 5, -1, -1, -1, -1]


def test_route_words_are_sorted_and_unique(shipped: RSIState) -> None:
    routing = [
        {"when_all": ["where", "is"], "boosts": {"tracker": 1.0, "counter": -0.5}},
        {"when_all": ["is"], "boosts": {"motive": 2.0}},
    ]
    p = plan(_with(shipped, routing=routing))
    assert p.route_words == ("is", "where")
    assert p.routes[0].flags == (1, 0)
    assert p.routes[0].needs == (1, 1)
    assert p.routes[1].needs == (1, 0)
    adds = dict(zip([e.name for e in p.experts], p.routes[0].adds, strict=True))
    assert adds == {"tracker": 1.0, "counter": -0.5} | {
        name: 0.0 for name in adds if name not in ("tracker", "counter")
    }


def test_embedding_evidence_is_used_only_when_it_can_reach_a_decision(
    shipped: RSIState,
) -> None:
    assert not plan(shipped).uses_attention  # the embedder's weight is 0
    boosted = _with(shipped, routing=[{"when_all": ["why"], "boosts": {"embedder": 0.5}}])
    assert plan(boosted).uses_attention and plan(boosted).uses_similarity
    data = boosted.model_dump(mode="json")
    data["scoring"]["attention"] = 0.0
    no_attention = plan(parse_state(json.dumps(data).encode()))
    assert not no_attention.uses_attention and no_attention.uses_similarity


def test_kernel_choice_defaults_to_the_schema(shipped: RSIState) -> None:
    default = KernelChoice()
    k = kernel_plan(shipped, AttentionMechanism.flash)
    assert (k.tile, k.unroll, k.width, k.variant) == (
        default.tile,
        default.unroll,
        default.width,
        default.variant.value,
    )
    tuned = load_state(REPO / "states" / "kernels_n100.json")
    choice = tuned.kernels.tuned[AttentionMechanism.sdpa]
    assert plan(tuned).kernel.tile == choice.tile


def test_plan_is_frozen(shipped: RSIState) -> None:
    p = plan(shipped)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.uses_attention = True  # type: ignore[misc]
