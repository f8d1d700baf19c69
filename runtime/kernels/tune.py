"""Autotuning of the attention kernels (``rsi tune kernels``), modelled on Triton's autotuner.

A *config* is a :class:`KernelChoice` value object. For each mechanism, every candidate
config is rendered into its module, compiled, checked against the NumPy reference and timed
on the state's shapes; the fastest median wins, ties going to the earlier candidate (the
candidate order is fixed). Each measurement is cached under a key that hashes everything
that can change its answer: the rendered source (shapes, knobs), the toolchain and flags, the
machine and the measurement protocol. So an unchanged setup re-measures nothing, and adding a
candidate measures only that one. A candidate that fails to compile, to run or to match the
reference scores ``inf`` and is reported; it never aborts the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codegen.errors import RSIError
from codegen.fsutil import atomic_write
from codegen.state import AttentionMechanism, KernelChoice, KernelParams, RSIState
from codegen.toolchain import CompileSettings, content_key, cpu_features, toolchain_fingerprint
from runtime.kernels.build import kernel_module, module_source
from runtime.kernels.inputs import kernel_inputs
from runtime.kernels.reference import max_rel_err

__all__ = [
    "CANDIDATES",
    "PROTOCOL",
    "TuneSettings",
    "Measurement",
    "MechanismReport",
    "TuneReport",
    "machine_fingerprint",
    "tune_kernels",
]

logger = logging.getLogger(__name__)

#: Candidate configs in tie order (an earlier one wins an exact tie).
#: A config whose knobs a mechanism ignores renders the same source as an earlier one and
#: is measured once (same key).
CANDIDATES: tuple[KernelChoice, ...] = (
    KernelChoice(tile=4, unroll=4),
    KernelChoice(tile=4, unroll=2),
    KernelChoice(tile=4, unroll=2, width=2),
    KernelChoice(tile=6, unroll=2, width=2),
    KernelChoice(tile=8, unroll=2),
    KernelChoice(tile=8, unroll=4),
    KernelChoice(tile=2, unroll=4),
    # Taller tiles: fewer passes over the keys and values per call (sdpa at N=100: ~6%).
    KernelChoice(tile=10, unroll=4),
    KernelChoice(tile=12, unroll=4),
)
#: Version of the measurement procedure; part of every cache key.
PROTOCOL = 1
#: Mechanisms whose code does not depend on a :class:`KernelChoice` (nothing to tune).
UNTUNED = frozenset({AttentionMechanism.mamba})
TOLERANCE = 1e-4


@dataclass(frozen=True)
class TuneSettings:
    """What to tune and how to measure it."""

    cache_dir: Path
    compile: CompileSettings = field(default_factory=CompileSettings)
    mechanisms: tuple[AttentionMechanism, ...] = tuple(AttentionMechanism)
    candidates: tuple[KernelChoice, ...] = CANDIDATES
    rows: int | None = None  # sequence length measured; default: architecture.seq_len
    repeats: int = 25
    warmup: int = 3
    seed: int = 0
    #: Stop compiling variants when the next one (as long as the longest so far) would end
    #: past this many seconds; what was compiled is measured and cached, and the report is
    #: incomplete (no winners). None: tune everything.
    time_limit_s: float | None = None


@dataclass(frozen=True)
class Measurement:
    """One candidate of one mechanism: raw samples (microseconds) and its score."""

    config: KernelChoice
    key: str
    samples_us: tuple[float, ...]
    median_us: float  # inf when the candidate failed
    cached: bool
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``inf`` as ``None``)."""
        return {
            "config": self.config.model_dump(mode="json"),
            "key": self.key,
            "samples_us": list(self.samples_us),
            "median_us": None if np.isinf(self.median_us) else self.median_us,
            "cached": self.cached,
            "error": self.error,
        }


@dataclass(frozen=True)
class MechanismReport:
    """Every candidate of one mechanism measured and the winner (None when all failed, or
    when the tuning stopped at its time limit before measuring them all)."""

    mechanism: AttentionMechanism
    measurements: tuple[Measurement, ...]
    winner: KernelChoice | None


