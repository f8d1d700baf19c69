"""A user-side scoring function of the shipped model's shape, specialized at build time.

:func:`route_score` ranks candidate answers the way the generated ``scoring`` module does:
each expert's weight, plus the boosts of every routing rule whose words all occur in the
question, times the scoring coefficient of each of its evidence channels, times the
evidence. Written as plain Python over the state, it costs a walk of the experts, the rules
and their words on every call; ``rsi build --specialize runtime.babi.route_score:route_score``
writes a copy with all of that baked in (see README, "Specializing your own functions").
"""

from __future__ import annotations

import math

from codegen.state import RSIState
from runtime.optimized import rsi_optimized

__all__ = ["route_score", "expert_weights", "sample_call"]


@rsi_optimized(
    target=("experts", "routing", "scoring"), benchmark="runtime.babi.route_score:sample_call"
)
def route_score(
    state: RSIState,
    evidence: dict[str, tuple[tuple[float, ...], ...]],
    n_cand: int,
    words: frozenset[str],
) -> tuple[int, float]:
    """The best candidate (lowest index on ties) and its softmax probability.

    ``evidence[expert][channel][candidate]``: each expert's channel rows, in the order of the
    generated scoring module (embedding: similarity, attention, rag; counting and
    motivation: entity attribute, commonsense; the others: entity attribute, deduction).
    """
    weights: dict[str, float] = {}
    for name, expert in state.experts.items():
        weight = expert.weight
        # Routing: a rule boosts an expert when every one of its words is in the question.
        for rule in state.routing:
            if name in rule.boosts and all(word in words for word in rule.when_all):
                weight += rule.boosts[name]
        weights[name] = _clamp(weight)
    best, best_total = -1, -math.inf
    totals: list[float] = []
    for c in range(n_cand):
        total = 0.0
        for name, expert in state.experts.items():
            rows = evidence[name]
            if expert.kind == "embedding":
                total += weights[name] * (
                    state.scoring.embedding_similarity * rows[0][c]
                    + state.scoring.attention * rows[1][c]
                    + state.scoring.rag * rows[2][c]
                )
            elif expert.kind == "counting" or expert.kind == "motivation":
                total += weights[name] * (
                    state.scoring.entity_attribute * rows[0][c]
                    + state.scoring.commonsense * rows[1][c]
                )
            else:
                total += weights[name] * (
                    state.scoring.entity_attribute * rows[0][c]
                    + state.scoring.ntp_deduction * rows[1][c]
                )
        totals.append(total)
        if total > best_total:
            best, best_total = c, total
    norm = 0.0
    for total in totals:
        norm += math.exp((total - best_total) / state.scoring.temperature)
    return best, 1.0 / norm if norm > 0.0 else 0.0


def expert_weights(state: RSIState, words: frozenset[str]) -> dict[str, float]:
    """Each expert's weight after routing (the first step of :func:`route_score`)."""
    weights: dict[str, float] = {}
    for name, expert in state.experts.items():
        weight = expert.weight
        for rule in state.routing:
            if name in rule.boosts and all(word in words for word in rule.when_all):
                weight += rule.boosts[name]
        weights[name] = _clamp(weight)
    return weights


def sample_call(
    state: RSIState,
) -> tuple[dict[str, tuple[tuple[float, ...], ...]], int, frozenset[str]]:
    """Arguments after the state for a representative call: 8 candidates, the words of the
    first routing rule (so that rule fires)."""
    n_cand = 8
    evidence = {
        name: tuple(
            tuple(((r * 7 + c * 3 + len(name)) % 11) / 11.0 for c in range(n_cand))
            for r in range(3 if expert.kind == "embedding" else 2)
        )
        for name, expert in state.experts.items()
    }
    words = frozenset(w for rule in state.routing[:1] for w in rule.when_all)
    return evidence, n_cand, words


def _clamp(weight: float) -> float:
    # Negative weights would flip an expert's evidence: clamp at zero, as scoring does.
    return weight if weight > 0.0 else 0.0
