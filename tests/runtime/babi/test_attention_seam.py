"""The embedding expert's attention: one kernel call per story equals causal attention."""

from __future__ import annotations

import numpy as np

from runtime.babi.builds import BuiltModel
from runtime.babi.model import BabiModel, reference_sdpa

STORY = [
    "Mary went to the garden.",
    "John moved to the office.",
    "Mary took the apple there.",
    "Sandra went back to the kitchen.",
    "Mary journeyed to the hallway.",
]
QUESTIONS = [("Where is Mary?", 2), ("Where is John?", 4), ("Where is the apple?", 5)]


def _model(python_model: BuiltModel, **kwargs: object) -> BabiModel:
    return BabiModel(
        python_model.build.modules,
        plan=python_model.model.plan,
        full_evidence=True,
        **kwargs,  # type: ignore[arg-type]
    )


def test_renormalized_rows_equal_causal_softmax(python_model: BuiltModel) -> None:
    model = _model(python_model)
    prepared = model.prepare(STORY, QUESTIONS)
    sentences = [model._text_vector(t) for t in prepared.encoded.sentence_tokens]
    for i, (_, position) in enumerate(QUESTIONS):
        keys = np.stack(sentences[:position])
        logits = keys @ prepared.qvecs[i].astype(np.float64) / np.sqrt(model.dim)
        expected = np.exp(logits - logits.max())
        expected /= expected.sum()
        row = prepared.attn[i, :position].astype(np.float64)
        np.testing.assert_allclose(row / row.sum(), expected, rtol=1e-4, atol=1e-6)


def test_fixed_row_and_causal_kernels_give_the_same_weights(python_model: BuiltModel) -> None:
    plain = _model(python_model)
    base = plain.prepare(STORY, QUESTIONS)

    def fixed(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if q.shape[0] != plain.n_keys:
            raise ValueError("exactly N rows")
        return reference_sdpa(q, k, v, mask)

    fixed_model = _model(python_model, attend=fixed)
    assert fixed_model.fixed_rows
    causal_model = _model(python_model)
    causal_model.causal = True

    for other in (fixed_model.prepare(STORY, QUESTIONS), causal_model.prepare(STORY, QUESTIONS)):
        for i, (_, position) in enumerate(QUESTIONS):
            a = base.attn[i, :position] / base.attn[i, :position].sum()
            b = other.attn[i, :position] / other.attn[i, :position].sum()
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
