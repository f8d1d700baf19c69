"""``rsi loop`` refuses settings out of range in one line, before anything runs; a budget
stop says what it is short of, and where that cost comes from."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from codegen.state import parse_state
from runtime.cli import main
from runtime.rsi.loop import (
    LoopError,
    LoopSettings,
    _Budget,
    _builds_stopped,
    _job_seconds,
    _tuning_stopped,
)
from runtime.rsi.manifest import RunManifest
from runtime.rsi.propose import Candidate, Change

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"budget_s": -5.0}, "--budget-s -5.0: give a positive number of seconds"),
        ({"budget_s": math.nan}, "--budget-s nan: give a positive number of seconds"),
        ({"iterations": -1}, "--iterations -1: give 1 or more"),
        ({"workers": 0}, "--workers 0: give 1 to 64 parallel candidate jobs"),
        ({"address": "auto"}, "--address names a Ray cluster: use it with --executor ray"),
    ],
)
def test_out_of_range_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(LoopError) as caught:
        LoopSettings(**settings)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_cli_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loop", "--workers", "-3", "--state", "nowhere.json"]) == 2
    assert capsys.readouterr().err == (
        "rsi: error: --workers -3: give 1 to 64 parallel candidate jobs\n"
    )


def test_backend_follows_rsi_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.cli import build_parser, settings_from

    monkeypatch.setenv("RSI_BACKEND", "python")
    args = build_parser().parse_args(["loop"])
    assert settings_from(args).backend == "python"


def test_executor_choices_are_the_executors() -> None:
    from runtime.rsi import cli, executor

    assert cli.EXECUTORS == executor.EXECUTORS


def _budget(left_s: float, **costs: Any) -> _Budget:
    """A budget ``left_s`` from its deadline (plus a fraction of a second, so the whole
    seconds left print as ``left_s``) before any candidate job of the run."""
    return _Budget(
        time.perf_counter() + left_s + 0.4,
        **{
            "job_s": 78.0,
            "jobs_seen": 0,
            "estimate": "building the start state (12 s) and collecting its train evidence "
            "(66 s) in this process",
            "gate_s": 0.0,
            **costs,
        },
    )


def test_a_budget_stop_before_any_build_says_the_cost_is_an_estimate_and_whence() -> None:
    assert _budget(40.0).no_room_for_a_job(100.0) == (
        "budget 100 s: 40 s left, too little for a candidate build and evaluation "
        "(~78 s: none built yet in this run; estimated from building the start state (12 s) "
        "and collecting its train evidence (66 s) in this process)"
    )


def test_jobs_seen_replace_the_estimate_even_when_shorter() -> None:
    budget = _budget(40.0).seen(job_s=[21.0, 19.5])
    assert (budget.job_s, budget.jobs_seen) == (21.0, 2)
    assert budget.seen(job_s=[]).job_s == 21.0  # no job ran (none started): no change
    budget = budget.seen(job_s=[50.0])
    assert budget.no_room_for_a_job(100.0) == (
        "budget 100 s: 40 s left, too little for a candidate build and evaluation "
        "(~50 s: the longest of this run's 3 candidate jobs)"
    )
    assert _budget(3.0, gate_s=9.0).no_room_for_a_gate(100.0) == (
        "budget 100 s: 3 s left, too little for a gate decision "
        "(~9 s: the longest gate decision of this run)"
    )


def test_time_limit_warnings_say_which_job_and_candidate_in_user_terms() -> None:
    """Not the executor's function name ("time limit: run_knob_job stopped")."""
    assert _tuning_stopped(2, 7, 41.3, 300.0) == (
        "iteration 2: kernel autotuning of state version 7 stopped after 41 s, its share of "
        "the 300 s budget; what it measured is cached, so the next iteration or run goes on "
        "from there"
    )
    state = parse_state((REPO / "states" / "uniform.json").read_bytes(), "uniform")
    rule = Change("routing", "rule:afraid", None, 0.5, "mined")
    step = Change("numeric", "scoring.rag", 1.0, 0.75, "climb")
    late = [Candidate("routing", state, (rule, step), (3, 0.9), {})]
    assert _builds_stopped(1, late, 120.0) == (
        "iteration 1: 1 candidate build(s) stopped at the end of the 120 s budget, neither "
        "gated nor marked tried: routing (rule:afraid, scoring.rag)"
    )


def test_a_decision_settled_on_resume_is_no_timed_job() -> None:
    """Its seconds are unknown ({}): counted as a 0 s job it made the budget say "the
    longest of this run's 1 candidate jobs (~0 s)"."""
    timed = {"seconds": {"executor_build": 30.0, "executor_evaluate": 12.5, "gate": 3.0}}
    manifest = RunManifest(
        run_id="r",
        config={},
        seed=0,
        data_fingerprint="generated:0",
        git_revision="abc",
        packages={},
        started_at=1.0,
        decisions=({"seconds": {}}, timed),
    )
    assert _job_seconds(manifest) == [42.5]
    assert _job_seconds(replace(manifest, decisions=({"seconds": {}},))) == []
