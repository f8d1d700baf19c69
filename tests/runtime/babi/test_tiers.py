"""The compiled and interpreted tiers of one state give identical encodings and answers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from runtime.babi.builds import BuiltModel
from runtime.babi.data import load_dir, split_stories
from runtime.babi.evaluate import prepare_all
from runtime.babi.generate import generate_stories


def _sample() -> list:  # type: ignore[type-arg]
    stories = generate_stories(seed=3, stories_per_task=5)
    real = os.environ.get("RSI_BABI_DIR")
    if real:
        stories += split_stories(load_dir(Path(real)), "heldout")[::25]
    return stories


def test_tiers_agree_on_a_sample(python_model: BuiltModel, compiled_model: BuiltModel) -> None:
    assert compiled_model.build.tier == "cython"
    stories = _sample()
    fast = prepare_all(compiled_model.model, stories)
    slow = prepare_all(python_model.model, stories)
    n = 0
    for a, b in zip(fast, slow, strict=True):
        assert a.encoded.words == b.encoded.words
        assert np.array_equal(a.encoded.facts, b.encoded.facts)
        assert np.array_equal(a.encoded.queries, b.encoded.queries)
        for i in range(a.n_questions):
            # Same encoded input through both tiers' experts and scoring.
            assert compiled_model.model.choose(a, i) == python_model.model.choose(a, i)
            assert compiled_model.model.answer_prepared(a, i) == python_model.model.answer_prepared(
                b, i
            )
            n += 1
        # The per-story typed loop gives the same answers as the per-question path.
        batch = compiled_model.model.answer_all(a)
        assert batch == python_model.model.answer_all(a)
        assert [c for c, _ in batch] == [
            python_model.model.answer_prepared(a, i)[0] for i in range(a.n_questions)
        ]
    assert n > 50
