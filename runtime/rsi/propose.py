"""Proposals: bounded numeric changes and routing rules mined from failures, screened.

Every candidate stays inside the incumbent's safety box, so the policy
(:func:`codegen.policy.check_policy`) never has to refuse it: a weight, coefficient or existing
boost takes values ``old * (1 +- step)`` or ``old * (1 +- step / 2)`` with ``step`` the
state's ``safety.max_relative_step``; a new routing rule's boosts have magnitude ``step`` or
``step / 2`` (a new value is measured against a unit scale). Rules are only appended, since
the policy compares lists by position.

:func:`search` hill-climbs over these moves with the exact NumPy screener on the train split
(a move is kept when it raises the fitness: tasks passed, then mean accuracy; after each
pass, a kept move is dropped again when that raises it) and returns the
distinct candidates worth building, best first: every kind of change together, and routing
changes alone (so that a numeric change does not hide the structural one).

One decision per structural change: a candidate adds at most one new routing rule (a new
branch in the generated scoring code); the climb swaps a better rule in for the one it holds.
So every gate decision judges exactly one new branch, named in its change list (the run
manifest, the report and the ledger's ``loop_decision`` event), and further rules come in
later iterations, each gated on its own.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from codegen.state import RSIState
from runtime.babi.tune import COEFFICIENTS, Evidence, Screened, screen, state_from_data
from runtime.rsi.analyse import Analysis

__all__ = ["Kind", "Change", "Candidate", "SearchResult", "search"]

logger = logging.getLogger(__name__)

#: ``kernel`` and ``architecture`` are build knobs (:mod:`runtime.rsi.knobs`).
Kind = Literal["numeric", "routing", "kernel", "architecture"]
#: Schema bounds of weights and coefficients.
_LO, _HI = 0.0, 10.0


@dataclass(frozen=True)
class Change:
    """One leaf a candidate changes, and why."""

    kind: Kind
    path: str
    old: float | str | None  # str: a mechanism name
    new: float | str
    why: str

    def describe(self) -> str:
        """One line: path, old -> new, and the reason."""
        old = "absent" if self.old is None else _show(self.old)
        return f"{self.path}: {old} -> {_show(self.new)} ({self.why})"


@dataclass(frozen=True)
class Candidate:
    """A screened candidate state and the changes that make it."""

    label: str
    state: RSIState
    changes: tuple[Change, ...]
    fitness: tuple[int, float]
    per_task: dict[int, float]

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of change it holds, sorted."""
        return tuple(sorted({c.kind for c in self.changes}))


@dataclass(frozen=True)
class SearchResult:
    """Candidates worth building (better than the incumbent on train), best first."""

    incumbent: tuple[int, float]
    candidates: tuple[Candidate, ...]
    screened: int


@dataclass(frozen=True)
class _Move:
    kind: Kind
    path: str
    value: float
    why: str
    rule: int = -1  # index into the mined rules for a new-rule move


def search(
    incumbent: RSIState,
    evidence: Evidence,
    analysis: Analysis,
    rng: random.Random,
    *,
    passes: int = 3,
    max_rules: int = 12,
) -> SearchResult:
    """Hill-climb from ``incumbent`` within its safety box; see the module docstring."""
    step = incumbent.safety.max_relative_step
    hits: dict[tuple[str, ...], np.ndarray] = {}
    base = screen(incumbent, evidence, hits)
    mined = _mined_rules(analysis, max_rules)
    moves = _numeric_moves(incumbent, step) + _rule_moves(incumbent, mined, step)
    found: list[Candidate] = []
    screened = 0
    for label, kinds in (("combined", {"numeric", "routing"}), ("routing", {"routing"})):
        allowed = [m for m in moves if m.kind in kinds]
        best, count = _climb(incumbent, evidence, hits, base, allowed, mined, rng, passes)
        screened += count
        if best is not None and all(best.state != c.state for c in found):
            found.append(_labelled(best, label))
    found.sort(key=lambda c: c.fitness, reverse=True)
    logger.info("search: %d proposals screened, %d candidates", screened, len(found))
    return SearchResult(base.fitness, tuple(found), screened)


def _climb(
    incumbent: RSIState,
    evidence: Evidence,
    hits: dict[tuple[str, ...], np.ndarray],
    base: Screened,
    moves: Sequence[_Move],
    mined: Sequence[tuple[str, dict[str, float], str]],
    rng: random.Random,
    passes: int,
) -> tuple[Candidate | None, int]:
    chosen: dict[str, _Move] = {}
    fitness, per_task = base.fitness, base.per_task
    count = 0
    for _ in range(passes):
        improved = False
        mined_first = [m for m in moves if m.rule >= 0]  # in the analysis' order
        rest = [m for m in moves if m.rule < 0]
        for move in mined_first + rng.sample(rest, len(rest)):
            if chosen.get(move.path) == move:
                continue
            trial = {**chosen, move.path: move}
            if move.rule >= 0:  # one structural change per candidate: a new rule replaces one
                trial = {p: m for p, m in chosen.items() if m.rule < 0} | {move.path: move}
            result = screen(_apply(incumbent, trial.values(), mined), evidence, hits)
            count += 1
            if result.fitness > fitness:
                chosen, fitness, per_task, improved = trial, result.fitness, result.per_task, True
        for path in sorted(chosen):  # a later move can make an earlier one harmful
            trial = {p: m for p, m in chosen.items() if p != path}
            result = screen(_apply(incumbent, trial.values(), mined), evidence, hits)
            count += 1
            if result.fitness > fitness:
                chosen, fitness, per_task, improved = trial, result.fitness, result.per_task, True
        if not improved:
            break
    if not chosen:
        return None, count
    ordered = sorted(chosen.values(), key=lambda m: m.path)
    state = _apply(incumbent, ordered, mined)
    changes = tuple(_change(incumbent, m, mined) for m in ordered)
    return Candidate("", state, changes, fitness, per_task), count


