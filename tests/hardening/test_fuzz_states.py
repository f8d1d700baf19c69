"""Fuzzing the state file (``tools/fuzz_state.py``): a few hundred hypothesis cases, each a
valid state that renders to guarded code or a clean one-line StateError."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import load_tool

REPO = Path(__file__).resolve().parents[2]


fuzz = load_tool("fuzz_state")


@pytest.mark.slow
def test_fuzzed_states_have_only_the_two_allowed_outcomes(tmp_path: Path) -> None:
    stats = fuzz.run_fuzz(250, seed_value=5, full_every=10, build_every=25, work=tmp_path)
    assert stats.cases == 250
    assert stats.valid >= 25 and stats.rejected >= 100  # both outcomes are exercised
    assert stats.full_checked >= 1 and stats.built >= 1


def test_the_guard_catches_an_injected_call(tmp_path: Path) -> None:
    with pytest.raises(
        fuzz.FuzzError,
        match=r"^m: generated code calls 'rsi_canary': a state value became code$",
    ):
        fuzz._guard("m", "X = 1\nrsi_canary()\n")
    with pytest.raises(fuzz.FuzzError, match=r"^m: generated code imports 'os'$"):
        fuzz._guard("m", "import os\n")
    fuzz._guard("m", "X = 'rsi_canary()'\n")  # as a string it is inert


def test_a_valid_state_with_a_payload_in_a_string_field_is_not_flagged(tmp_path: Path) -> None:
    stats = fuzz.FuzzStats()
    data = (REPO / "rsi_state.json").read_bytes()
    fuzz.check_case(data, stats, full_every=1, build_every=0, work=tmp_path)
    assert (stats.valid, stats.full_checked) == (1, 1)
