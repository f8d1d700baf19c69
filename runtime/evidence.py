"""Measuring a build for the gate: per-question correctness, tier and kernel agreement, latency.

:func:`gather` evaluates a loaded build (its compiled tier when it has one) on the held-out
and hidden splits and returns :class:`runtime.gate.Evidence`: per question its task and
correctness, in the fixed order of :func:`runtime.babi.data.split_stories`, with a
fingerprint of the data, so two builds' evidence can be compared question by question and
an incumbent's evidence can be cached (the ledger keys it by build id, split, seed and
fingerprint).

The correctness flags come from the existing differential self-tests: the compiled tier
against the pure tier of the same build (``rsi_selftest()`` of every module, then the same
encoded questions answered by both tiers), and the attention kernel against its NumPy
reference (:mod:`runtime.kernels.reference`).

Without a data directory the stories come from the embedded generator (seeded), so the
gate works without any download.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sys
import threading
import time
import types
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from codegen.errors import RSIError
from runtime.babi.builds import model_of
from runtime.babi.data import Split, Story, load_dir, split_stories
from runtime.babi.evaluate import compare_tiers, evaluate, prepare_all
from runtime.babi.generate import generate_stories
from runtime.babi.model import BabiModel
from runtime.gate import Evidence, LatencySamples, SplitOutcome
from runtime.kernels import reference
from runtime.live import differential_check
from runtime.loader import LoadedBuild, LoadError, exec_artifact

__all__ = [
    "KERNEL_TOLERANCE",
    "TIER_SAMPLE_QUESTIONS",
    "LATENCY_QUESTIONS",
    "data_fingerprint",
    "gather",
    "outcome",
    "stories_of",
    "pure_tier",
    "tiers_agree",
    "kernels_agree",
    "measure_latency",
]

logger = logging.getLogger(__name__)

#: Max relative error of a float32 kernel against the float64 reference (as the autotuner).
KERNEL_TOLERANCE = 1e-4
#: Questions per task (of the task's first held-out story) answered by both tiers in the
#: differential test: the pure tier takes about 8 ms a question, and the self-tests cover
#: every module on fixed inputs besides.
TIER_SAMPLE_QUESTIONS = 2
#: Questions answered per latency repetition (a fixed prefix of the held-out split).
LATENCY_QUESTIONS = 400

_pure: dict[Path, LoadedBuild] = {}
_pure_modules: dict[tuple[str, str], types.ModuleType] = {}
# Modules whose two tiers passed their self-test, by (name, source sha, artifact sha): the
# same source compiled to the same artifact gives the same result, so a loop step that
# changes one module re-tests that module only.
_selftested: set[tuple[str, str, str]] = set()
_guard = threading.Lock()


def data_fingerprint(data: Path | None, seed: int = 0) -> str:
    """sha256 over the bAbI files' names and bytes, or ``generated:<seed>`` without data."""
    if data is None:
        return f"generated:{seed}"
    return _fingerprint_dir(str(data.resolve()), _stamp(data))


def stories_of(data: Path | None, split: Split, seed: int = 0) -> list[Story]:
    """Stories of ``split``; the files are parsed once per process and fingerprint."""
    return split_stories(_all_stories(data, seed), split, seed=seed)


def outcome(model: BabiModel, data: Path | None, split: Split, seed: int = 0) -> SplitOutcome:
    """Per-question correctness of ``model`` on ``split``, in the split's fixed order."""
    result = evaluate(model, stories_of(data, split, seed), keep_answers=True)
    return SplitOutcome(
        split=split,
        seed=seed,
        data_fingerprint=data_fingerprint(data, seed),
        tasks=tuple(a.task for a in result.answers),
        correct=tuple(a.correct for a in result.answers),
    )


def gather(build: LoadedBuild, *, data: Path | None, seed: int = 0) -> Evidence:
    """Evaluate ``build`` on the held-out and hidden splits and check its correctness."""
    start = time.perf_counter()
    model = model_of(build)
    heldout = outcome(model, data, "heldout", seed)
    hidden = outcome(model, data, "hidden", seed)
    evaluated = time.perf_counter()
    tiers = tiers_agree(build, stories_of(data, "heldout", seed))
    kernels = kernels_agree(build)
    logger.info(
        "evidence for %s: %d + %d questions in %.2f s, checks in %.2f s",
        build.build_id,
        len(heldout.correct),
        len(hidden.correct),
        evaluated - start,
        time.perf_counter() - evaluated,
    )
    return Evidence(build.build_id, heldout, hidden, tiers, kernels)


