"""Knowledge learned from training stories, the evaluation summary and ``rsi eval``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from codegen.state import RSIState
from runtime.babi.builds import BuiltModel, build_model
from runtime.babi.data import parse_lines
from runtime.babi.evaluate import evaluate
from runtime.babi.generate import generate_stories
from runtime.babi.learn import learn_associations, learn_vocabulary
from runtime.cli import main

REPO = Path(__file__).resolve().parents[3]


def test_vocabulary_keeps_only_answers_the_story_lacks() -> None:
    stories = parse_lines(
        [
            "1 Mary went to the garden.",
            "2 Is Mary in the garden?\tyes\t1",
            "3 Where is Mary?\tgarden\t1",
            "4 How many objects is Mary carrying?\tnone\t1",
            "5 Is Mary in the office?\tno\t1",
            "6 Is Mary in the park?\tno\t1",
        ],
        6,
        "qa6_x.txt",
    )
    assert learn_vocabulary(stories) == ("no", "none", "yes")


def test_associations_from_where_will_questions(
    uniform_state: RSIState, babi_generated: Path
) -> None:
    lines = []
    for name in ("Sumit", "Yann", "Jason"):
        lines += [f"1 {name} is hungry.", f"2 Where will {name.lower()} go?\tkitchen\t1"]
    lines += ["1 Jason is tired.", "2 Where will jason go?\tbedroom\t1"]
    model = build_model(uniform_state, babi_generated, "python").model
    learned = learn_associations(model, parse_lines(lines, 20, "qa20_x.txt"))
    assert [(a.cue, a.answer, a.weight) for a in learned] == [("hungry", "kitchen", 1.0)]


def test_eval_summary_fields(python_model: BuiltModel) -> None:
    result = evaluate(python_model.model, generate_stories(seed=1, stories_per_task=2), "b1")
    summary = result.to_json()
    assert set(summary) >= {"per_task", "mean", "passed", "questions", "questions_per_s", "build"}
    assert summary["questions"] == sum(result.counts.values())
    assert summary["passed"] == sum(1 for a in result.per_task.values() if a >= 0.95)
    assert "mean" in result.table()


def test_rsi_eval_json_last_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(REPO / "rsi_state.json", tmp_path / "rsi_state.json")
    code = main(
        ["eval", "--state", str(tmp_path / "rsi_state.json"), "--backend", "python", "--json"]
    )
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert summary["passed"] == len(summary["per_task"]) >= 8
    assert summary["questions"] > 0 and summary["questions_per_s"] > 0
