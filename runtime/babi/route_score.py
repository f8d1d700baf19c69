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

import cython
import numpy as np

from codegen.state import RSIState
from runtime.optimized import rsi_optimized

__all__ = ["route_score", "evidence_rows", "sample_call"]


@rsi_optimized(
    target=("experts", "routing", "scoring"), benchmark="runtime.babi.route_score:sample_call"
)
def route_score(
    state: RSIState, scores: cython.double[:, ::1], n_cand: cython.int, words: frozenset[str]
) -> tuple[int, float]:
    """The best candidate (lowest index on ties) and its softmax probability.

    ``scores[row, candidate]``: one evidence row per (expert, channel), experts in state
    order, each kind's channels as in the generated scoring module (embedding: similarity,
    attention, rag; counting and motivation: entity attribute, commonsense; the others:
    entity attribute, deduction). Annotated in Cython's pure-Python mode, like generated
    code: a compiled copy reads ``scores`` as a C array.
    """
    weights: dict[str, float] = {}
    for name, expert in state.experts.items():
        weight = expert.weight
        # Routing: a rule boosts an expert when every one of its words is in the question.
        for rule in state.routing:
            if name in rule.boosts and all(word in words for word in rule.when_all):
                weight += rule.boosts[name]
        weights[name] = _clamp(weight)
    c: cython.int
    row: cython.int
    total: cython.double
    best: cython.int = -1
    best_total: cython.double = -math.inf
    totals: list[float] = []
    for c in range(n_cand):
        total = 0.0
        row = 0
        for name, expert in state.experts.items():
            if expert.kind == "embedding":
                total += weights[name] * (
                    state.scoring.embedding_similarity * scores[row, c]
                    + state.scoring.attention * scores[row + 1, c]
                    + state.scoring.rag * scores[row + 2, c]
                )
                row += 3
            elif expert.kind == "counting" or expert.kind == "motivation":
                total += weights[name] * (
                    state.scoring.entity_attribute * scores[row, c]
                    + state.scoring.commonsense * scores[row + 1, c]
                )
                row += 2
            else:
                total += weights[name] * (
                    state.scoring.entity_attribute * scores[row, c]
                    + state.scoring.ntp_deduction * scores[row + 1, c]
                )
                row += 2
        totals.append(total)
        if total > best_total:
            best, best_total = c, total
    norm = 0.0
    for total in totals:
        norm += math.exp((total - best_total) / state.scoring.temperature)
    return best, 1.0 / norm if norm > 0.0 else 0.0


def evidence_rows(state: RSIState) -> int:
    """How many evidence rows ``scores`` has for ``state``'s experts."""
    return sum(3 if e.kind == "embedding" else 2 for e in state.experts.values())


def sample_call(state: RSIState) -> tuple[memoryview, int, frozenset[str]]:
    """Arguments after the state for a representative call: the scoring selftest's fixed
    scores for 7 candidates (a memoryview of a float64 array: any C-contiguous buffer of
    doubles will do; in pure Python a memoryview reads elements as floats, twice as fast as
    NumPy's scalars), the words of the first routing rule (so that rule fires)."""
    n_cand = 7
    scores = np.array(
        [
            [((r * 7 + c * 3) % 11) / 11.0 for c in range(n_cand)]
            for r in range(evidence_rows(state))
        ],
        dtype=np.float64,
    )
    words = frozenset(w for rule in state.routing[:1] for w in rule.when_all)
    return scores.data, n_cand, words


def _clamp(weight: float) -> float:
    # Negative weights would flip an expert's evidence: clamp at zero, as scoring does.
    return weight if weight > 0.0 else 0.0
