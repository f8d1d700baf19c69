"""Run manifests and ``rsi report`` without a run (fast: nothing is built)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from matplotlib.image import imread

from runtime.cli import main
from runtime.rsi.loop import _add_seconds
from runtime.rsi.manifest import (
    RunManifest,
    latest_manifest,
    load_manifest,
    package_versions,
    run_id,
    save_manifest,
)
from runtime.rsi.report import time_split


def test_manifest_round_trips_and_the_latest_run_is_found(tmp_path: Path) -> None:
    state = tmp_path / "rsi_state.json"
    config = {"seed": 3, "iterations": 2, "data": None}
    first = RunManifest(
        run_id=run_id(config),
        config=config,
        seed=3,
        data_fingerprint="generated:3",
        git_revision="abc",
        packages=package_versions(),
        started_at=1.0,
        decisions=({"iteration": 0, "verdict": "promote", "p_value": 1e-9},),
        tried=("f" * 64,),
    )
    second = RunManifest(
        **{**first.__dict__, "run_id": run_id({**config, "seed": 4}), "started_at": 2.0}
    )
    path = save_manifest(state, first)
    save_manifest(state, second)
    assert load_manifest(path) == first
    assert latest_manifest(state) == second
    assert not list(path.parent.glob("*.tmp"))


def test_run_id_depends_on_the_config_only() -> None:
    assert run_id({"a": 1, "b": 2}) == run_id({"b": 2, "a": 1})
    assert run_id({"a": 1}) != run_id({"a": 2})


def test_report_without_a_run_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "rsi_state.json"
    assert main(["report", "--state", str(state)]) == 2
    assert capsys.readouterr().err == (
        f"rsi: error: {state}: no loop run recorded; run `rsi loop` first\n"
    )


def test_time_split_counts_every_process_of_a_resumed_run() -> None:
    """A run killed in iteration 1 and resumed: the start build and the train evidence of
    both processes count, as do both iterations; the rest of the elapsed time is ``other``."""
    config = {"seed": 0}
    base = RunManifest(
        run_id=run_id(config),
        config=config,
        seed=0,
        data_fingerprint="generated:0",
        git_revision="abc",
        packages={},
        started_at=1.0,
    )
    first = _add_seconds(base, start=30.0)
    first = _add_seconds(first, evidence=12.0)
    iteration = {"seconds": {"screen": 5.0, "knobs": 4.0, "executor_build": 20.0}}
    resumed = _add_seconds(replace(first, iterations=(iteration,)), start=0.0)
    resumed = _add_seconds(resumed, evidence=0.5)  # the cached evidence, read again
    second = {"seconds": {"screen": 4.0, "promote_gate": 1.0, "promote_sandbox": 3.0}}
    resumed = replace(resumed, iterations=(iteration, second), elapsed_s=100.0)
    assert resumed.seconds == {"start": 30.0, "evidence": 12.5}
    assert time_split(resumed) == {
        "screen": 21.5,
        "tune": 4.0,
        "compile": 50.0,
        "evaluate": 3.0,
        "gate": 1.0,
        "other": 20.5,
    }


def _empty_run(state: Path) -> RunManifest:
    """A run stopped by its budget before its first iteration."""
    config = {"seed": 0, "budget_s": 1.0}
    manifest = RunManifest(
        run_id=run_id(config),
        config=config,
        seed=0,
        data_fingerprint="generated:0",
        git_revision="abc",
        packages={},
        started_at=1.0,
        status="finished",
        stop_reason="budget 1 s spent",
        elapsed_s=1.5,
    )
    save_manifest(state, manifest)
    return manifest


def test_report_of_a_run_without_iterations_says_none_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "rsi_state.json"
    _empty_run(state)
    out = tmp_path / "report"
    assert main(["report", "--state", str(state), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"report: {out / 'index.html'}\n"
    page = (out / "index.html").read_text()
    assert (
        "<p><strong>No iterations ran</strong>: the run stopped before its first "
        "(budget 1 s spent), after 1.5 s; seed 0; data generated:0</p>"
    ) in page
    for plot in ("accuracy.png", "decisions.png", "time.png"):
        assert imread(out / plot).shape[0] > 100


def test_report_out_naming_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "rsi_state.json"
    _empty_run(state)
    taken = tmp_path / "taken"
    taken.write_text("mine\n")
    assert main(["report", "--state", str(state), "--out", str(taken)]) == 2
    assert capsys.readouterr().err == (
        f"rsi: error: --out {taken}: a file, not a directory; give a directory for the report "
        "(or move the file aside)\n"
    )
    assert taken.read_text() == "mine\n"
