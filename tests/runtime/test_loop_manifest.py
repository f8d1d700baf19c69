"""Run manifests and ``rsi report`` without a run (fast: nothing is built)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.cli import main
from runtime.rsi.manifest import (
    RunManifest,
    latest_manifest,
    load_manifest,
    package_versions,
    run_id,
    save_manifest,
)


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
