"""Verb classes learned from supporting facts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from codegen.state import Lexicon, RSIState
from runtime.babi.builds import build_model
from runtime.babi.data import load_dir, parse_lines, split_stories
from runtime.babi.evaluate import evaluate
from runtime.babi.lexicon import learn_verb_classes, with_learned_verbs

SEED = {"move": ("go",), "take": ("get",), "drop": ("drop",), "give": ("give",)}

LINES = [
    "1 Mary strolled to the garden.",
    "2 Where is Mary?\tgarden\t1",
    "3 Mary and John strolled to the office.",
    "4 Where is John?\toffice\t3",
    "5 John snatched the milk there.",
    "6 What is John carrying?\tmilk\t5",
    "7 John tossed the milk.",
    "8 What is John carrying?\tnothing\t5 7",
    "9 John lent the apple to Mary.",
    "10 What did John give to Mary?\tapple\t9",
]


def test_votes_follow_the_supporting_sentence() -> None:
    learned = learn_verb_classes(parse_lines(LINES, 1, "qa1_x.txt"), min_count=1)
    assert learned == {
        "move": ("strolled",),
        "take": ("snatched",),
        "drop": ("tossed",),
        "give": ("lent",),
    }


def test_threshold_and_merge_keep_the_seed_first() -> None:
    assert learn_verb_classes(parse_lines(LINES, 1, "qa1_x.txt"), min_count=3)["move"] == ()
    seed = Lexicon().model_copy(update=SEED)
    merged = with_learned_verbs(seed, {"move": ("strolled", "go")})
    assert merged.move == ("go", "strolled")
    assert merged.take == ("get",)


def test_seed_lexicon_plus_learned_verbs_matches_the_shipped_model(
    tuned_state: RSIState, babi_generated: Path
) -> None:
    value = os.environ.get("RSI_BABI_DIR")
    if not value:
        pytest.skip("RSI_BABI_DIR is not set: learning verbs needs the real training split")
    stories = load_dir(Path(value))
    learned = learn_verb_classes(split_stories(stories, "train"))
    seed = tuned_state.lexicon.model_copy(update=SEED)
    state = tuned_state.model_copy(update={"lexicon": with_learned_verbs(seed, learned)})
    heldout = split_stories(stories, "heldout")[::3]
    relearned = evaluate(build_model(state, babi_generated, "python").model, heldout)
    shipped = evaluate(build_model(tuned_state, babi_generated, "python").model, heldout)
    assert relearned.per_task == shipped.per_task
    assert relearned.passed == 20
