"""Build-knob proposals: kernel choices from the autotuner, architecture changes on approval.

The third kind of proposal (after numeric changes and routing rules, :mod:`runtime.rsi.propose`).
The autotuner (:func:`runtime.kernels.tune.tune_kernels`) times every kernel variant of the
incumbent's attention mechanism on synthetic inputs of the state's shapes (seeded; no story
of any split is read, so nothing held-out or hidden is looked at) and its measurements are
cached in the project's module cache, so a later iteration or run re-measures nothing. When
the fastest variant is not the incumbent's, the knob change is a candidate of kind ``kernel``:
it changes no answer (the screener's accuracy is the incumbent's), touches the hot path, so
the gate times both builds and promotes it only when it is significantly faster.

A change of ``architecture.attention`` (another mechanism) changes what the model computes;
it is searched and proposed (kind ``architecture``) only when an ``--approve`` pattern names
``architecture.attention``; otherwise it is listed as refused, with the approval that would
allow it, and nothing is measured for it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from codegen.policy import approves
from codegen.state import AttentionMechanism, KernelChoice, KernelParams, RSIState
from codegen.toolchain import CompileSettings
from runtime.babi.tune import Screened
from runtime.kernels.tune import UNTUNED, MechanismReport, TuneSettings, tune_kernels
from runtime.rsi.propose import Candidate, Change

__all__ = [
    "ARCHITECTURE_PATH",
    "KnobSettings",
    "KnobProposals",
    "KnobJob",
    "knob_proposals",
    "run_knob_job",
]

logger = logging.getLogger(__name__)

#: The state path an architecture proposal changes (and ``--approve`` must name).
ARCHITECTURE_PATH = "architecture.attention"
_KNOBS = ("tile", "unroll", "width")


@dataclass(frozen=True)
class KnobSettings:
    """Where the autotuner caches its measurements, how it compiles, what is approved."""

    cache_dir: Path
    compile: CompileSettings = field(default_factory=CompileSettings)
    approve: tuple[str, ...] = ()
    repeats: int = 25
    #: Stop the autotuner between variant compiles (:attr:`TuneSettings.time_limit_s`);
    #: what it compiled and measured is cached, so the next call goes on from there.
    time_limit_s: float | None = None


@dataclass(frozen=True)
class KnobProposals:
    """Knob candidates (best first), refused architecture changes, fresh measurements."""

    candidates: tuple[Candidate, ...]
    refused: tuple[str, ...]
    measured: int  # kernel variants timed now (the rest came from the cache)
    complete: bool = True  # False: the tuning stopped at its time limit (no candidates)


@dataclass(frozen=True)
class KnobJob:
    """:func:`knob_proposals`' arguments in one picklable value (an executor's job), and
    when it must stop (``time.time()``; it is queued and started on a worker first)."""

    incumbent: RSIState
    base: Screened
    settings: KnobSettings
    stop_at_unix_s: float | None = None


def run_knob_job(job: KnobJob) -> KnobProposals:
    """:func:`knob_proposals` of ``job`` (what an executor worker runs)."""
    settings = job.settings
    if job.stop_at_unix_s is not None:
        settings = replace(settings, time_limit_s=max(0.0, job.stop_at_unix_s - time.time()))
    return knob_proposals(job.incumbent, job.base, settings)


def knob_proposals(incumbent: RSIState, base: Screened, settings: KnobSettings) -> KnobProposals:
    """Propose the autotuner's kernel choice and, when approved, a faster mechanism."""
    current = incumbent.architecture.attention
    approved = any(approves(p, ARCHITECTURE_PATH) for p in settings.approve)
    mechanisms = tuple(m for m in AttentionMechanism if m not in UNTUNED)
    if not approved:
        mechanisms = tuple(m for m in mechanisms if m == current)
    tuned = tune_kernels(
        incumbent,
        TuneSettings(
            cache_dir=settings.cache_dir,
            compile=settings.compile,
            mechanisms=mechanisms,
            repeats=settings.repeats,
            time_limit_s=settings.time_limit_s,
        ),
    )
    if not tuned.complete:
        logger.info("knobs: tuning stopped at its time limit; %d variants measured", tuned.measured)
        return KnobProposals((), (), tuned.measured, complete=False)
    reports = {r.mechanism: r for r in tuned.mechanisms}
    candidates: list[Candidate] = []
    own = reports.get(current)
    if own is not None:
        kernel = _kernel_candidate(incumbent, base, own, tuned.fingerprint)
        if kernel is not None:
            candidates.append(kernel)
    refused: tuple[str, ...] = ()
    if approved:
        moved = _architecture_candidate(incumbent, base, reports, tuned.fingerprint)
        if moved is not None:
            candidates.append(moved)
    else:
        refused = (
            f"{ARCHITECTURE_PATH}: other mechanisms than {current.value} are not searched; "
            f"approve with --approve {ARCHITECTURE_PATH}",
        )
    logger.info("knobs: %d candidates, %d variants measured", len(candidates), tuned.measured)
    return KnobProposals(tuple(candidates), refused, tuned.measured)


