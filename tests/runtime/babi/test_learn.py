"""Knowledge learned from training stories."""

from __future__ import annotations

from pathlib import Path

from codegen.state import RSIState
from runtime.babi.builds import build_model
from runtime.babi.data import parse_lines
from runtime.babi.learn import learn_associations, learn_vocabulary


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
