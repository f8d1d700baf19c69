"""The RSI loop: evaluate, analyse, propose, screen, build, gate, promote or keep the incumbent.

Each iteration:

1. screens the incumbent on the train split (the exact NumPy replay of its generated
   scoring over the experts' raw evidence, collected once per run and cached on disk);
2. groups its failures (:mod:`runtime.rsi.analyse`);
3. searches bounded numeric changes and mined routing rules (:mod:`runtime.rsi.propose`);
4. builds and measures the best few candidates on the executor (:mod:`runtime.rsi.executor`);
5. gates them in rank order through :func:`runtime.promote.promote` (``require="better"``):
   the first one promoted becomes the incumbent (and goes live when a :class:`LiveProject`
   serves the project); a rejected one is kept by promote, with its reason.

It stops at the budget, at the iteration count, or when an iteration proposes nothing that
was not gated before. The run manifest is rewritten after every decision, so a killed loop
started again with the same arguments resumes: no decision lost, none repeated. Same seed
and data give the same decisions (every random choice comes from ``seed`` and the
iteration's index, and the gate's evidence is deterministic).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from codegen.errors import RSIError
from codegen.fsutil import atomic_write
from codegen.state import (
    BenchmarkSummary,
    RSIState,
    dump_state,
    parse_state,
    read_state_file,
)
from codegen.toolchain import Backend, CompileSettings
from runtime.babi.builds import model_of
from runtime.babi.tune import Evidence, Screened, collect_evidence, screen
from runtime.evidence import data_fingerprint, stories_of
from runtime.gate import GateSettings
from runtime.live import LiveProject
from runtime.loader import load_build
from runtime.project import Project
from runtime.promote import PromotionReport, p_value, promote
from runtime.rsi.analyse import Analysis, analyse
from runtime.rsi.executor import (
    CandidateJob,
    CandidateOutcome,
    Executor,
    ExecutorKind,
    make_executor,
)
from runtime.rsi.manifest import (
    RunManifest,
    git_revision,
    load_manifest,
    package_versions,
    run_id,
    runs_dir,
    save_manifest,
)
from runtime.rsi.propose import Candidate, search

__all__ = [
    "LoopError",
    "LoopSettings",
    "LoopResult",
    "ScreenedState",
    "run_loop",
    "train_evidence",
    "screen_state",
    "content_sha256",
]

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LoopSettings:
    """What ``rsi loop`` was asked to do."""

    start: Path | None = None  # --from: a state file to start from (committed first)
    budget_s: float | None = None
    iterations: int | None = None
    seed: int = 0
    data: Path | None = None  # None: the embedded generated stories
    executor: ExecutorKind = "local"
    address: str | None = None
    workers: int = 2
    approve: tuple[str, ...] = ()
    build_per_iteration: int = 2
    backend: Backend = "cython"
    gate: GateSettings = field(default_factory=GateSettings)

    def __post_init__(self) -> None:
        if self.budget_s is not None and not (math.isfinite(self.budget_s) and self.budget_s > 0):
            raise LoopError(f"--budget-s {self.budget_s}: give a positive number of seconds")
        if self.iterations is not None and self.iterations < 1:
            raise LoopError(f"--iterations {self.iterations}: give 1 or more")
        if not 1 <= self.workers <= 64:
            raise LoopError(f"--workers {self.workers}: give 1 to 64 parallel candidate jobs")
        if self.address is not None and self.executor != "ray":
            raise LoopError("--address names a Ray cluster: use it with --executor ray")


class LoopError(RSIError):
    """Loop settings out of range."""


@dataclass(frozen=True)
class LoopResult:
    """How the run ended and where its manifest is."""

    manifest: RunManifest
    path: Path
    resumed: bool

    @property
    def promotions(self) -> int:
        """Promoted candidates in the run."""
        return sum(1 for d in self.manifest.decisions if d["promoted"])


#: Called with each decision record as it is made (the CLI prints it).
OnDecision = Callable[[Mapping[str, Any]], None]


def run_loop(
    project: Project,
    settings: LoopSettings,
    *,
    live: LiveProject | None = None,
    on_decision: OnDecision | None = None,
) -> LoopResult:
    """Run (or resume) the loop on ``project``; see the module docstring."""
    clock = time.perf_counter()
    compile_settings = CompileSettings(backend=settings.backend)
    config = _config(project, settings)
    rid = run_id(config)
    path = runs_dir(project.state_path) / f"{rid}.json"
    resumed = path.exists()
    if resumed:
        manifest = load_manifest(path)
        if manifest.status == "finished":
            return LoopResult(manifest, path, True)
        manifest = _settle_pending(project, manifest)
    else:
        if settings.start is not None:
            _commit_start(project, read_state_file(settings.start), compile_settings)
        elif project.ledger.active() is None:
            project.build(compile_settings)
        manifest = RunManifest(
            run_id=rid,
            config=config,
            seed=settings.seed,
            data_fingerprint=data_fingerprint(settings.data, settings.seed),
            git_revision=git_revision(_REPO),
            packages=package_versions(),
            started_at=time.time(),
        )
    save_manifest(project.state_path, manifest)
    elapsed_before = manifest.elapsed_s
    executor = make_executor(settings.executor, address=settings.address, workers=settings.workers)
    try:
        evidence_s = time.perf_counter()
        evidence = train_evidence(
            project,
            _active_state(project),
            data=settings.data,
            seed=settings.seed,
            backend=settings.backend,
        )
        evidence_s = time.perf_counter() - evidence_s
        while True:
            elapsed = elapsed_before + time.perf_counter() - clock
            index = len(manifest.iterations)
            reason = _stop_reason(settings, index, elapsed)
            if reason:
                break
            manifest, reason = _iteration(
                project, settings, manifest, evidence, executor, index, live, on_decision
            )
            if index == 0 and not resumed:
                first = dict(manifest.iterations[-1])
                first["seconds"] = {**first["seconds"], "evidence": round(evidence_s, 4)}
                manifest = replace(manifest, iterations=(*manifest.iterations[:-1], first))
            manifest = replace(manifest, elapsed_s=elapsed_before + time.perf_counter() - clock)
            save_manifest(project.state_path, manifest)
            if reason:
                break
    finally:
        executor.close()
    manifest = replace(
        manifest,
        status="finished",
        stop_reason=reason,
        elapsed_s=elapsed_before + time.perf_counter() - clock,
    )
    save_manifest(project.state_path, manifest)
    return LoopResult(manifest, path, resumed)


def train_evidence(
    project: Project, state: RSIState, *, data: Path | None, seed: int, backend: Backend
) -> Evidence:
    """The experts' raw evidence on the train split, cached beside the ledger.

    It depends on the state only through what the experts compute (not on weights,
    coefficients or rules), so the cache key leaves those out.
    """
    cache = project.ledger.path.parent / "evidence" / f"{_evidence_key(state, data, seed)}.npz"
    if cache.exists():
        return _read_evidence(cache)
    built = project.build_candidate(state, dump_state(state), CompileSettings(backend=backend))
    model = model_of(load_build(built.path), full_evidence=True)
    evidence = collect_evidence(model, stories_of(data, "train", seed))
    _write_evidence(cache, evidence)
    return evidence


@dataclass(frozen=True)
class ScreenedState:
    """A state's screened train accuracy and its failure analysis."""

    screened: Screened
    analysis: Analysis


