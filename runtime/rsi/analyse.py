"""Failure analysis on the train split: which question cues fail, and which expert knew.

A failure is a train question the incumbent's scoring answers wrongly (exact NumPy replay of
the generated scoring, :func:`runtime.babi.tune.screen`). Failures are grouped by each cue
word of their question; a group's *right expert* is the
expert whose own evidence rows rank the gold answer first for most of its failures, and its
*wrong expert* the one contributing most to the wrong choices. The proposed fix is a routing
rule: when the question holds the cue, boost the right expert (and damp the wrong one).

Cue words are words of the question *form* (:func:`form_words`): a word is one when it is in
at least half the train questions of some task, as the form's wh-word, verb or adjective is
(``where``, ``carrying``, ``afraid``). The names, objects and places a question is about
rotate among several per task, so none of them reaches half, and no rule is mined from
"the question contains ``mary``" (a rule that would not hold for the next name).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from codegen.state import RoutingRule, RSIState
from runtime.babi.tune import Evidence, Screened

__all__ = ["FailureGroup", "Analysis", "analyse", "cues", "form_words", "expert_rows"]

logger = logging.getLogger(__name__)

#: Question words never used as cues (they say nothing about the reasoning needed).
NOT_CUES = frozenset("the a an of to is in did does do was were are".split())
#: Share of a task's questions a word must be in to be a word of the question form.
FORM_SHARE = 0.5


@dataclass(frozen=True)
class FailureGroup:
    """Failed train questions that share a cue word."""

    cue: str
    failures: int
    questions: int  # train questions with the cue (failed or not)
    tasks: tuple[int, ...]  # tasks the failures come from
    right_expert: str | None  # expert that ranks gold first for most of them
    right_share: float  # fraction of the failures it ranks right
    wrong_expert: str | None  # expert contributing most to the wrong choices

    def fix(self, boost: float) -> RoutingRule | None:
        """The routing rule this group suggests, with boosts of magnitude ``boost``."""
        if self.right_expert is None:
            return None
        boosts = {self.right_expert: boost}
        if self.wrong_expert is not None and self.wrong_expert != self.right_expert:
            boosts[self.wrong_expert] = -boost
        return RoutingRule(when_all=(self.cue,), boosts=boosts)

    @property
    def pattern(self) -> str:
        """How the table names the group."""
        return f"question contains {self.cue!r}"


@dataclass(frozen=True)
class Analysis:
    """Failure groups, largest first, and the totals."""

    groups: tuple[FailureGroup, ...]
    failures: int
    questions: int


def analyse(
    state: RSIState, evidence: Evidence, screened: Screened, *, min_failures: int = 3
) -> Analysis:
    """Group the failures of ``screened`` (``state`` on ``evidence``) by cue word."""
    names = list(state.experts)
    rows = expert_rows(names, evidence)
    failed = np.flatnonzero(~screened.correct)
    right: dict[str, Counter[str]] = {}
    wrong: dict[str, Counter[str]] = {}
    tasks: dict[str, set[int]] = {}
    counts: Counter[str] = Counter()
    weights = np.array([state.experts[n].weight for n in names])
    coef = state.scoring.model_dump()
    form = form_words(evidence)
    for q in (int(i) for i in failed):
        n_cand = int(evidence.n_cand[q])
        knew = _experts_ranking_gold(names, rows, evidence, q, n_cand)
        blame = _expert_behind_choice(names, evidence, q, int(screened.choices[q]), weights, coef)
        for cue in cues(evidence.words[q], form):
            counts[cue] += 1
            right.setdefault(cue, Counter()).update(knew)
            if blame is not None:
                wrong.setdefault(cue, Counter())[blame] += 1
            tasks.setdefault(cue, set()).add(int(evidence.tasks[q]))
    totals = Counter(c for words in evidence.words for c in cues(words, form))
    groups = []
    for cue, n in counts.items():
        if n < min_failures:
            continue
        best = _most_common(right.get(cue, Counter()))
        groups.append(
            FailureGroup(
                cue=cue,
                failures=n,
                questions=totals[cue],
                tasks=tuple(sorted(tasks[cue])),
                right_expert=best,
                right_share=right[cue][best] / n if best is not None else 0.0,
                wrong_expert=_most_common(wrong.get(cue, Counter())),
            )
        )
    # Largest first; among equals the more specific cue (more of its questions fail).
    groups.sort(key=lambda g: (-g.failures, -g.failures / max(1, g.questions), g.cue))
    logger.info("analysis: %d failures in %d cue groups", failed.size, len(groups))
    return Analysis(tuple(groups), int(failed.size), int(screened.correct.size))


def cues(words: frozenset[str], form: frozenset[str] | None = None) -> list[str]:
    """A question's cue words, sorted: lower-case alphabetic words, no function words, and
    only words of ``form`` when it is given."""
    return sorted(
        w
        for w in words
        if w not in NOT_CUES and w.isalpha() and w.islower() and (form is None or w in form)
    )


def form_words(evidence: Evidence, *, share: float = FORM_SHARE) -> frozenset[str]:
    """Words in at least ``share`` of the questions of some task (see the module docstring)."""
    per_task = Counter(int(t) for t in evidence.tasks)
    counts: Counter[tuple[int, str]] = Counter()
    for words, task in zip(evidence.words, evidence.tasks, strict=True):
        counts.update((int(task), w) for w in cues(words))
    return frozenset(w for (task, w), n in counts.items() if n >= share * per_task[task])


def expert_rows(names: list[str], evidence: Evidence) -> dict[str, list[int]]:
    """Evidence row indexes of each expert."""
    return {n: [r for r, (e, _) in enumerate(evidence.rows) if e == n] for n in names}


def _experts_ranking_gold(
    names: list[str], rows: dict[str, list[int]], evidence: Evidence, q: int, n_cand: int
) -> list[str]:
    out = []
    for name in names:
        if not rows[name]:
            continue
        own = evidence.scores[q, rows[name], :n_cand].sum(axis=0)
        if own.max() > 0 and bool(evidence.gold[q, int(np.argmax(own))]):
            out.append(name)
    return out


def _expert_behind_choice(
    names: list[str],
    evidence: Evidence,
    q: int,
    choice: int,
    weights: np.ndarray,
    coef: dict[str, float],
) -> str | None:
    share = dict.fromkeys(names, 0.0)
    for r, (expert, channel) in enumerate(evidence.rows):
        share[expert] += (
            float(weights[names.index(expert)]) * coef[channel] * evidence.scores[q, r, choice]
        )
    best = max(names, key=lambda n: (share[n], -names.index(n)))
    return best if share[best] > 0 else None


def _most_common(counter: Counter[str]) -> str | None:
    if not counter:
        return None
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
