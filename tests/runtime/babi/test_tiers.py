"""The compiled and interpreted tiers of one state give identical encodings and answers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from codegen.state import RSIState
from runtime.babi.builds import BuiltModel, build_model
from runtime.babi.data import load_dir, split_stories
from runtime.babi.evaluate import compare_tiers, prepare_all
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
    assert compare_tiers(compiled_model.model, python_model.model, stories).agree


def test_tiers_agree_with_embedding_and_routing_on(
    routed_state: RSIState, babi_generated: Path
) -> None:
    """Every expert row, attention included, and the routing branches, in both tiers."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the compiled tier cannot be built")
    fast = build_model(routed_state, babi_generated, "cython").model
    slow = build_model(routed_state, babi_generated, "python").model
    for prepared in prepare_all(fast, generate_stories(seed=8, stories_per_task=3)):
        assert fast.answer_all(prepared) == slow.answer_all(prepared)
        for i in range(prepared.n_questions):
            n_fast = fast.evidence(prepared, i)
            rows_fast = prepared.scores.copy()
            assert slow.evidence(prepared, i) == n_fast
            assert np.array_equal(prepared.scores, rows_fast)
