"""The RSI loop: evaluate, analyse, propose, screen, build, gate, promote or keep the incumbent.

Each iteration:

1. screens the incumbent on the train split (the exact NumPy replay of its generated
   scoring over the experts' raw evidence, collected once per run and cached on disk);
2. groups its failures (:mod:`runtime.rsi.analyse`);
3. searches bounded numeric changes and mined routing rules, at most one new rule per
   candidate (:mod:`runtime.rsi.propose`);
4. runs the kernel autotuner on a worker for build-knob candidates (:mod:`runtime.rsi.knobs`);
5. builds and measures the best few candidates and every knob candidate on the executor
   (:mod:`runtime.rsi.executor`);
6. gates them in rank order through :func:`runtime.promote.promote` (``require="better"``;
   knob candidates are timed there, since they change the hot path): the first one promoted
   becomes the incumbent (and goes live when a :class:`LiveProject` serves the project); a
   rejected one is kept by promote, with its reason.

It stops at the budget, at the iteration count, or when an iteration proposes nothing that
was not gated before. The budget bounds every phase (see ``_Budget``): work that cannot
finish is not started, executor jobs still running at the deadline are stopped, so a run
ends within its budget but for one gate decision. One loop runs per state file at a
time (``.rsi/<state file name>/loop.lock``). The run manifest is rewritten after every
decision, so a killed loop started again with the same arguments resumes: no decision lost,
none repeated. Same seed and data give the same decisions (every random choice comes from
``seed`` and the iteration's index, and the gate's evidence is deterministic), with two
exceptions that depend on time: a run cut short by its budget, and build-knob decisions
(the autotuner's winner is reproducible from its cache, the gate's latency test is not).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import random
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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
from runtime.ledger import ledger_path
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
from runtime.rsi.knobs import KnobJob, KnobSettings, run_knob_job
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
#: Most of the remaining budget one iteration's kernel autotuning may take.
KNOB_SHARE = 0.25
#: The share of its time at which the autotuner stops itself (between variant compiles);
#: the rest is a margin before the executor kills its worker.
KNOB_SOFT_SHARE = 0.85


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
    knobs: bool = True  # --no-knobs: skip the kernel autotuner (no build-knob proposals)
    backend: Backend = "cython"
    gate: GateSettings = field(default_factory=GateSettings)
    #: ``time.perf_counter()`` value the budget counts from (``rsi loop``: its process's
    #: start, so imports count); None: the call of :func:`run_loop`.
    started: float | None = None

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
    """Loop settings out of range, or a loop already running on the project."""


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
    clock = time.perf_counter() if settings.started is None else settings.started
    with _loop_lock(project.state_path):
        return _run_locked(project, settings, live, on_decision, clock)


def _run_locked(
    project: Project,
    settings: LoopSettings,
    live: LiveProject | None,
    on_decision: OnDecision | None,
    clock: float,
) -> LoopResult:
    compile_settings = CompileSettings(backend=settings.backend)
    config = _config(project, settings)
    rid = run_id(config)
    path = runs_dir(project.state_path) / f"{rid}.json"
    resumed = path.exists()
    found = load_manifest(path) if resumed else None
    if found is not None and found.status == "finished":
        return LoopResult(found, path, True)
    # Before anything is built: a Ray address that does not work is refused at once.
    executor = make_executor(settings.executor, address=settings.address, workers=settings.workers)
    try:
        start_s = 0.0
        if found is not None:
            manifest = _settle_pending(project, found)
        else:
            start_s = time.perf_counter()
            if settings.start is not None:
                _commit_start(project, read_state_file(settings.start), compile_settings)
            elif project.ledger.active() is None:
                project.build(compile_settings)
            start_s = time.perf_counter() - start_s
            manifest = RunManifest(
                run_id=rid,
                config=config,
                seed=settings.seed,
                data_fingerprint=data_fingerprint(settings.data, settings.seed),
                git_revision=git_revision(_REPO),
                packages=package_versions(),
                started_at=time.time(),
            )
        run = _Run(project, settings, live, on_decision, clock, manifest.elapsed_s)
        manifest = run.save(_add_seconds(manifest, start=start_s))
        evidence_s = time.perf_counter()
        evidence = train_evidence(
            project,
            _active_state(project),
            data=settings.data,
            seed=settings.seed,
            backend=settings.backend,
        )
        evidence_s = time.perf_counter() - evidence_s
        manifest = run.save(_add_seconds(manifest, evidence=evidence_s))
        # What a candidate job costs: the longest job of the run so far, else (none run yet)
        # what building the start state and collecting its train evidence cost here (a build
        # and an evaluation); the stop reason says which.
        jobs = _job_seconds(manifest)
        budget = _Budget(
            None if settings.budget_s is None else run.clock + settings.budget_s - run.before_s,
            job_s=max(jobs) if jobs else start_s + evidence_s,
            jobs_seen=len(jobs),
            estimate=(
                f"building the start state ({start_s:.0f} s) and collecting its train "
                f"evidence ({evidence_s:.0f} s) in this process"
            ),
            gate_s=max([0.0, *_gate_seconds(manifest)]),
        )
        while True:
            index = len(manifest.iterations)
            reason = _stop_reason(settings, index, budget)
            if reason:
                break
            manifest, budget, reason = _iteration(run, manifest, evidence, executor, index, budget)
            manifest = run.save(manifest)
            if reason:
                break
    finally:
        executor.close()
    manifest = run.save(replace(manifest, status="finished", stop_reason=reason))
    return LoopResult(manifest, path, resumed)


def train_evidence(
    project: Project, state: RSIState, *, data: Path | None, seed: int, backend: Backend
) -> Evidence:
    """The experts' raw evidence on the train split, cached beside the ledger.

    It depends on the state only through what the experts compute (not on weights,
    coefficients or rules), so the cache key leaves those out. A damaged cache file
    (truncated, overwritten) is recomputed, with a warning.
    """
    cache = project.ledger.path.parent / "evidence" / f"{_evidence_key(state, data, seed)}.npz"
    if cache.exists():
        try:
            return _read_evidence(cache)
        except _DAMAGED_NPZ as exc:
            logger.warning("%s: damaged evidence cache (%s); recomputing it", cache, exc)
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


@dataclass(frozen=True)
class _Run:
    """What every iteration of one process's run shares."""

    project: Project
    settings: LoopSettings
    live: LiveProject | None
    on_decision: OnDecision | None
    clock: float  # perf_counter at this process's start
    before_s: float  # seconds the run had spent in earlier processes (a resumed run)

    def save(self, manifest: RunManifest) -> RunManifest:
        """Write ``manifest`` with the run's elapsed time so far; return what was written."""
        manifest = replace(manifest, elapsed_s=self.before_s + time.perf_counter() - self.clock)
        save_manifest(self.project.state_path, manifest)
        return manifest