def _labelled(candidate: Candidate, label: str) -> Candidate:
    return Candidate(
        label, candidate.state, candidate.changes, candidate.fitness, candidate.per_task
    )


def _numeric_moves(state: RSIState, step: float) -> list[_Move]:
    values: list[tuple[str, float]] = [
        *((f"experts.{n}.weight", e.weight) for n, e in state.experts.items()),
        *((f"scoring.{k}", float(getattr(state.scoring, k))) for k in COEFFICIENTS),
        *(
            (f"routing[{i}].boosts.{n}", b)
            for i, rule in enumerate(state.routing)
            for n, b in sorted(rule.boosts.items())
        ),
    ]
    moves = []
    for path, old in values:
        kind: Kind = "routing" if path.startswith("routing") else "numeric"
        lo = -_HI if kind == "routing" else _LO
        for delta in (step, -step, step / 2, -step / 2):
            new = _within(old, delta, lo)
            if new != old:
                moves.append(_Move(kind, path, new, f"{delta:+.0%}"))
    return moves


def _rule_moves(
    state: RSIState, mined: Sequence[tuple[str, dict[str, float], str]], step: float
) -> list[_Move]:
    moves = []
    for index, (cue, _, why) in enumerate(mined):
        if any(rule.when_all == (cue,) for rule in state.routing):
            continue
        for scale in (1.0, 0.5):
            moves.append(_Move("routing", f"rule:{cue}", step * scale, why, index))
    return moves


def _mined_rules(analysis: Analysis, limit: int) -> list[tuple[str, dict[str, float], str]]:
    out = []
    for group in analysis.groups:
        rule = group.fix(1.0)
        if rule is None:
            continue
        why = (
            f"{group.failures} train failures on {group.pattern}; {group.right_expert} ranks "
            f"gold first in {group.right_share:.0%}"
        )
        out.append((group.cue, dict(rule.boosts), why))
        if len(out) == limit:
            break
    return out


def _apply(
    incumbent: RSIState,
    moves: Any,
    mined: Sequence[tuple[str, dict[str, float], str]],
) -> RSIState:
    data = incumbent.model_dump(mode="json")
    for move in moves:
        if move.rule >= 0:
            cue, unit, _ = mined[move.rule]
            boosts = {name: round(sign * move.value, 6) for name, sign in unit.items()}
            data["routing"].append({"when_all": [cue], "boosts": boosts})
        elif move.path.startswith("experts."):
            data["experts"][move.path.split(".")[1]]["weight"] = move.value
        elif move.path.startswith("scoring."):
            data["scoring"][move.path.split(".")[1]] = move.value
        else:
            index = int(move.path[len("routing[") : move.path.index("]")])
            data["routing"][index]["boosts"][move.path.rsplit(".", 1)[1]] = move.value
    return state_from_data(data)


def _change(
    incumbent: RSIState, move: _Move, mined: Sequence[tuple[str, dict[str, float], str]]
) -> Change:
    if move.rule >= 0:
        cue, unit, why = mined[move.rule]
        boosts = ", ".join(f"{n} {s * move.value:+g}" for n, s in sorted(unit.items()))
        return Change("routing", move.path, None, move.value, f"when {cue!r}: {boosts}; {why}")
    old: float
    if move.path.startswith("experts."):
        old = incumbent.experts[move.path.split(".")[1]].weight
    elif move.path.startswith("scoring."):
        old = float(getattr(incumbent.scoring, move.path.split(".")[1]))
    else:
        index = int(move.path[len("routing[") : move.path.index("]")])
        old = incumbent.routing[index].boosts[move.path.rsplit(".", 1)[1]]
    return Change(move.kind, move.path, old, move.value, move.why)


def _within(old: float, delta: float, lo: float) -> float:
    """``old`` moved by ``delta`` of its magnitude (of 1 at zero), rounded to 6 decimals
    without leaving the step bound, clamped to ``[lo, 10]``."""
    scale = abs(old) if old != 0.0 else 1.0
    new = round(old + delta * scale, 6)
    while abs(new - old) > abs(delta) * scale:
        new = round(new - 1e-6 if delta > 0 else new + 1e-6, 6)
    return float(min(_HI, max(lo, new)))


def _show(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"