def _kernel_candidate(
    incumbent: RSIState, base: Screened, report: MechanismReport, fingerprint: str
) -> Candidate | None:
    mechanism = report.mechanism
    old = incumbent.kernels.tuned.get(mechanism, KernelChoice())
    new = report.winner
    if new is None or new == old:
        return None
    why = f"autotuner: {_speed(report, old, new)}"
    changes = tuple(
        Change("kernel", f"kernels.tuned.{mechanism.value}.{knob}", old_v, new_v, why)
        for knob in _KNOBS
        if (old_v := float(getattr(old, knob))) != (new_v := float(getattr(new, knob)))
    )
    state = _with_kernel(incumbent, mechanism, new, fingerprint)
    return Candidate("kernel", state, changes, base.fitness, base.per_task)


def _architecture_candidate(
    incumbent: RSIState,
    base: Screened,
    reports: dict[AttentionMechanism, MechanismReport],
    fingerprint: str,
) -> Candidate | None:
    current = incumbent.architecture.attention
    fastest = {m: _median(r, r.winner) for m, r in reports.items() if r.winner is not None}
    if not fastest:
        return None
    best = min(fastest, key=lambda m: (fastest[m], m.value))
    if best == current or fastest[best] >= fastest.get(current, float("inf")):
        return None
    winner = reports[best].winner
    assert winner is not None
    state = _with_kernel(incumbent, best, winner, fingerprint)
    architecture = state.architecture.model_copy(update={"attention": best})
    state = state.model_copy(update={"architecture": architecture})
    why = (
        f"autotuner: {best.value} {fastest[best]:.1f} us vs {current.value} "
        f"{fastest.get(current, float('inf')):.1f} us (approved)"
    )
    change = Change("architecture", ARCHITECTURE_PATH, current.value, best.value, why)
    return Candidate("architecture", state, (change,), base.fitness, base.per_task)


def _with_kernel(
    state: RSIState, mechanism: AttentionMechanism, choice: KernelChoice, fingerprint: str
) -> RSIState:
    tuned = {**state.kernels.tuned, mechanism: choice}
    kernels = KernelParams(tuned=tuned, fingerprint=fingerprint)
    return state.model_copy(update={"kernels": kernels})


def _median(report: MechanismReport, choice: KernelChoice | None) -> float:
    return next((m.median_us for m in report.measurements if m.config == choice), float("inf"))


def _speed(report: MechanismReport, old: KernelChoice, new: KernelChoice) -> str:
    before, after = _median(report, old), _median(report, new)
    name = report.mechanism.value
    if before == float("inf"):
        return f"{name} median {after:.1f} us (the current variant was not measured)"
    return f"{name} median {before:.1f} -> {after:.1f} us ({after / before - 1:+.0%})"
