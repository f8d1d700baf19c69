"""Accuracy and throughput of a model on a split of bAbI stories.

Stories are encoded once (``encode_s``), then every question is answered (``answer_s``).
``questions_per_s`` counts both phases; ``answer_questions_per_s`` only the answering, which
is the part the generated experts and scoring do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runtime.babi.data import Split, Story, load_dir, split_stories
from runtime.babi.generate import generate_stories
from runtime.babi.model import BabiModel, Prepared
from runtime.tiers import agree

__all__ = [
    "PASS_MARK",
    "EvalResult",
    "Answered",
    "answers_match",
    "evaluate",
    "load_split",
    "prepare_all",
    "TierComparison",
    "compare_tiers",
]

logger = logging.getLogger(__name__)

#: A task is passed at this accuracy (the usual bAbI bar).
PASS_MARK = 0.95


@dataclass(frozen=True)
class Answered:
    """One question's outcome."""

    task: int
    question: str
    gold: str
    choice: str
    confidence: float
    correct: bool


@dataclass(frozen=True)
class EvalResult:
    """Per-task accuracy and timing of one evaluation."""

    per_task: dict[int, float]
    counts: dict[int, int]
    questions: int
    encode_s: float
    answer_s: float
    build: str
    answers: tuple[Answered, ...] = field(default=(), repr=False)

    @property
    def mean(self) -> float:
        """Mean of the per-task accuracies."""
        return sum(self.per_task.values()) / len(self.per_task) if self.per_task else 0.0

    @property
    def passed(self) -> int:
        """Tasks at or above :data:`PASS_MARK`."""
        return sum(1 for acc in self.per_task.values() if acc >= PASS_MARK)

    @property
    def questions_per_s(self) -> float:
        """End-to-end throughput (encoding and answering)."""
        total = self.encode_s + self.answer_s
        return self.questions / total if total > 0 else 0.0

    @property
    def answer_questions_per_s(self) -> float:
        """Throughput of answering already-encoded questions."""
        return self.questions / self.answer_s if self.answer_s > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        """The summary object of ``rsi eval --json``."""
        return {
            "per_task": {str(t): round(a, 4) for t, a in sorted(self.per_task.items())},
            "mean": round(self.mean, 4),
            "passed": self.passed,
            "questions": self.questions,
            "questions_per_s": round(self.questions_per_s, 1),
            "answer_questions_per_s": round(self.answer_questions_per_s, 1),
            "build": self.build,
        }

    def table(self) -> str:
        """A per-task accuracy table."""
        lines = ["task  questions  accuracy"]
        for task in sorted(self.per_task):
            mark = "" if self.per_task[task] >= PASS_MARK else "  < 0.95"
            lines.append(f"{task:>4}  {self.counts[task]:>9}  {self.per_task[task]:>8.3f}{mark}")
        lines.append(
            f"mean {self.mean:.3f}, passed {self.passed}/{len(self.per_task)}, "
            f"{self.questions} questions, {self.questions_per_s:,.0f} q/s end to end, "
            f"{self.answer_questions_per_s:,.0f} q/s answering (build {self.build})"
        )
        return "\n".join(lines)


def answers_match(choice: str, gold: str) -> bool:
    """Exact match, ignoring case (names are capitalized in stories, not in questions)."""
    return choice.lower() == gold.lower()


def prepare_all(model: BabiModel, stories: Sequence[Story]) -> list[Prepared]:
    """Encode every story once."""
    return [
        model.prepare(story.sentences, [(q.text, q.position) for q in story.questions])
        for story in stories
    ]


def evaluate(
    model: BabiModel, stories: Sequence[Story], build: str = "", keep_answers: bool = False
) -> EvalResult:
    """Answer every question of ``stories``; the task number is used only for grouping."""
    start = time.perf_counter()
    prepared = prepare_all(model, stories)
    encoded = time.perf_counter()
    choices = [model.answer_all(p) for p in prepared]
    answered = time.perf_counter()
    correct: dict[int, int] = {}
    counts: dict[int, int] = {}
    details: list[Answered] = []
    for story, story_choices in zip(stories, choices, strict=True):
        for question, (choice, confidence) in zip(story.questions, story_choices, strict=True):
            ok = answers_match(choice, question.answer)
            counts[story.task] = counts.get(story.task, 0) + 1
            correct[story.task] = correct.get(story.task, 0) + int(ok)
            if keep_answers:
                details.append(
                    Answered(story.task, question.text, question.answer, choice, confidence, ok)
                )
    per_task = {task: correct[task] / counts[task] for task in counts}
    return EvalResult(
        per_task=per_task,
        counts=counts,
        questions=sum(counts.values()),
        encode_s=encoded - start,
        answer_s=answered - encoded,
        build=build,
        answers=tuple(details),
    )


def load_split(data: Path | None, split: Split, seed: int = 0) -> list[Story]:
    """Stories of ``split`` from a bAbI directory, or from the embedded generator."""
    stories = load_dir(data) if data is not None else generate_stories(seed=seed)
    return split_stories(stories, split, seed=seed)


@dataclass(frozen=True)
class TierComparison:
    """Outcome of answering the same encoded questions with two builds."""

    questions: int
    mismatches: tuple[tuple[int, int, str, str], ...]  # (story, question, a's answer, b's)

    @property
    def agree(self) -> bool:
        """True when every answer and confidence matched exactly."""
        return not self.mismatches


def compare_tiers(a: BabiModel, b: BabiModel, stories: Sequence[Story]) -> TierComparison:
    """Differential test: stories encoded once by ``a``, answered by both ``a`` and ``b``.

    For the gate's "compiled and interpreted tiers agree": same state, two backends.
    """
    mismatches: list[tuple[int, int, str, str]] = []
    n = 0
    for s, prepared in enumerate(prepare_all(a, stories)):
        for q, (x, y) in enumerate(
            zip(a.answer_all(prepared), b.answer_all(prepared), strict=True)
        ):
            n += 1
            if not agree(x, y, rel_tol=0.0, abs_tol=0.0):
                mismatches.append((s, q, f"{x[0]} ({x[1]:.6g})", f"{y[0]} ({y[1]:.6g})"))
    return TierComparison(n, tuple(mismatches))