@dataclass(frozen=True)
class _Budget:
    """The run's deadline (``perf_counter``; None: no budget) and the costs seen so far."""

    deadline: float | None
    job_s: float  # the longest candidate build and evaluation seen (or, none seen, estimate)
    jobs_seen: int  # candidate jobs of the run that job_s is the longest of
    estimate: str  # where job_s comes from while jobs_seen is 0
    gate_s: float  # the longest gate decision seen

    def left_s(self) -> float | None:
        """Seconds to the deadline (None: no budget)."""
        return None if self.deadline is None else self.deadline - time.perf_counter()

    def fits(self, seconds: float) -> bool:
        """True when ``seconds`` of work can finish before the deadline."""
        left = self.left_s()
        return left is None or left >= seconds

    def seen(self, *, job_s: Sequence[float] = (), gate_s: float = 0.0) -> _Budget:
        """The budget with these costs taken in (the first jobs replace the estimate)."""
        longest = max([*job_s, self.job_s]) if self.jobs_seen else max(job_s, default=self.job_s)
        return replace(
            self,
            job_s=longest,
            jobs_seen=self.jobs_seen + len(job_s),
            gate_s=max(self.gate_s, gate_s),
        )

    def no_room_for_a_job(self, budget_s: float | None) -> str:
        """Why no candidate job starts now: the time left, the job's cost and its source."""
        source = (
            f"the longest of this run's {self.jobs_seen} candidate jobs"
            if self.jobs_seen
            else f"none built yet in this run; estimated from {self.estimate}"
        )
        return self._no_room(budget_s, "a candidate build and evaluation", self.job_s, source)

    def no_room_for_a_gate(self, budget_s: float | None) -> str:
        """Why no gate decision starts now."""
        source = "the longest gate decision of this run"
        return self._no_room(budget_s, "a gate decision", self.gate_s, source)

    def _no_room(self, budget_s: float | None, what: str, seconds: float, source: str) -> str:
        left = max(0.0, self.left_s() or 0.0)
        return (
            f"budget {budget_s:g} s: {left:.0f} s left, too little for {what} "
            f"(~{seconds:.0f} s: {source})"
        )