def pure_tier(build: LoadedBuild) -> LoadedBuild:
    """The interpreted tier of a compiled build: its ``.py`` sources, verified and imported.

    A Cython build directory carries each module's pure-Python source beside the extension
    (one file is both tiers); each source must match the manifest's ``source_sha256``.
    """
    if build.tier == "python":
        return build
    key = build.path.resolve()
    with _guard:
        if key not in _pure:
            _pure[key] = _import_sources(build)
        return _pure[key]


def tiers_agree(build: LoadedBuild, stories: Sequence[Story]) -> bool:
    """True when the compiled and pure tiers of ``build`` agree (always, with one tier).

    Every module's ``rsi_selftest()`` (:func:`runtime.live.differential_check`; a module
    whose source and artifact already passed in this process is not run again), then the
    first :data:`TIER_SAMPLE_QUESTIONS` questions of each task's first story encoded once
    and answered by both tiers (:func:`runtime.babi.evaluate.compare_tiers`).
    """
    if build.tier == "python":
        return True
    pure = pure_tier(build)
    identities = {
        name: (name, info.source_sha256, info.artifact_sha256)
        for name, info in build.manifest.modules.items()
    }
    with _guard:
        untested = [name for name, key in identities.items() if key not in _selftested]
    try:
        differential_check(_only(pure, untested), _only(build, untested))
    except RSIError as exc:
        logger.warning("build %s: %s", build.build_id, exc)
        return False
    with _guard:
        _selftested.update(identities[name] for name in untested)
    sample = _first_per_task(stories, TIER_SAMPLE_QUESTIONS)
    comparison = compare_tiers(model_of(build), model_of(pure), sample)
    if not comparison.agree:
        logger.warning(
            "build %s: tiers disagree on %d of %d questions, first %s",
            build.build_id,
            len(comparison.mismatches),
            comparison.questions,
            comparison.mismatches[0],
        )
    return comparison.agree


