"""Fixed inputs for the tier check: both tiers of a build must answer them alike.

A generated module's ``rsi_selftest()`` calls its function here with its own hot entry point,
so the module itself holds only what its state specializes (this code compiles once per
toolchain, not on every coefficient change).
"""

from typing import Any

import numpy as np

#: Candidates per fixed question.
N_CANDIDATES: int = 7


def scoring(decide_story: Any, rows: int, n_route_words: int) -> list[tuple[int, float]]:
    """``(best, confidence)`` from a scoring module's ``decide_story`` on fixed scores, with no
    routing word and with each one alone."""
    n_q = n_route_words + 1
    question = [[((r * 7 + c * 3) % 11) / 11.0 for c in range(N_CANDIDATES)] for r in range(rows)]
    scores = np.array([question] * n_q, dtype=np.float64)
    n_cand = np.full(n_q, N_CANDIDATES, dtype=np.int32)
    flags = np.zeros((n_q, max(n_route_words, 1)), dtype=np.uint8)
    for i in range(n_route_words):
        flags[i + 1, i] = 1
    best = np.zeros(n_q, dtype=np.int32)
    confidence = np.zeros(n_q, dtype=np.float64)
    decide_story(scores, n_cand, flags, n_q, best, confidence)
    return [(int(b), float(p)) for b, p in zip(best, confidence, strict=True)]