def screen_state(
    project: Project, state: RSIState, *, data: Path | None, seed: int, backend: Backend = "cython"
) -> ScreenedState:
    """Screen ``state`` on the train split and analyse its failures (``rsi analyse``)."""
    evidence = train_evidence(project, state, data=data, seed=seed, backend=backend)
    screened = screen(state, evidence)
    return ScreenedState(screened, analyse(state, evidence, screened))


def content_sha256(state: RSIState) -> str:
    """Hash of what a candidate changes (version and benchmark left out)."""
    data = state.model_dump(mode="json", exclude={"version", "benchmark"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _iteration(
    project: Project,
    settings: LoopSettings,
    manifest: RunManifest,
    evidence: Evidence,
    executor: Executor,
    index: int,
    live: LiveProject | None,
    on_decision: OnDecision | None,
) -> tuple[RunManifest, str]:
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    incumbent = _active_state(project)
    incumbent_build = _active_build(project)
    before = screen(incumbent, evidence)
    analysis = analyse(incumbent, evidence, before)
    rng = random.Random(f"rsi-loop:{settings.seed}:{index}")
    found = search(incumbent, evidence, analysis, rng)
    # A resumed iteration gates only what it had not gated before the kill: the same
    # candidates, in the same order, as an uninterrupted run.
    done_here = [d for d in manifest.decisions if d["iteration"] == index]
    fresh = [c for c in found.candidates if content_sha256(c.state) not in manifest.tried]
    chosen = fresh[: max(0, settings.build_per_iteration - len(done_here))]
    if any(d["promoted"] for d in done_here):
        chosen = []
    seconds["screen"] = time.perf_counter() - clock
    newest = project.ledger.versions()[-1]
    blobs = [_candidate_bytes(c, newest + 1, evidence) for c in chosen]
    clock = time.perf_counter()
    outcomes = executor.run(
        [
            CandidateJob(
                str(project.state_path),
                blob,
                settings.backend,
                str(settings.data) if settings.data is not None else None,
                settings.seed,
            )
            for blob in blobs
        ]
    )
    seconds["executor"] = time.perf_counter() - clock
    seconds["executor_build"] = sum(o.build_s for o in outcomes)
    seconds["executor_evaluate"] = sum(o.evaluate_s for o in outcomes)
    seconds["executor_queued"] = sum(o.queued_s for o in outcomes)
    decisions = list(manifest.decisions)
    tried = list(manifest.tried)
    for candidate, blob, outcome in zip(chosen, blobs, outcomes, strict=True):
        pending = {
            "iteration": index,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "content": content_sha256(candidate.state),
        }
        manifest = replace(manifest, pending=pending)
        save_manifest(project.state_path, manifest)
        report = promote(
            project,
            blob,
            settings=CompileSettings(backend=settings.backend),
            require="better",
            data=settings.data,
            approve=settings.approve,
            gate=settings.gate,
            seed=settings.seed,
            source=f"loop iteration {index} ({candidate.label})",
        )
        record = _decision_record(index, candidate, report, outcome)
        decisions.append(record)
        tried.append(content_sha256(candidate.state))
        for step, value in report.seconds.items():
            seconds[f"promote_{step}"] = seconds.get(f"promote_{step}", 0.0) + value
        manifest = replace(manifest, decisions=tuple(decisions), tried=tuple(tried), pending=None)
        save_manifest(project.state_path, manifest)
        if on_decision is not None:
            on_decision(record)
        if report.promoted:
            if live is not None:
                live.refresh()
            break
    record_iteration = _iteration_record(
        project, settings, index, before, found.screened, chosen, seconds, analysis.failures
    )
    start = _split_accuracy(project, settings, incumbent_build)
    record_iteration["heldout_per_task_before"] = start[0]
    record_iteration["hidden_per_task_before"] = start[1]
    manifest = replace(manifest, iterations=(*manifest.iterations, record_iteration))
    reason = "" if chosen or done_here else "nothing new proposed"
    return manifest, reason


def _iteration_record(
    project: Project,
    settings: LoopSettings,
    index: int,
    before: Screened,
    screened: int,
    chosen: list[Candidate],
    seconds: dict[str, float],
    failures: int,
) -> dict[str, Any]:
    active = project.ledger.active()
    assert active is not None
    heldout, hidden = _split_accuracy(project, settings, active.build_id)
    return {
        "index": index,
        "incumbent_version": active.version,
        "incumbent_build": active.build_id,
        "train_mean_before": round(before.mean, 6),
        "train_passed_before": before.passed,
        "train_failures": failures,
        "screened": screened,
        "built": len(chosen),
        "heldout_per_task": heldout,
        "hidden_per_task": hidden,
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
    }


def _decision_record(
    index: int, candidate: Candidate, report: PromotionReport, outcome: CandidateOutcome
) -> dict[str, Any]:
    stats = report.decision.stats
    return {
        "iteration": index,
        "label": candidate.label,
        "kinds": list(candidate.kinds),
        "changes": [c.describe() for c in candidate.changes],
        "candidate": report.build_id,
        "incumbent": report.decision.incumbent,
        "verdict": str(report.decision.verdict),
        "promoted": report.promoted,
        "state_version": report.state_version,
        "reason": report.decision.reason,
        "p_value": p_value(stats, "better"),
        "stats": {k: v for k, v in sorted(stats.items())},
        "train_fitness": [candidate.fitness[0], candidate.fitness[1]],
        "decision_id": report.decision_id,
        "seconds": {**report.seconds, "executor_build": round(outcome.build_s, 4)},
    }


def _candidate_bytes(candidate: Candidate, version: int, evidence: Evidence) -> bytes:
    summary = BenchmarkSummary(
        mean=round(candidate.fitness[1], 4),
        passed=candidate.fitness[0],
        per_task={str(t): round(a, 4) for t, a in sorted(candidate.per_task.items())},
        questions=int(evidence.tasks.size),
        split="train",
    )
    return dump_state(candidate.state.model_copy(update={"version": version, "benchmark": summary}))


def _commit_start(project: Project, data: bytes, settings: CompileSettings) -> None:
    """Write the start state (next version) to the project's state file and build it."""
    versions = project.ledger.versions()
    state = parse_state(data, "--from state")
    if versions:
        state = state.model_copy(update={"version": versions[-1] + 1})
        data = dump_state(state)
    kept = project.keep_uncommitted()
    if kept is not None:
        logger.warning("%s was not committed; kept as %s", project.state_path.name, kept.name)
    atomic_write(project.state_path, data)
    project.build(settings)


def _settle_pending(project: Project, manifest: RunManifest) -> RunManifest:
    """A promotion started before a kill: keep the ledger's decision if it was made."""
    if manifest.pending is None:
        return manifest
    sha = manifest.pending["sha256"]
    for record in project.ledger.decisions(limit=50):
        if record.candidate_sha256 == sha:
            logger.info("resume: decision %d on the pending candidate was made", record.id)
            decided = {
                "iteration": manifest.pending["iteration"],
                "label": "resumed",
                "kinds": [],
                "changes": [],
                "candidate": record.candidate,
                "incumbent": record.incumbent,
                "verdict": record.verdict,
                "promoted": record.committed_version is not None,
                "state_version": record.committed_version,
                "reason": record.reason,
                "p_value": p_value(record.stats, "better"),
                "stats": dict(record.stats),
                "train_fitness": [],
                "decision_id": record.id,
                "seconds": {},
            }
            return replace(
                manifest,
                decisions=(*manifest.decisions, decided),
                tried=(*manifest.tried, manifest.pending["content"]),
                pending=None,
            )
    return replace(manifest, pending=None)


def _stop_reason(settings: LoopSettings, index: int, elapsed_s: float) -> str:
    if settings.iterations is not None and index >= settings.iterations:
        return f"{settings.iterations} iterations done"
    if settings.budget_s is not None and elapsed_s >= settings.budget_s:
        return f"budget {settings.budget_s:g} s spent"
    return ""


def _config(project: Project, settings: LoopSettings) -> dict[str, Any]:
    start = (
        hashlib.sha256(read_state_file(settings.start)).hexdigest()
        if settings.start is not None
        else None
    )
    return {
        "state": str(project.state_path),
        "from": str(settings.start) if settings.start is not None else None,
        "from_sha256": start,
        "budget_s": settings.budget_s,
        "iterations": settings.iterations,
        "seed": settings.seed,
        "data": str(settings.data) if settings.data is not None else None,
        "approve": list(settings.approve),
        "build_per_iteration": settings.build_per_iteration,
        "backend": settings.backend,
        "gate": {
            "alpha": settings.gate.alpha,
            "hidden_mean_tolerance": settings.gate.hidden_mean_tolerance,
            "pass_mark": settings.gate.pass_mark,
        },
    }


def _split_accuracy(
    project: Project, settings: LoopSettings, build_id: str
) -> tuple[dict[str, float], dict[str, float]]:
    """Held-out and hidden accuracy per task of a build, from the gate's cached evidence."""
    evidence = project.ledger.evidence(
        build_id, settings.seed, data_fingerprint(settings.data, settings.seed)
    )
    if evidence is None:
        return {}, {}
    return (
        {str(t): round(a, 6) for t, a in evidence.heldout.per_task().items()},
        {str(t): round(a, 6) for t, a in evidence.hidden.per_task().items()},
    )


def _active_build(project: Project) -> str:
    active = project.ledger.active()
    assert active is not None
    return active.build_id


def _active_state(project: Project) -> RSIState:
    active = project.ledger.active()
    assert active is not None
    return parse_state(
        project.ledger.state(active.version).data, f"history version {active.version}"
    )


def _evidence_key(state: RSIState, data: Path | None, seed: int) -> str:
    body_data = state.model_dump(
        mode="json", exclude={"version", "benchmark", "scoring", "routing", "safety"}
    )
    for expert in body_data["experts"].values():
        expert.pop("weight")
    body = json.dumps([body_data, data_fingerprint(data, seed), seed], sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:24]


def _write_evidence(path: Path, evidence: Evidence) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        rows=np.array(["\t".join(r) for r in evidence.rows]),
        scores=evidence.scores,
        n_cand=evidence.n_cand,
        gold=evidence.gold,
        tasks=evidence.tasks,
        words=np.array([" ".join(sorted(w)) for w in evidence.words]),
    )
    tmp.replace(path)


def _read_evidence(path: Path) -> Evidence:
    with np.load(path) as z:
        return Evidence(
            rows=tuple((str(r).split("\t")[0], str(r).split("\t")[1]) for r in z["rows"]),
            scores=z["scores"],
            n_cand=z["n_cand"],
            gold=z["gold"],
            tasks=z["tasks"],
            words=tuple(frozenset(str(w).split()) for w in z["words"]),
        )
