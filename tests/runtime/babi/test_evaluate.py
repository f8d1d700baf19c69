"""The evaluation summary."""

from __future__ import annotations

from pathlib import Path

from codegen.state import RSIState
from runtime.babi.builds import BuiltModel, build_model
from runtime.babi.evaluate import answers_match, compare_tiers, evaluate
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


def test_compare_tiers_reports_mismatches(
    python_model: BuiltModel, uniform_state: RSIState, babi_generated: Path
) -> None:
    stories = generate_stories(seed=4, stories_per_task=2)
    same = compare_tiers(python_model.model, python_model.model, stories)
    assert same.agree and same.questions == sum(len(s.questions) for s in stories)
    other = build_model(uniform_state, babi_generated, "python").model
    differ = compare_tiers(python_model.model, other, stories)
    assert not differ.agree
    assert all(len(m) == 4 for m in differ.mismatches)