def _iteration(
    run: _Run,
    manifest: RunManifest,
    evidence: Evidence,
    executor: Executor,
    index: int,
    budget: _Budget,
) -> tuple[RunManifest, _Budget, str]:
    project, settings = run.project, run.settings
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    incumbent = _active_state(project)
    incumbent_build = _active_build(project)
    before = screen(incumbent, evidence)
    analysis = analyse(incumbent, evidence, before)
    rng = random.Random(f"rsi-loop:{settings.seed}:{index}")
    found = search(incumbent, evidence, analysis, rng)
    seconds["screen"] = time.perf_counter() - clock
    stopped = ""
    candidates = list(found.candidates)
    refused: tuple[str, ...] = ()
    # The autotuner runs on a worker, stopped in time to leave room for one candidate, and
    # at most KNOB_SHARE of what is left. Its compiled variants and measurements are cached,
    # so a stopped tuning goes on where it stopped in the next iteration, and a finished one
    # costs a cache lookup. It stops itself between variant compiles (KNOB_SOFT_SHARE of its
    # time, less its longest compile), so the pool's workers live on; the executor kills
    # them only when a compile runs past the whole time (and the next job respawns them).
    left = budget.left_s()
    tune_s = None if left is None else min(left - budget.job_s - budget.gate_s, left * KNOB_SHARE)
    if settings.knobs and (tune_s is None or tune_s > 0):
        clock = time.perf_counter()
        job = KnobJob(
            incumbent,
            before,
            KnobSettings(
                cache_dir=project.state_path.parent / "generated" / ".cache",
                compile=CompileSettings(backend=settings.backend),
                approve=settings.approve,
            ),
            stop_at_unix_s=None if tune_s is None else time.time() + tune_s * KNOB_SOFT_SHARE,
        )
        knobs = executor.call(run_knob_job, job, timeout_s=tune_s)
        seconds["knobs"] = time.perf_counter() - clock
        if knobs is not None and knobs.complete:
            candidates += knobs.candidates
            refused = knobs.refused
        else:
            logger.warning(_tuning_stopped(index, incumbent.version, tune_s, settings.budget_s))
    # A resumed iteration gates only what it had not gated before the kill: the same
    # candidates, in the same order, as an uninterrupted run.
    done_here = [d for d in manifest.decisions if d["iteration"] == index]
    # A knob change gated once in the run is not gated again on a later incumbent.
    knob_changes = [d["changes"] for d in manifest.decisions if _is_knob(d["kinds"])]
    fresh = [
        c
        for c in candidates
        if content_sha256(c.state) not in manifest.tried
        and not (_is_knob(c.kinds) and [x.describe() for x in c.changes] in knob_changes)
    ]
    chosen = _choose(fresh, settings.build_per_iteration - len(done_here))
    if any(d["promoted"] for d in done_here):
        chosen = []
    if chosen and not budget.fits(budget.job_s):
        stopped = budget.no_room_for_a_job(settings.budget_s)
        chosen = []
    newest = project.ledger.versions()[-1]
    blobs = [_candidate_bytes(c, newest + 1, evidence) for c in chosen]
    clock = time.perf_counter()
    results = executor.run(
        [
            CandidateJob(
                str(project.state_path),
                blob,
                settings.backend,
                str(settings.data) if settings.data is not None else None,
                settings.seed,
            )
            for blob in blobs
        ],
        timeout_s=budget.left_s(),
    )
    seconds["executor"] = time.perf_counter() - clock
    outcomes = [o for o in results if o is not None]
    seconds["executor_build"] = sum(o.build_s for o in outcomes)
    seconds["executor_evaluate"] = sum(o.evaluate_s for o in outcomes)
    seconds["executor_queued"] = sum(o.queued_s for o in outcomes)
    seconds["executor_overhead"] = sum(o.overhead_s for o in outcomes)
    budget = budget.seen(job_s=[o.build_s + o.evaluate_s for o in outcomes])
    if len(outcomes) < len(results):
        stopped = _budget_spent(settings, "candidate builds stopped at the deadline")
        late = [c for c, o in zip(chosen, results, strict=True) if o is None]
        logger.warning(_builds_stopped(index, late, settings.budget_s))
    decisions = list(manifest.decisions)
    tried = list(manifest.tried)
    for candidate, blob, outcome in zip(chosen, blobs, results, strict=True):
        if outcome is None:
            break  # stopped at the deadline: neither gated nor tried
        if not budget.fits(budget.gate_s):
            stopped = budget.no_room_for_a_gate(settings.budget_s)
            break
        pending = {
            "iteration": index,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "content": content_sha256(candidate.state),
        }
        manifest = run.save(replace(manifest, pending=pending))
        clock = time.perf_counter()
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
        budget = budget.seen(gate_s=time.perf_counter() - clock)
        record = _decision_record(index, candidate, report, outcome)
        project.ledger.event(
            "loop_decision",
            {"decision_id": report.decision_id, "run": manifest.run_id, **record},
        )
        decisions.append(record)
        tried.append(content_sha256(candidate.state))
        for step, value in report.seconds.items():
            seconds[f"promote_{step}"] = seconds.get(f"promote_{step}", 0.0) + value
        manifest = replace(manifest, decisions=tuple(decisions), tried=tuple(tried), pending=None)
        manifest = run.save(manifest)
        if run.on_decision is not None:
            run.on_decision(record)
        if report.promoted:
            if run.live is not None:
                run.live.refresh()
            break
    record_iteration = _iteration_record(
        project, settings, index, before, found.screened, chosen, seconds, analysis.failures
    )
    start = _split_accuracy(project, settings, incumbent_build)
    record_iteration["heldout_per_task_before"] = start[0]
    record_iteration["hidden_per_task_before"] = start[1]
    record_iteration["refused"] = list(refused)
    manifest = replace(manifest, iterations=(*manifest.iterations, record_iteration))
    if stopped:
        return manifest, budget, stopped
    reason = "" if chosen or done_here else "nothing new proposed"
    return manifest, budget, reason


