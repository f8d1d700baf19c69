"""The evaluation summary."""

from __future__ import annotations

from runtime.babi.builds import BuiltModel
from runtime.babi.evaluate import answers_match, evaluate
from runtime.babi.generate import generate_stories


def test_eval_summary_fields(python_model: BuiltModel) -> None:
    result = evaluate(python_model.model, generate_stories(seed=1, stories_per_task=2), "b1")
    summary = result.to_json()
    assert set(summary) >= {"per_task", "mean", "passed", "questions", "questions_per_s", "build"}
    assert summary["questions"] == sum(result.counts.values())
    assert summary["passed"] == sum(1 for a in result.per_task.values() if a >= 0.95)
    assert "mean" in result.table()


def test_answers_match_ignores_case_only() -> None:
    assert answers_match("Bill", "bill")
    assert not answers_match("milk,apple", "apple,milk")
