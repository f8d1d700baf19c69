"""The autotuner: deterministic picks, cached measurements, failures that never abort."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from codegen.errors import CompileError
from codegen.state import AttentionMechanism, KernelChoice, load_state
from codegen.toolchain import CompileSettings
from runtime.cli import main
from runtime.kernels import tune
from runtime.kernels.tune import TuneSettings, tune_kernels
from tests.runtime.kernels.cases import make_state

M = AttentionMechanism
A = KernelChoice(tile=1, unroll=1)
B = KernelChoice(tile=2, unroll=3)
C = KernelChoice(tile=3, unroll=2)


def _settings(tmp_path: Path, *candidates: KernelChoice) -> TuneSettings:
    return TuneSettings(
        cache_dir=tmp_path,
        compile=CompileSettings(backend="python"),
        mechanisms=(M.sdpa,),
        candidates=candidates,
        rows=3,
        repeats=3,
        warmup=1,
    )


def _steady_clock() -> Callable[[], float]:
    """Every timed call lasts exactly one tick: all candidates tie."""
    return itertools.count().__next__  # type: ignore[return-value]


def test_exact_tie_goes_to_the_first_candidate(tmp_path: Path) -> None:
    state = make_state("odd")
    for order in ((B, A, C), (C, B, A)):
        report = tune_kernels(state, _settings(tmp_path / str(order[0]), *order), _steady_clock())
        assert report.mechanisms[0].winner == order[0]
        assert report.state.kernels.tuned[M.sdpa] == order[0]


def test_fastest_median_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cost = {A: 5.0, B: 1.0, C: 3.0}
    now = [0.0]
    real = tune.kernel_module

    def charged(st: Any, mech: M, settings: Any, cache: Path) -> Any:
        module = real(st, mech, settings, cache)
        config = st.kernels.tuned[mech]

        def kernel(*args: Any) -> Any:
            now[0] += cost[config]
            return module.kernel(*args)

        return SimpleNamespace(kernel=kernel)

    monkeypatch.setattr(tune, "kernel_module", charged)
    report = tune_kernels(make_state("odd"), _settings(tmp_path, A, B, C), lambda: now[0])
    medians = [m.median_us for m in report.mechanisms[0].measurements]
    assert medians == [5e6, 1e6, 3e6]
    assert report.mechanisms[0].winner == B


def test_reuses_cache_and_measures_only_new_candidates(tmp_path: Path) -> None:
    state = make_state("odd")
    first = tune_kernels(state, _settings(tmp_path, A, B), _steady_clock())
    assert first.measured == 2
    again = tune_kernels(state, _settings(tmp_path, A, B), _steady_clock())
    assert again.measured == 0
    assert [m.samples_us for m in again.mechanisms[0].measurements] == [
        m.samples_us for m in first.mechanisms[0].measurements
    ]
    grown = tune_kernels(state, _settings(tmp_path, A, B, C), _steady_clock())
    assert grown.measured == 1
    assert [m.cached for m in grown.mechanisms[0].measurements] == [True, True, False]


def test_key_changes_with_the_architecture(tmp_path: Path) -> None:
    tune_kernels(make_state("odd"), _settings(tmp_path, A), _steady_clock())
    other = tune_kernels(make_state("causal"), _settings(tmp_path, A), _steady_clock())
    assert other.measured == 1


def test_failing_candidate_scores_inf_and_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tune.kernel_module

    def flaky(st: Any, mech: M, settings: Any, cache: Path) -> Any:
        if st.kernels.tuned[mech] == A:
            raise CompileError("gcc: internal compiler error (simulated)")
        return real(st, mech, settings, cache)

    monkeypatch.setattr(tune, "kernel_module", flaky)
    report = tune_kernels(make_state("odd"), _settings(tmp_path, A, B), _steady_clock())
    first, _ = report.mechanisms[0].measurements
    assert first.median_us == float("inf") and "simulated" in first.error
    assert report.mechanisms[0].winner == B
    assert report.failures == [(M.sdpa, A, first.error)]
    assert report.as_dict()["mechanisms"]["sdpa"]["candidates"][0]["median_us"] is None


def test_all_failing_keeps_the_old_choice(tmp_path: Path) -> None:
    state = make_state("odd")
    settings = TuneSettings(
        cache_dir=tmp_path,
        compile=CompileSettings(backend="cython", cc="no-such-cc"),
        mechanisms=(M.sdpa,),
        candidates=(B,),
        rows=3,
        repeats=1,
    )
    report = tune_kernels(state, settings)
    assert report.mechanisms[0].winner is None
    assert report.state.kernels.tuned[M.sdpa] == state.kernels.tuned[M.sdpa]
    assert "no-such-cc" in report.failures[0][2]


def test_winner_and_fingerprint_written_version_bumped(tmp_path: Path) -> None:
    state = make_state("odd")
    report = tune_kernels(state, _settings(tmp_path, B), _steady_clock())
    assert report.changed
    assert report.state.version == state.version + 1
    assert len(report.state.kernels.fingerprint) == 64
    again = tune_kernels(report.state, _settings(tmp_path, B), _steady_clock())
    assert not again.changed and again.state.version == report.state.version


def test_cli_tunes_and_saves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rsi_state.json"
    path.write_text(make_state("odd").model_dump_json(indent=2))
    args = ["--backend", "python", "--mechanism", "sdpa", "--rows", "3", "--repeats", "2"]
    code = main(["tune", "kernels", "--state", str(path), *args, "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    winner = out["mechanisms"]["sdpa"]["winner"]
    saved = load_state(path)
    assert saved.kernels.tuned[M.sdpa].model_dump(mode="json") == winner
    assert saved.kernels.fingerprint == out["fingerprint"]


def test_configs_rendering_the_same_source_are_measured_once(tmp_path: Path) -> None:
    # width only shapes the SDPA module: for multi-head, B and B-with-width-2 are one kernel.
    state = make_state("odd")
    wide = B.model_copy(update={"width": 2})
    settings = _settings(tmp_path, B, wide)
    settings = TuneSettings(**{**settings.__dict__, "mechanisms": (M.multihead,)})
    report = tune_kernels(state, settings, _steady_clock())
    first, twin = report.mechanisms[0].measurements
    assert report.measured == 1
    assert twin.cached and twin.key == first.key and twin.config == wide
