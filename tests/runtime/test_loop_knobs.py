"""Build-knob proposals: the autotuner's kernel choice (policy-safe, no approval needed) and
architecture changes only on approval. Pure-Python tier and tiny shapes (nothing compiles);
the tuning is still rendered and checked per variant (~45 s), so one module-wide cache."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from codegen.policy import PolicyError, check_policy
from codegen.state import AttentionMechanism, KernelChoice, KernelParams, RSIState, load_state
from codegen.toolchain import CompileSettings
from runtime.babi.tune import Screened
from runtime.kernels.tune import CANDIDATES, Measurement, MechanismReport
from runtime.rsi.executor import LocalExecutor
from runtime.rsi.knobs import (
    ARCHITECTURE_PATH,
    KnobJob,
    KnobProposals,
    KnobSettings,
    _architecture_candidate,
    knob_proposals,
    run_knob_job,
)

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _tiny(choice: KernelChoice) -> RSIState:
    """The uniform state at 16 rows of width 8, its sdpa kernel at ``choice``."""
    state = load_state(REPO / "states" / "uniform.json")
    architecture = state.architecture.model_copy(
        update={"seq_len": 16, "embedding_dim": 8, "num_experts": 4, "heads": 1}
    )
    kernels = KernelParams(tuned={AttentionMechanism.sdpa: choice})
    return state.model_copy(update={"architecture": architecture, "kernels": kernels})


def _base() -> Screened:
    return Screened(
        per_task={1: 0.75},
        correct=np.array([True, True, False, True]),
        choices=np.zeros(4, dtype=np.int64),
    )


ODD = KernelChoice(tile=3, unroll=1)  # not an autotuner candidate: the winner differs


def _settings(cache: Path, approve: tuple[str, ...] = ()) -> KnobSettings:
    return KnobSettings(
        cache_dir=cache,
        compile=CompileSettings(backend="python"),
        approve=approve,
        repeats=3,
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("knobs")


@pytest.fixture(scope="module")
def first(cache: Path) -> KnobProposals:
    """The sdpa kernel tuned from an odd choice (every variant measured now)."""
    return knob_proposals(_tiny(ODD), _base(), _settings(cache))


def test_the_autotuners_kernel_choice_is_a_candidate_the_policy_allows(
    first: KnobProposals, cache: Path
) -> None:
    assert ODD not in CANDIDATES
    incumbent = _tiny(ODD)
    [kernel] = [c for c in first.candidates if c.kinds == ("kernel",)]
    winner = kernel.state.kernels.tuned[AttentionMechanism.sdpa]
    assert winner in CANDIDATES
    assert kernel.state.architecture == incumbent.architecture
    assert kernel.fitness == _base().fitness  # a kernel choice changes no answer
    assert {c.path for c in kernel.changes} <= {
        f"kernels.tuned.sdpa.{k}" for k in ("tile", "unroll", "width")
    }
    assert all(c.why.startswith("autotuner: sdpa median") for c in kernel.changes)
    # tile 3 -> 4+ is a step beyond max_relative_step 0.5: kernel knobs are not magnitudes.
    check_policy(incumbent, kernel.state)
    assert first.measured > 0
    again = knob_proposals(incumbent, _base(), _settings(cache))
    assert again.measured == 0 and again.candidates == first.candidates  # all from the cache


def test_no_kernel_candidate_when_the_incumbent_already_has_the_winner(
    first: KnobProposals, cache: Path
) -> None:
    winner = first.candidates[0].state.kernels.tuned[AttentionMechanism.sdpa]
    again = knob_proposals(_tiny(winner), _base(), _settings(cache))
    assert [c for c in again.candidates if c.kinds == ("kernel",)] == []


def test_architecture_changes_are_refused_unless_approved(first: KnobProposals) -> None:
    assert first.refused == (
        "architecture.attention: other mechanisms than sdpa are not searched; "
        "approve with --approve architecture.attention",
    )
    assert all(c.state.architecture == _tiny(ODD).architecture for c in first.candidates)


def _report(mechanism: AttentionMechanism, median_us: float) -> MechanismReport:
    choice = KernelChoice(tile=8, unroll=2)
    measured = Measurement(choice, "k", (median_us,), median_us, False)
    return MechanismReport(mechanism, (measured,), choice)


def test_an_approved_architecture_change_is_the_fastest_mechanism_and_needs_approval() -> None:
    incumbent = _tiny(KernelChoice())
    reports = {
        AttentionMechanism.sdpa: _report(AttentionMechanism.sdpa, 90.0),
        AttentionMechanism.linear: _report(AttentionMechanism.linear, 40.0),
        AttentionMechanism.flash: _report(AttentionMechanism.flash, 60.0),
    }
    moved = _architecture_candidate(incumbent, _base(), reports, "ab" * 32)
    assert moved is not None and moved.kinds == ("architecture",)
    assert moved.state.architecture.attention == AttentionMechanism.linear
    assert moved.changes[0].describe().startswith("architecture.attention: sdpa -> linear")
    with pytest.raises(PolicyError, match=r"approve with --approve architecture\.attention"):
        check_policy(incumbent, moved.state)
    check_policy(incumbent, moved.state, approve=(ARCHITECTURE_PATH,))
    slower = {**reports, AttentionMechanism.linear: _report(AttentionMechanism.linear, 95.0)}
    del slower[AttentionMechanism.flash]
    assert _architecture_candidate(incumbent, _base(), slower, "ab" * 32) is None


def test_tuning_stopped_at_its_time_limit_keeps_the_pool_worker(tmp_path: Path) -> None:
    """The autotuner stops itself between variant compiles: the executor's kill (and a pool
    respawn, ~20 s under load) is not needed; what it measured is cached."""
    executor = LocalExecutor(workers=1)
    try:
        worker = executor.call(os.readlink, "/proc/self", timeout_s=120)
        job = KnobJob(_tiny(ODD), _base(), _settings(tmp_path), stop_at_unix_s=time.time())
        late = executor.call(run_knob_job, job, timeout_s=120)  # its time is up: nothing done
        assert late == KnobProposals((), (), 0, complete=False)
        job = replace(job, stop_at_unix_s=time.time() + 2)
        stopped = executor.call(run_knob_job, job, timeout_s=120)
        assert stopped is not None and not stopped.complete
        assert stopped.candidates == () and 1 <= stopped.measured < len(CANDIDATES)
        assert executor.call(os.readlink, "/proc/self", timeout_s=120) == worker
    finally:
        executor.close()
