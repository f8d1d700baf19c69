"""Failure analysis and bounded proposals on synthetic evidence (no build needed)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from codegen.policy import check_policy
from codegen.state import RSIState, load_state
from runtime.babi.tune import Evidence, screen, state_from_data
from runtime.rsi.analyse import analyse
from runtime.rsi.propose import SearchResult, search

REPO = Path(__file__).resolve().parents[2]


def _search(state: RSIState, evidence: Evidence, seed: object) -> SearchResult:
    analysis = analyse(state, evidence, screen(state, evidence))
    return search(state, evidence, analysis, random.Random(str(seed)))


def _uniform() -> RSIState:
    return load_state(REPO / "states" / "uniform.json")


def _evidence(n: int = 60) -> Evidence:
    """Two evidence rows: the tracker always prefers candidate 0, the motive expert knows
    better on "afraid" questions (gold is candidate 1 there, and motive ranks it first) but
    not on other "what" questions (so a rule on "what" would break those)."""
    rows = (("tracker", "entity_attribute"), ("motive", "commonsense"))
    scores = np.zeros((n, 2, 2))
    gold = np.zeros((n, 2), dtype=bool)
    words = []
    for q in range(n):
        afraid = q % 2 == 0
        scores[q, 0] = (1.0, 0.6)  # tracker: candidate 0
        if afraid:
            scores[q, 1] = (0.0, 0.3)  # motive: candidate 1, too weak at uniform weights
            gold[q, 1] = True
            words.append(frozenset({"what", "is", "afraid", "of"}))
        elif q % 4 == 1:  # "what" without the cue: motive is wrong here
            scores[q, 1] = (0.0, 0.3)
            gold[q, 0] = True
            words.append(frozenset({"what", "is", "mary", "carrying"}))
        else:
            gold[q, 0] = True
            words.append(frozenset({"where", "is", "mary"}))
    return Evidence(
        rows=rows,
        scores=scores,
        n_cand=np.full(n, 2, dtype=np.int64),
        gold=gold,
        tasks=np.array([20 if q % 2 == 0 else 1 for q in range(n)], dtype=np.int64),
        words=tuple(words),
    )


def test_analyse_groups_failures_by_cue_and_names_the_expert_that_knew() -> None:
    state, evidence = _uniform(), _evidence()
    screened = screen(state, evidence)
    assert screened.per_task == {1: 1.0, 20: 0.0}
    analysis = analyse(state, evidence, screened)
    top = analysis.groups[0]
    assert (top.cue, top.failures, top.right_expert, top.wrong_expert) == (
        "afraid",
        30,
        "motive",
        "tracker",
    )
    assert top.tasks == (20,)
    assert all(g.cue not in {"is", "of"} for g in analysis.groups)  # function words are no cues
    rule = top.fix(0.5)
    assert rule is not None and rule.when_all == ("afraid",)
    assert rule.boosts == {"motive": 0.5, "tracker": -0.5}


def test_search_mines_a_routing_rule_within_the_policy_box() -> None:
    state, evidence = _uniform(), _evidence()
    screened = screen(state, evidence)
    result = search(state, evidence, analyse(state, evidence, screened), random.Random(0))
    routing = [c for c in result.candidates if c.kinds == ("routing",)]
    assert routing, "no routing-only candidate"
    best = routing[0]
    assert best.fitness > screened.fitness
    assert best.per_task[20] == 1.0 and best.per_task[1] == 1.0
    assert [r.when_all for r in best.state.routing] == [("afraid",)]
    step = state.safety.max_relative_step
    assert all(abs(b) <= step for b in best.state.routing[0].boosts.values())
    for candidate in result.candidates:
        check_policy(state, candidate.state)  # raises PolicyError if any step is too large
        assert screen(candidate.state, evidence).fitness == candidate.fitness


def test_search_is_deterministic_for_a_seed() -> None:
    state, evidence = _uniform(), _evidence()
    analysis = analyse(state, evidence, screen(state, evidence))
    a = search(state, evidence, analysis, random.Random("s"))
    b = search(state, evidence, analysis, random.Random("s"))
    assert [c.state for c in a.candidates] == [c.state for c in b.candidates]
    assert a.screened == b.screened


def test_numeric_steps_never_exceed_the_bound_after_rounding() -> None:
    data = _uniform().model_dump(mode="json")
    data["scoring"]["rag"] = 0.333333  # 1.5 x rounds up past the bound unless guarded
    state = state_from_data(data)
    evidence = _evidence()
    result = _search(state, evidence, 1)
    for candidate in result.candidates:
        check_policy(state, candidate.state)


@pytest.mark.parametrize("cue", ["afraid"])
def test_no_failures_no_candidates(cue: str) -> None:
    state, evidence = _uniform(), _evidence()
    fixed = _search(state, evidence, 0)
    best = fixed.candidates[0].state
    again = _search(best, evidence, 0)
    assert again.candidates == ()
    assert cue in {r.when_all[0] for r in best.routing} or best.experts["motive"].weight > 1.0
