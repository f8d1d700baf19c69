"""Proposal screening and seeded search over scoring coefficients, weights and routing rules.

Experts write raw evidence rows that do not depend on any coefficient, weight or rule: those
are applied only by the generated ``scoring.decide_story``. So the evidence of a split is collected
once with any build of the same experts, and a proposal is screened with NumPy in
milliseconds, no rendering or compiling. :func:`screen` replays ``decide_story`` operation for
operation (same products, same summation order, lowest index wins ties), so its choices equal
the compiled model's; the RSI loop reuses it as its proposal screener.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from codegen.plan import plan
from codegen.state import RoutingRule, RSIState, parse_state
from runtime.babi.data import Story
from runtime.babi.evaluate import PASS_MARK, answers_match
from runtime.babi.model import BabiModel

__all__ = [
    "COEFFICIENTS",
    "Evidence",
    "Screened",
    "TuneResult",
    "collect_evidence",
    "screen",
    "propose",
    "tune",
    "state_from_data",
]

logger = logging.getLogger(__name__)

COEFFICIENTS: tuple[str, ...] = (
    "entity_attribute",
    "embedding_similarity",
    "attention",
    "ntp_deduction",
    "commonsense",
    "rag",
)
#: Question words never used as routing conditions (they say nothing about the reasoning).
_NOT_CUES = frozenset("the a an of to is in did does do".split())


@dataclass(frozen=True)
class Evidence:
    """Raw expert evidence of every question of a split, padded to one array."""

    rows: tuple[tuple[str, str], ...]
    scores: np.ndarray  # (questions, rows, candidates), float64, zero padded
    n_cand: np.ndarray  # (questions,)
    gold: np.ndarray  # (questions, candidates) bool: candidate text equals the answer
    tasks: np.ndarray  # (questions,) task numbers, for grouping only
    words: tuple[frozenset[str], ...]


@dataclass(frozen=True)
class Screened:
    """Screening outcome of one state."""

    per_task: dict[int, float]
    correct: np.ndarray
    choices: np.ndarray

    @property
    def mean(self) -> float:
        """Mean per-task accuracy."""
        return float(np.mean(list(self.per_task.values()))) if self.per_task else 0.0

    @property
    def passed(self) -> int:
        """Tasks at or above the pass mark."""
        return sum(1 for a in self.per_task.values() if a >= PASS_MARK)

    @property
    def fitness(self) -> tuple[int, float]:
        """What the search maximizes: tasks passed, then mean accuracy."""
        return self.passed, round(self.mean, 9)


@dataclass(frozen=True)
class TuneResult:
    """The best state found and the fitness trail of accepted proposals."""

    state: RSIState
    screened: Screened
    trail: tuple[tuple[int, float], ...]
    proposals: int


def collect_evidence(model: BabiModel, stories: Sequence[Story]) -> Evidence:
    """Run the experts once on every question and keep their raw score rows.

    ``model`` must compute every row (``BabiModel(..., full_evidence=True)``).
    """
    if not (model.use_similarity and model.use_attention):
        raise ValueError("collect_evidence needs a model built with full_evidence=True")
    mats: list[np.ndarray] = []
    golds: list[np.ndarray] = []
    tasks: list[int] = []
    words: list[frozenset[str]] = []
    for story in stories:
        prepared = model.prepare(story.sentences, [(q.text, q.position) for q in story.questions])
        for index, question in enumerate(story.questions):
            n_cand = model.evidence(prepared, index)
            mats.append(prepared.scores[:, :n_cand].copy())
            golds.append(
                np.array(
                    [
                        answers_match(model.candidate_text(prepared, c), question.answer)
                        for c in range(n_cand)
                    ],
                    dtype=bool,
                )
            )
            tasks.append(story.task)
            words.append(model.encoding.question_words(question.text))
    width = max((m.shape[1] for m in mats), default=1)
    n_rows = model.plan.n_rows
    scores = np.zeros((len(mats), n_rows, width), dtype=np.float64)
    gold = np.zeros((len(mats), width), dtype=bool)
    for i, (mat, g) in enumerate(zip(mats, golds, strict=True)):
        scores[i, :, : mat.shape[1]] = mat
        gold[i, : g.shape[0]] = g
    rows = tuple((r.expert, r.channel) for r in model.plan.rows)
    return Evidence(
        rows=rows,
        scores=scores,
        n_cand=np.array([m.shape[1] for m in mats], dtype=np.int64),
        gold=gold,
        tasks=np.array(tasks, dtype=np.int64),
        words=tuple(words),
    )


def screen(
    state: RSIState,
    evidence: Evidence,
    hits: dict[tuple[str, ...], np.ndarray] | None = None,
) -> Screened:
    """Choices ``state``'s generated scoring would make on ``evidence``, and their accuracy.

    ``hits`` caches which questions each rule's words select (a search screening many
    states of the same evidence passes one dict to every call).
    """
    decided = plan(state)
    planned = {(r.expert, r.channel): r for r in decided.rows}
    unknown = [row for row in evidence.rows if row not in planned]
    if unknown:
        raise ValueError(
            f"screen: evidence row {unknown[0]} is not a score row of this state's plan "
            "(the evidence was collected for another expert roster)"
        )
    n_q = evidence.scores.shape[0]
    weights = np.tile(np.array([e.weight for e in decided.experts]), (n_q, 1))
    cache: dict[tuple[str, ...], np.ndarray] = {} if hits is None else hits
    for rule in decided.routes:
        needed = tuple(decided.route_words[f] for f in rule.flags)
        hit = cache.get(needed)
        if hit is None:
            hit = np.array(
                [all(w in words for w in needed) for words in evidence.words],
                dtype=bool,
            )
            cache[needed] = hit
        weights[hit] += np.array(rule.adds)
    weights = np.where(weights > 0.0, weights, 0.0)
    totals = np.zeros((n_q, evidence.scores.shape[2]), dtype=np.float64)
    for r, key in enumerate(evidence.rows):
        row = planned[key]
        factor = weights[:, row.expert_index] * row.coefficient
        totals += factor[:, None] * evidence.scores[:, r, :]
    pad = np.arange(totals.shape[1])[None, :] >= evidence.n_cand[:, None]
    totals[pad] = -np.inf
    best = np.argmax(totals, axis=1)
    correct = evidence.gold[np.arange(n_q), best]
    per_task = {
        int(t): float(np.mean(correct[evidence.tasks == t])) for t in np.unique(evidence.tasks)
    }
    return Screened(per_task, correct, best)


def propose(
    state: RSIState,
    evidence: Evidence,
    screened: Screened,
    rng: random.Random,
    max_step: float | None = None,
) -> RSIState:
    """One bounded random change: a weight, a coefficient, or a routing rule from a failure.

    ``max_step`` (e.g. the state's ``safety.max_relative_step``) limits a weight or
    coefficient change to that fraction of its value; without it the search takes large
    multiplicative steps (and may switch an expert off).
    """
    data = state.model_dump(mode="json")
    names = sorted(state.experts)
    move = rng.random()
    if max_step is None:
        weight_factors: tuple[float, ...] = (0.0, 0.1, 0.5, 2.0, 10.0)
        coef_factors: tuple[float, ...] = (0.1, 0.5, 2.0, 10.0)
        nudges: tuple[float, ...] = (0.0, 0.05)
    else:
        weight_factors = coef_factors = (1.0 - max_step, 1.0 + max_step)
        nudges = (0.0,)
    if move < 0.35:
        name = rng.choice(names)
        data["experts"][name]["weight"] = _bounded(
            data["experts"][name]["weight"] * rng.choice(weight_factors) + rng.choice(nudges),
            0.0,
            10.0,
        )
    elif move < 0.65:
        key = rng.choice(COEFFICIENTS)
        data["scoring"][key] = _bounded(data["scoring"][key] * rng.choice(coef_factors), 0.0, 10.0)
    elif move < 0.9:
        rule = _rule_from_failure(state, evidence, screened, rng)
        if rule is None:
            return state
        data["routing"] = [*data["routing"], rule.model_dump(mode="json")][-64:]
    elif data["routing"]:
        data["routing"].pop(rng.randrange(len(data["routing"])))
    return state_from_data(data)


def tune(
    state: RSIState,
    evidence: Evidence,
    seed: int = 0,
    proposals: int = 400,
    max_step: float | None = None,
) -> TuneResult:
    """Hill-climb from ``state`` by screened proposals (accept when fitness does not drop)."""
    rng = random.Random(f"babi-tune:{seed}")
    best = state
    best_screen = screen(best, evidence)
    trail = [best_screen.fitness]
    for _ in range(proposals):
        candidate = propose(best, evidence, best_screen, rng, max_step)
        if candidate is best:
            continue
        result = screen(candidate, evidence)
        if result.fitness > best_screen.fitness or (
            result.fitness == best_screen.fitness and len(candidate.routing) <= len(best.routing)
        ):
            if result.fitness > best_screen.fitness:
                trail.append(result.fitness)
                logger.info("tune: passed %d, mean %.4f", *result.fitness)
            best, best_screen = candidate, result
    return TuneResult(best, best_screen, tuple(trail), proposals)


def state_from_data(data: dict[str, Any]) -> RSIState:
    """Validate a JSON-shaped dict as a state (strict: through JSON, as a file would be)."""
    return parse_state(json.dumps(data).encode(), "proposal")


def _rule_from_failure(
    state: RSIState, evidence: Evidence, screened: Screened, rng: random.Random
) -> RoutingRule | None:
    """A rule for a failed question: its words → boost the expert that ranks the answer first."""
    failed = np.flatnonzero(~screened.correct)
    if failed.size == 0:
        return None
    q = int(rng.choice(failed))
    names = list(state.experts)
    helpful = []
    for expert in names:
        rows = [r for r, (e, _) in enumerate(evidence.rows) if e == expert]
        own = evidence.scores[q, rows, : evidence.n_cand[q]].sum(axis=0)
        if own.max() > 0 and evidence.gold[q, int(np.argmax(own))]:
            helpful.append(expert)
    if not helpful:
        return None
    cues = sorted(
        w for w in evidence.words[q] if w not in _NOT_CUES and w.isalpha() and w.islower()
    )
    if not cues:
        return None
    when = tuple(sorted(rng.sample(cues, min(len(cues), rng.choice((1, 1, 2))))))
    return RoutingRule(
        when_all=when, boosts={rng.choice(helpful): rng.choice((0.5, 1.0, 2.0, 5.0))}
    )


def _bounded(value: float, lo: float, hi: float) -> float:
    return float(min(hi, max(lo, round(value, 6))))
