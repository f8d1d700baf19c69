"""The screener's gate evidence: an edit of coefficients, expert weights or routing rules is
judged on the experts' raw evidence, collected once per build structure, by the NumPy
screener (:func:`runtime.babi.tune.screen` replays the generated scoring exactly)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from codegen.state import RSIState
from codegen.toolchain import content_key
from runtime.babi.builds import model_of
from runtime.babi.tune import Evidence as RawEvidence
from runtime.babi.tune import collect_evidence, screen
from runtime.evidence import data_fingerprint, stories_of
from runtime.gate import Evidence, SplitOutcome
from runtime.loader import LoadedBuild

__all__ = ["SCREENABLE", "Screen", "basis", "collect", "screened_evidence"]

logger = logging.getLogger(__name__)

#: State sections an edit may change and still be judged by the screener on raw evidence.
SCREENABLE = ("version", "benchmark", "scoring", "routing")


@dataclass(frozen=True)
class Screen:
    """Raw expert evidence of both gate splits, valid for one build structure."""

    basis: str  # see :func:`basis`
    heldout: RawEvidence
    hidden: RawEvidence
    data: Path | None  # bAbI directory; None: generated stories
    seed: int


def basis(state: RSIState, templates: str) -> str:
    """Everything the experts' raw evidence depends on (not weights, scoring, routing)."""
    data = state.model_dump(mode="json", exclude=set(SCREENABLE))
    for expert in data["experts"].values():
        expert.pop("weight")
    return content_key({"state": data, "templates": templates})


def collect(
    build: LoadedBuild, state: RSIState, templates: str, *, data: Path | None, seed: int
) -> Screen:
    """Collect ``build``'s raw expert evidence on both gate splits."""
    start = time.perf_counter()
    model = model_of(build, full_evidence=True)
    heldout = collect_evidence(model, stories_of(data, "heldout", seed))
    hidden = collect_evidence(model, stories_of(data, "hidden", seed))
    logger.info("screener evidence collected in %.2f s", time.perf_counter() - start)
    return Screen(basis(state, templates), heldout, hidden, data, seed)


def screened_evidence(found: Screen, state: RSIState, build_id: str) -> Evidence:
    """The gate's evidence of ``state`` (built as ``build_id``), replayed by the screener."""
    fingerprint = data_fingerprint(found.data, found.seed)
    outcomes = [
        SplitOutcome(
            split,
            found.seed,
            fingerprint,
            tuple(int(t) for t in raw.tasks),
            tuple(bool(c) for c in screen(state, raw).correct),
        )
        for split, raw in (("heldout", found.heldout), ("hidden", found.hidden))
    ]
    # Kernels are unchanged (the basis includes them); the tiers are compared before the
    # compiled one goes live (differential_check), so neither check can fail here.
    return Evidence(build_id, outcomes[0], outcomes[1], True, True)