@contextmanager
def _loop_lock(state_path: Path) -> Iterator[None]:
    """Hold ``.rsi/<state file name>/loop.lock`` for the run; refuse a second loop at once.

    An ``flock``: the kernel releases it when its process dies, so a ``kill -9``'d loop
    leaves no stale lock behind (the pid written in the file only names the holder).
    """
    path = ledger_path(state_path).parent / "loop.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise LoopError(
                f"{state_path.name}: a loop already runs on it (process {holder}; lock "
                f".rsi/{state_path.name}/loop.lock); wait for it to finish or stop it, "
                "then run rsi loop again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _choose(fresh: list[Candidate], room: int) -> list[Candidate]:
    """What an iteration builds: the best ``room`` screened candidates (numeric and routing
    changes), then every build-knob candidate (its own decision: the gate times it)."""
    knobs = [c for c in fresh if _is_knob(c.kinds)]
    screened = [c for c in fresh if not _is_knob(c.kinds)]
    return screened[: max(0, room)] + (knobs if room > 0 else [])


def _is_knob(kinds: Sequence[str]) -> bool:
    return bool({"kernel", "architecture"} & set(kinds))


def _tuning_stopped(index: int, version: int, tune_s: float | None, budget_s: float | None) -> str:
    """The warning for a kernel autotuning stopped at its share of the budget."""
    return (
        f"iteration {index}: kernel autotuning of state version {version} stopped after "
        f"{tune_s or 0.0:.0f} s, its share of {_the_budget(budget_s)}; what it measured is "
        "cached, so the next iteration or run goes on from there"
    )


