"""Golden answers: the shipped, uniform and routed states answer exactly as they did, bit for bit.

``golden.json`` holds, per state, story set and tier, the SHA-256 of every question's
``choice<TAB>confidence.hex()`` in order, the question count and the first answers: both
tiers on the embedded generated stories, and the compiled tier on every story of the real
bAbI files when ``RSI_BABI_DIR`` is set (the tiers agree answer for answer: see
``test_tiers.py``; the interpreted tier would take minutes there). It was
written before the codegen redesign (issue 10); any change to generated code, the plan or the
runtime that moves one answer or one confidence bit fails here. The routed state's answers were
written by the code before routing rules became a table (stop 19). Regenerate deliberately only:

    RSI_BABI_DIR=../shared/data/babi-en-1k-train python tests/runtime/babi/test_golden.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from codegen.state import load_state
from codegen.toolchain import Backend
from runtime.babi.builds import build_model
from runtime.babi.data import Story, load_dir
from runtime.babi.evaluate import prepare_all
from runtime.babi.generate import generate_stories

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).with_name("data") / "golden.json"
STATES = {
    "shipped": REPO / "rsi_state.json",
    "uniform": REPO / "states" / "uniform.json",
    "routed": REPO / "states" / "routed.json",  # five routing rules: the rule table's paths
}
TIERS: tuple[Backend, ...] = ("python", "cython")
SAMPLES = 8


def _stories(story_set: str) -> list[Story]:
    if story_set == "generated":
        return generate_stories(seed=0, stories_per_task=20)
    real = os.environ.get("RSI_BABI_DIR")
    if not real:
        pytest.skip("RSI_BABI_DIR is unset: the golden answers on the real bAbI files need it")
    return load_dir(Path(real))


def _answers(state: str, tier: Backend, stories: Sequence[Story], generated: Path) -> list[str]:
    model = build_model(load_state(STATES[state]), generated, tier).model
    lines = []
    for prepared in prepare_all(model, stories):
        lines.extend(f"{c}\t{p.hex()}" for c, p in model.answer_all(prepared))
    return lines


def _summary(lines: list[str]) -> dict[str, object]:
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return {"questions": len(lines), "sha256": digest, "first": lines[:SAMPLES]}


CASES = [
    (state, story_set, tier)
    for state in STATES
    for story_set in ("generated", "real")
    for tier in TIERS
    if story_set == "generated" or tier == "cython"
]


def _cases() -> list[object]:
    return [
        pytest.param(state, story_set, tier, marks=[pytest.mark.slow] * (story_set == "real"))
        for state, story_set, tier in CASES
    ]


@pytest.mark.parametrize(("state", "story_set", "tier"), _cases())
def test_answers_match_the_golden(
    state: str, story_set: str, tier: Backend, babi_generated: Path
) -> None:
    if tier == "cython" and shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the compiled tier cannot be built")
    golden = json.loads(GOLDEN.read_text())[f"{state}/{story_set}/{tier}"]
    got = _summary(_answers(state, tier, _stories(story_set), babi_generated))
    assert got["first"] == golden["first"]
    assert got["questions"] == golden["questions"]
    assert got["sha256"] == golden["sha256"]


def _write_goldens(generated: Path) -> None:
    out: dict[str, object] = {}
    for state, story_set, tier in CASES:
        out[f"{state}/{story_set}/{tier}"] = _summary(
            _answers(state, tier, _stories(story_set), generated)
        )
        print(f"{state}/{story_set}/{tier}: {out[f'{state}/{story_set}/{tier}']}", flush=True)
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        _write_goldens(Path(tmp))
    sys.exit(0)
