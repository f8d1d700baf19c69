"""Shared test inputs: small states with awkward shapes, and inputs for every mechanism."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from codegen.state import AttentionMechanism, KernelChoice, RSIState, parse_state
from runtime.kernels.inputs import reference_call
from tests.conftest import SHIPPED_STATE

M = AttentionMechanism

#: Architectures the generated kernels are tested at: nothing a multiple of anything.
ARCHES: dict[str, dict[str, Any]] = {
    "odd": {
        "embedding_dim": 12,
        "heads": 3,
        "seq_len": 37,
        "window": 3,
        "global_tokens": 2,
        "block_size": 5,
        "num_experts": 3,
        "top_k": 2,
        "curvature": 0.7,
        "random_features": 7,
        "state_dim": 3,
        "diff_lambda": 0.8,
        "causal": False,
    },
    "causal": {
        "embedding_dim": 16,
        "heads": 2,
        "seq_len": 40,
        "window": 5,
        "global_tokens": 1,
        "block_size": 16,
        "num_experts": 4,
        "top_k": 1,
        "curvature": 2.0,
        "random_features": 20,
        "state_dim": 5,
        "diff_lambda": 0.3,
        "causal": True,
    },
}
#: Loop structure per test architecture (remainder loops everywhere for "odd").
CHOICES: dict[str, KernelChoice] = {
    "odd": KernelChoice(tile=3, unroll=3, width=2),
    "causal": KernelChoice(tile=1, unroll=2),
}
MASKS = ("none", "random", "all", "first")


def make_state(name: str) -> RSIState:
    """The shipped state with architecture ``name`` and its kernel choice everywhere."""
    data = json.loads(SHIPPED_STATE.read_text())
    data["architecture"].update(ARCHES[name])
    choice = CHOICES[name].model_dump(mode="json")
    data["kernels"] = {"tuned": {m.value: choice for m in M}, "fingerprint": ""}
    return parse_state(json.dumps(data).encode())


def make_case(
    mechanism: AttentionMechanism,
    state: RSIState,
    n: int,
    seed: int,
    scale: float = 1.0,
    mask_kind: str = "random",
) -> tuple[tuple[Any, ...], Callable[[], np.ndarray]]:
    """Kernel arguments for ``mechanism`` and a thunk computing the reference output."""
    mask = _mask(mask_kind, n, np.random.default_rng(seed + 1))
    return reference_call(mechanism, state.architecture, n, seed, scale=scale, mask=mask)


def _mask(kind: str, n: int, rng: np.random.Generator) -> np.ndarray | None:
    if kind == "none":
        return None
    if kind == "all":
        return np.zeros(n, dtype=np.uint8)
    if kind == "first":
        out = np.ones(n, dtype=np.uint8)
        out[0] = 0
        return out
    return (rng.random(n) > 0.3).astype(np.uint8)