def _builds_stopped(index: int, stopped: Sequence[Candidate], budget_s: float | None) -> str:
    """The warning for candidate builds stopped at the deadline: which candidates."""
    names = "; ".join(f"{c.label} ({', '.join(x.path for x in c.changes)})" for c in stopped)
    return (
        f"iteration {index}: {len(stopped)} candidate build(s) stopped at the end of "
        f"{_the_budget(budget_s)}, neither gated nor marked tried: {names}"
    )


def _the_budget(budget_s: float | None) -> str:
    return "the loop's time limit" if budget_s is None else f"the {budget_s:g} s budget"


def _budget_spent(settings: LoopSettings, why: str) -> str:
    return f"budget {settings.budget_s:g} s spent ({why})"


def _add_seconds(manifest: RunManifest, **seconds: float) -> RunManifest:
    """``manifest`` with these run-level seconds added to what earlier processes spent."""
    total = dict(manifest.seconds)
    for key, value in seconds.items():
        total[key] = round(total.get(key, 0.0) + value, 4)
    return replace(manifest, seconds=total)


def _job_seconds(manifest: RunManifest) -> list[float]:
    """Build and evaluate seconds of each candidate job the run made (its decisions; a
    decision settled on resume, whose job was not timed, is not one)."""
    return [
        float(d["seconds"]["executor_build"]) + float(d["seconds"].get("executor_evaluate", 0.0))
        for d in manifest.decisions
        if "executor_build" in d["seconds"]
    ]


def _gate_seconds(manifest: RunManifest) -> list[float]:
    """Seconds of each gate decision the run made."""
    steps = ("build", "sandbox", "evaluate", "gate", "commit")
    return [sum(float(d["seconds"].get(k, 0.0)) for k in steps) for d in manifest.decisions]


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
        "seconds": {
            **report.seconds,
            "executor_build": round(outcome.build_s, 4),
            "executor_evaluate": round(outcome.evaluate_s, 4),
        },
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


def _stop_reason(settings: LoopSettings, index: int, budget: _Budget) -> str:
    if settings.iterations is not None and index >= settings.iterations:
        return f"{settings.iterations} iterations done"
    left = budget.left_s()
    if left is not None and left <= 0.0:
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
        "knobs": settings.knobs,
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


#: What reading a damaged ``.npz`` raises: not a zip, truncated or bad CRC, a bad deflate
#: stream, a missing array, a bad array header (``ValueError``), a short read.
_DAMAGED_NPZ = (zipfile.BadZipFile, zlib.error, KeyError, ValueError, EOFError, OSError)


def _read_evidence(path: Path) -> Evidence:
    """The evidence :func:`_write_evidence` wrote (``ValueError``: its arrays disagree)."""
    with np.load(path) as z:
        rows = [str(r).split("\t") for r in z["rows"]]
        evidence = Evidence(
            rows=tuple((r[0], r[1]) for r in rows if len(r) == 2),
            scores=z["scores"],
            n_cand=z["n_cand"],
            gold=z["gold"],
            tasks=z["tasks"],
            words=tuple(frozenset(str(w).split()) for w in z["words"]),
        )
    questions = evidence.tasks.shape[0]
    shapes_agree = (
        len(evidence.rows) == len(rows)
        and evidence.scores.ndim == 3
        and evidence.scores.shape[:2] == (questions, len(rows))
        and evidence.n_cand.shape == (questions,)
        and evidence.gold.shape == (questions, evidence.scores.shape[2])
        and len(evidence.words) == questions
    )
    if not shapes_agree:
        raise ValueError("its arrays disagree in shape")
    return evidence