@dataclass(frozen=True)
class TuneReport:
    """The tuned state (version bumped when anything changed) and what was measured."""

    state: RSIState
    changed: bool
    fingerprint: str
    mechanisms: tuple[MechanismReport, ...]
    complete: bool = True  # False: stopped at ``time_limit_s``; run again to go on

    @property
    def measured(self) -> int:
        """Measurements taken in this run (not served from the cache)."""
        return sum(not m.cached for r in self.mechanisms for m in r.measurements)

    @property
    def failures(self) -> list[tuple[AttentionMechanism, KernelChoice, str]]:
        """Candidates that scored inf, with their error."""
        return [
            (r.mechanism, m.config, m.error)
            for r in self.mechanisms
            for m in r.measurements
            if m.error
        ]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "changed": self.changed,
            "fingerprint": self.fingerprint,
            "state_version": self.state.version,
            "measured": self.measured,
            "mechanisms": {
                r.mechanism.value: {
                    "winner": None if r.winner is None else r.winner.model_dump(mode="json"),
                    "candidates": [m.as_dict() for m in r.measurements],
                }
                for r in self.mechanisms
            },
        }


def machine_fingerprint() -> str:
    """sha256 of what makes timings of this machine comparable: CPU model, flags, count."""
    model = flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")) and not flags:
                    flags = line.split(":", 1)[1].strip()
    except OSError:
        model = platform.processor()
    text = f"{platform.machine()}|{model}|{flags}|{os.cpu_count()}"
    return hashlib.sha256(text.encode()).hexdigest()


def tune_kernels(
    state: RSIState,
    settings: TuneSettings,
    clock: Callable[[], float] = time.perf_counter,
) -> TuneReport:
    """Measure the candidates of each mechanism and return the state with the winners."""
    fingerprint = machine_fingerprint()
    tuned = dict(state.kernels.tuned)
    reports = []
    limit_s = settings.time_limit_s
    deadline = None if limit_s is None else clock() + limit_s
    complete = True
    for mechanism in settings.mechanisms:
        if mechanism in UNTUNED:
            continue
        report, complete = _tune_one(state, mechanism, settings, fingerprint, clock, deadline)
        reports.append(report)
        if report.winner is not None:
            tuned[mechanism] = report.winner
        if not complete:
            logger.info("tuning stopped at its time limit of %g s", limit_s)
            break
    kernels = KernelParams(tuned=tuned, fingerprint=fingerprint)
    changed = kernels != state.kernels
    new_state = state
    if changed:
        new_state = state.model_copy(update={"kernels": kernels, "version": state.version + 1})
    return TuneReport(new_state, changed, fingerprint, tuple(reports), complete)