def kernels_agree(build: LoadedBuild) -> bool:
    """True when the attention kernel the model calls matches the NumPy reference.

    The model calls ``attention.sdpa`` when the build has it (other mechanisms are answered
    by the reference itself, so there is nothing to disagree: True). Checked at full length
    and at a shorter, masked length, within :data:`KERNEL_TOLERANCE`.
    """
    attention = build.modules.get("attention")
    if attention is None or not hasattr(attention, "sdpa"):
        return True
    n, d = int(attention.N), int(attention.D)
    causal = bool(getattr(attention, "CAUSAL", False))
    rng = np.random.default_rng(0)
    for rows in sorted({n, max(1, n // 3)}):
        q, k, v = (rng.standard_normal((rows, d)).astype(np.float32) for _ in range(3))
        mask = (np.arange(rows) % 4 != 3).astype(np.uint8)
        try:
            out = attention.sdpa(q, k, v, mask)
        except (TypeError, ValueError) as exc:
            logger.warning("build %s: sdpa refused %d rows: %s", build.build_id, rows, exc)
            return False
        expected = reference.sdpa(q, k, v, mask.astype(bool), causal)
        err = reference.max_rel_err(out, expected)
        if not err <= KERNEL_TOLERANCE:
            logger.warning(
                "build %s: sdpa off its reference by %.3g at %d rows", build.build_id, err, rows
            )
            return False
    return True


def measure_latency(
    incumbent: LoadedBuild,
    candidate: LoadedBuild,
    *,
    repeats: int,
    data: Path | None,
    seed: int = 0,
) -> LatencySamples:
    """Interleaved A/B timing: seconds to encode and answer a fixed held-out sample.

    One untimed warm-up each, then ``repeats`` rounds; the order inside a round alternates
    (AB, BA, ...) so that drift of the machine falls on both builds alike.
    """
    sample = _prefix(stories_of(data, "heldout", seed), LATENCY_QUESTIONS)
    models = (model_of(incumbent), model_of(candidate))
    for model in models:
        _time_once(model, sample)
    times: tuple[list[float], list[float]] = ([], [])
    for r in range(repeats):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for i in order:
            times[i].append(_time_once(models[i], sample))
    return LatencySamples(tuple(times[0]), tuple(times[1]))


def _only(build: LoadedBuild, names: Sequence[str]) -> LoadedBuild:
    """``build`` with only the modules ``names``."""
    modules = {name: build.modules[name] for name in names}
    return replace(build, modules=types.MappingProxyType(modules))


def _time_once(model: BabiModel, stories: Sequence[Story]) -> float:
    start = time.perf_counter()
    for prepared in prepare_all(model, stories):
        model.answer_all(prepared)
    return time.perf_counter() - start


def _prefix(stories: Sequence[Story], questions: int) -> list[Story]:
    """Stories round-robin over tasks until about ``questions`` questions are taken."""
    by_task: dict[int, list[Story]] = {}
    for story in stories:
        by_task.setdefault(story.task, []).append(story)
    out: list[Story] = []
    taken = 0
    depth = 0
    while taken < questions and any(depth < len(group) for group in by_task.values()):
        for task in sorted(by_task):
            if depth < len(by_task[task]):
                out.append(by_task[task][depth])
                taken += len(by_task[task][depth].questions)
        depth += 1
    return out


def _first_per_task(stories: Sequence[Story], questions: int) -> list[Story]:
    """Each task's first story that asks anything, cut to its first ``questions`` questions."""
    out: dict[int, Story] = {}
    for story in stories:
        if story.task not in out and story.questions:
            out[story.task] = replace(story, questions=story.questions[:questions])
    return list(out.values())


def _all_stories(data: Path | None, seed: int) -> tuple[Story, ...]:
    if data is None:
        return _generated(seed)
    return _parsed(str(data.resolve()), _stamp(data))


@functools.lru_cache(maxsize=8)
def _generated(seed: int) -> tuple[Story, ...]:
    return tuple(generate_stories(seed=seed))


@functools.lru_cache(maxsize=4)
def _parsed(directory: str, stamp: tuple[tuple[str, int, int], ...]) -> tuple[Story, ...]:
    """Parsed once per directory and file stamps (names, sizes, mtimes)."""
    del stamp  # part of the cache key only
    return tuple(load_dir(Path(directory)))


@functools.lru_cache(maxsize=4)
def _fingerprint_dir(directory: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    del stamp  # part of the cache key only
    digest = hashlib.sha256()
    for path in sorted(Path(directory).glob("qa*_*.txt")):
        digest.update(path.name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _stamp(data: Path) -> tuple[tuple[str, int, int], ...]:
    return tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(data.glob("qa*_*.txt"))
    )


def _import_sources(build: LoadedBuild) -> LoadedBuild:
    package = f"rsi_pure_{build.build_id}"
    modules: dict[str, types.ModuleType] = {}

    def sibling(name: str) -> types.ModuleType:
        # ``from . import reasoning`` in a module of this build imports that one first.
        if name in modules:
            return modules[name]
        info = build.manifest.modules.get(name)
        if info is None:
            raise AttributeError(f"build {build.build_id} has no module {name!r}")
        source = build.path / f"{name}.py"
        try:
            raw = source.read_bytes()
        except OSError:
            raise LoadError(
                f"build {build.build_id}: pure-tier source {name}.py is missing"
            ) from None
        if hashlib.sha256(raw).hexdigest() != info.source_sha256:
            raise LoadError(f"build {build.build_id}: {name}.py does not match its manifest")
        digest = (name, hashlib.sha256(raw).hexdigest())
        if digest not in _pure_modules:  # the same source is the same pure module
            _pure_modules[digest] = exec_artifact(f"{package}.{name}", source)
        modules[name] = _pure_modules[digest]
        setattr(pkg, name, modules[name])
        return modules[name]

    pkg = types.ModuleType(package)
    pkg.__path__ = []
    setattr(pkg, "__getattr__", sibling)  # noqa: B010 - module __getattr__ (PEP 562)
    sys.modules[package] = pkg
    for name in build.manifest.modules:
        sibling(name)
    return LoadedBuild(
        build.build_id,
        "python",
        build.path,
        build.manifest,
        types.MappingProxyType(modules),
        build.state,
    )