def _tune_one(
    state: RSIState,
    mechanism: AttentionMechanism,
    settings: TuneSettings,
    fingerprint: str,
    clock: Callable[[], float],
    deadline: float | None = None,
) -> tuple[MechanismReport, bool]:
    """The mechanism's report, and False when it stopped at ``deadline`` (``clock`` time)."""
    results: dict[int, Measurement] = {}
    complete = True
    longest_compile_s = 0.0
    fresh: list[tuple[int, KernelChoice, str, Callable[[], object]]] = []
    rows = settings.rows or state.architecture.seq_len
    args, expected = kernel_inputs(mechanism, state.architecture, rows, settings.seed)
    same_as: dict[int, int] = {}  # candidate index -> earlier index with the same key
    first_with: dict[str, int] = {}
    for index, config in enumerate(settings.candidates):
        variant = _with_choice(state, mechanism, config)
        key = ""
        try:
            key = _key(variant, mechanism, settings, fingerprint, rows)
            if key in first_with:
                same_as[index] = first_with[key]
                continue
            first_with[key] = index
            cached = _read_cache(settings.cache_dir, key, config)
            if cached is not None:
                results[index] = cached
                continue
            if deadline is not None and clock() + longest_compile_s >= deadline:
                complete = False
                break
            started = clock()
            kernel = kernel_module(variant, mechanism, settings.compile, settings.cache_dir).kernel
            longest_compile_s = max(longest_compile_s, clock() - started)
            out = kernel(*args)
            err = max_rel_err(out, expected)
            if not err <= TOLERANCE:
                raise ValueError(f"max relative error {err:.2e} exceeds {TOLERANCE:g}")
        except (RSIError, ValueError, ArithmeticError, MemoryError, OSError) as exc:
            failed = Measurement(config, key, (), float("inf"), False, _one_line(exc))
            logger.warning("%s %s failed: %s", mechanism.value, config, failed.error)
            if key:  # a toolchain that cannot even be fingerprinted is not cached
                _write_cache(settings.cache_dir, failed)
            results[index] = failed
            continue
        fresh.append((index, config, key, _bind(kernel, args)))
    for index, config, key, samples in _measure(fresh, settings, clock):
        done = Measurement(config, key, samples, statistics.median(samples), False)
        _write_cache(settings.cache_dir, done)
        results[index] = done
    for index, earlier in same_as.items():
        twin = results[earlier]
        results[index] = Measurement(
            settings.candidates[index], twin.key, twin.samples_us, twin.median_us, True, twin.error
        )
    ordered = tuple(results[i] for i in range(len(settings.candidates)) if i in results)
    winner = None
    best = float("inf")
    for m in ordered if complete else ():  # strict <: an exact tie keeps the earlier one
        if m.median_us < best:
            best, winner = m.median_us, m.config
    return MechanismReport(mechanism, ordered, winner), complete


def _measure(
    fresh: Sequence[tuple[int, KernelChoice, str, Callable[[], object]]],
    settings: TuneSettings,
    clock: Callable[[], float],
) -> list[tuple[int, KernelChoice, str, tuple[float, ...]]]:
    """Interleaved repetitions: round r times every candidate once, so drift hits all."""
    for _ in range(settings.warmup):
        for *_, call in fresh:
            call()
    samples: list[list[float]] = [[] for _ in fresh]
    for _ in range(settings.repeats):
        for slot, (*_, call) in enumerate(fresh):
            start = clock()
            call()
            samples[slot].append((clock() - start) * 1e6)
    return [(i, c, k, tuple(s)) for (i, c, k, _), s in zip(fresh, samples, strict=True)]


def _bind(kernel: Callable[..., object], args: tuple[object, ...]) -> Callable[[], object]:
    return lambda: kernel(*args)


def _with_choice(state: RSIState, mechanism: AttentionMechanism, config: KernelChoice) -> RSIState:
    tuned = {**state.kernels.tuned, mechanism: config}
    kernels = state.kernels.model_copy(update={"tuned": tuned})
    return state.model_copy(update={"kernels": kernels})


def _key(
    state: RSIState,
    mechanism: AttentionMechanism,
    settings: TuneSettings,
    fingerprint: str,
    rows: int,
) -> str:
    source = module_source(state, mechanism)
    flags = settings.compile.module_cflags(source) if settings.compile.backend != "python" else ()
    return content_key(
        {
            "protocol": PROTOCOL,
            "source": hashlib.sha256(source.encode()).hexdigest(),
            "toolchain": toolchain_fingerprint(settings.compile),
            "cflags": list(flags),
            "cpu": cpu_features(tuple(flags)),
            "machine": fingerprint,
            "rows": rows,
            "repeats": settings.repeats,
            "seed": settings.seed,
        }
    )


def _cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / "tune" / f"{key}.json"


def _read_cache(cache_dir: Path, key: str, config: KernelChoice) -> Measurement | None:
    path = _cache_path(cache_dir, key)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    median = raw.get("median_us")
    return Measurement(
        config,
        key,
        tuple(float(x) for x in raw.get("samples_us", ())),
        float("inf") if median is None else float(median),
        True,
        str(raw.get("error", "")),
    )


def _write_cache(cache_dir: Path, m: Measurement) -> None:
    path = _cache_path(cache_dir, m.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(m.as_dict(), sort_keys=True) + "\n").encode())


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
