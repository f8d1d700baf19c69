"""Promotion through the gate: the in-process API behind ``rsi promote``, the loop and watch.

:func:`promote` takes a candidate state's bytes and, in order:

1. validates it (schema, and a version newer than every committed one);
2. enforces the incumbent's safety policy (:mod:`codegen.policy`) before anything is built;
3. builds it (:meth:`Project.build_candidate`; nothing is committed or activated);
4. runs the build first in a sandbox child process (:mod:`runtime.sandbox`), which then
   gathers evidence on the held-out and hidden splits for each build whose evidence the
   ledger has not cached (by build id, seed and data fingerprint: the incumbent's usually
   is), and times both builds interleaved when code on the hot path changed. A crash, a
   hang past ``evaluate_timeout_s`` (the child's process group is killed) or a failed
   self-test rejects the candidate with the phase; this process never imports it, and
   stores the evidence the child sent back in the ledger;
5. asks the gate (:func:`runtime.gate.decide`), then under the project lock either records
   the decision, commits and activates the candidate and writes it to the state file, or
   records the decision and keeps the candidate (ledger, and ``<state>.rejected.json``).

The decision is recorded before the commit and marked committed after it, so a kill at any
instant leaves the ledger whole: either the incumbent is active, or the candidate is, with
its decision. The state file is written last, and only when it still holds the incumbent's
bytes: an edit a person made meanwhile is never overwritten. Run again after a kill, the
same candidate either goes through the gate again (nothing was committed) or, when its
promotion was already committed, only the state file is brought up to date.
"""

from __future__ import annotations

import hashlib
import logging
import stat
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from codegen.build import MANIFEST, BuildResult
from codegen.errors import LedgerError, StateError, StorageError
from codegen.fsutil import atomic_write
from codegen.locking import project_lock, rejected_path
from codegen.policy import approves, check_policy
from codegen.state import RSIState, parse_state, read_state_file
from codegen.toolchain import CompileSettings
from runtime.evidence import data_fingerprint
from runtime.gate import (
    Decision,
    GateSettings,
    LatencySamples,
    Require,
    Stat,
    Verdict,
    decide,
)
from runtime.ledger import Active, CommitRequest, Ledger, check_version_jump
from runtime.project import Project
from runtime.sandbox import DEFAULT_EVALUATE_TIMEOUT_S, Evaluation, first_run

__all__ = [
    "PromotionReport",
    "promote",
    "rejected_path",
    "keep_rejected",
    "HOT_PATH",
    "p_value",
    "format_p",
]

logger = logging.getLogger(__name__)

#: State sections whose changes alter the code on the hot path (kernels and shapes), so the
#: gate also times both builds. Weights and coefficients are constants in the same code.
HOT_PATH = ("architecture", "kernels")


@dataclass(frozen=True)
class PromotionReport:
    """What :func:`promote` decided and did."""

    decision: Decision
    promoted: bool
    state_version: int | None  # committed version when promoted
    build_id: str  # the candidate's build id
    rejected_path: Path | None  # <state>.rejected.json when the candidate was not promoted
    waived: tuple[str, ...]  # policy refusals waived (watch mode: the person approved the edit)
    seconds: Mapping[str, float]  # build, sandbox, evaluate, gate, commit
    decision_id: int = 0  # the decision's row in the ledger
    approved: tuple[str, ...] = ()  # changed paths an --approve pattern let through
    cached: tuple[str, ...] = ()  # build ids whose evidence came from the ledger's cache
    incumbent_version: int | None = None  # the state version active before the promotion
    warnings: tuple[str, ...] = ()  # one line each, e.g. the state file edited meanwhile

    @property
    def same_build(self) -> bool:
        """True when the candidate's build is the incumbent's: no generated code changed."""
        return self.build_id == self.decision.incumbent


def keep_rejected(state_path: Path, data: bytes) -> Path:
    """Write a candidate that was not promoted beside the state file, with the state file's
    permission bits (0600 when it is gone): a rejected edit is no more readable than the
    state it was meant to replace. Returns where it was kept."""
    try:
        mode = stat.S_IMODE(state_path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o600
    kept = rejected_path(state_path)
    try:
        atomic_write(kept, data, mode=mode)
    except OSError as exc:
        raise StorageError(
            f"{kept.name}: cannot keep the rejected candidate there ({exc.strerror}); it is in "
            "the ledger: rsi history --candidate N -o FILE"
        ) from None
    return kept


def p_value(stats: Mapping[str, object], require: str) -> float | None:
    """The held-out p-value the gate's question turns on (gain for better, loss for not-worse)."""
    value = stats.get("heldout_p_gain" if require == "better" else "heldout_p_loss")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def format_p(p: float | None) -> str:
    """``p=0.0012``; ``p<1e-300`` where the exact p-value underflows; ``p=-`` when none."""
    if p is None:
        return "p=-"
    return "p<1e-300" if p == 0.0 else f"p={p:.3g}"


def promote(
    project: Project,
    candidate_bytes: bytes,
    *,
    settings: CompileSettings,
    require: Require = "not-worse",
    data: Path | None = None,
    approve: Sequence[str] = (),
    waive_policy: bool = False,
    gate: GateSettings | None = None,
    seed: int = 0,
    source: str = "candidate",
    evaluate_timeout_s: float = DEFAULT_EVALUATE_TIMEOUT_S,
    saved: bytes | None = None,
) -> PromotionReport:
    """Gate ``candidate_bytes`` against the project's active build; promote or keep it.

    Raises :class:`StateError` for an invalid candidate and :class:`PolicyError` for one the
    safety policy refuses (both before anything is built). A rejection is not an error: the
    report says so, with the decision and where the candidate was kept. ``saved``: the bytes
    a person saved when ``candidate_bytes`` renumbers them (watch mode); a promotion records
    them as an alias of the committed version, and a state file holding them is left as is.
    Candidate bytes that are such an alias are taken for the version they were committed as.
    """
    seconds: dict[str, float] = {}
    ledger = project.ledger
    candidate_bytes = ledger.resolve(candidate_bytes)
    active = _active(project)
    incumbent_data = ledger.state(active.version).data
    incumbent = parse_state(incumbent_data, f"history version {active.version}")
    candidate = parse_state(candidate_bytes, source)
    if candidate.version == active.version and incumbent_data == candidate_bytes:
        resumed = _resume(project, candidate_bytes)
        if resumed is not None:
            return resumed
    _check_newer(ledger, candidate, source)
    policy = check_policy(incumbent, candidate, approve=approve, waive=waive_policy)

    gate = _with_noise_floor(gate or GateSettings(), ledger)
    clock = time.perf_counter()
    with project.pinned_candidate(candidate, candidate_bytes, settings) as built:
        seconds["build"] = time.perf_counter() - clock

        decision, latency, cached = _judge(
            project,
            active,
            built,
            hot_path=any(approves(section, p) for section in HOT_PATH for p in policy.paths),
            require=require,
            data=data,
            seed=seed,
            gate=gate,
            evaluate_timeout_s=evaluate_timeout_s,
            seconds=seconds,
        )

        clock = time.perf_counter()
        with project_lock(project.state_path, timeout_s=project.lock_timeout_s):
            _check_unchanged(project, active)
            if decision.promoted and not (built.path / MANIFEST).exists():
                raise LedgerError(
                    f"build {built.build_id} was deleted during the promotion (rsi gc?); "
                    "run rsi promote again"
                )
            decision_id = ledger.record_decision(
                decision,
                candidate_data=candidate_bytes,
                candidate_version=candidate.version,
                waived=policy.waived,
                latency=latency,
                commit_as=(
                    CommitRequest(
                        built.build_id, built.tier, candidate.safety.history_limit, saved=saved
                    )
                    if decision.promoted
                    else None
                ),
            )
            kept: Path | None = None
            warnings: tuple[str, ...] = ()
            if decision.promoted:
                warnings = _write_state_file(
                    ledger, project.state_path, {incumbent_data}, candidate_bytes
                )
            else:
                kept = keep_rejected(project.state_path, candidate_bytes)
        seconds["commit"] = time.perf_counter() - clock
    logger.info("promotion of %s: %s (%s)", built.build_id, decision.verdict, decision.reason)
    return PromotionReport(
        decision=decision,
        promoted=decision.promoted,
        state_version=candidate.version if decision.promoted else None,
        build_id=built.build_id,
        rejected_path=kept,
        waived=policy.waived,
        seconds={k: round(v, 4) for k, v in seconds.items()},
        decision_id=decision_id,
        approved=policy.approved,
        cached=tuple(cached),
        incumbent_version=active.version,
        warnings=warnings,
    )


def _judge(
    project: Project,
    active: Active,
    built: BuildResult,
    *,
    hot_path: bool,
    require: Require,
    data: Path | None,
    seed: int,
    gate: GateSettings,
    evaluate_timeout_s: float,
    seconds: dict[str, float],
) -> tuple[Decision, LatencySamples | None, list[str]]:
    """Sandbox, evidence and gate: the decision, latency samples, builds whose evidence was
    cached. Adds the time of each step to ``seconds``.

    Nothing of the candidate runs in this process: its first run, the evidence of every
    build not cached in the ledger and the interleaved latency run in one child process
    under ``evaluate_timeout_s`` (:func:`runtime.sandbox.first_run`).
    """
    ledger = project.ledger
    incumbent_dir = project.generated_dir / active.build_id
    if not (incumbent_dir / MANIFEST).exists():
        raise LedgerError(
            f"active build {active.build_id} of v{active.version} is missing from "
            f"{project.generated_dir}; run `rsi rollback --to {active.version}` to rebuild it"
        )
    fingerprint = data_fingerprint(data, seed)
    known = {
        build_id: ledger.evidence(build_id, seed, fingerprint)
        for build_id in (active.build_id, built.build_id)
    }
    cached = [b for b in (active.build_id, built.build_id) if known[b] is not None]
    dirs = {active.build_id: incumbent_dir, built.build_id: built.path}
    evaluation = Evaluation(
        data=data,
        seed=seed,
        gather=tuple(dirs[b] for b, found in known.items() if found is None),
        latency=(incumbent_dir, built.path) if hot_path else None,
        repeats=gate.latency_repeats,
        template_dir=project.template_dir,
    )
    logger.info(
        "judging %s in a sandbox child: first run, evidence of %d build(s)%s, limit %g s",
        built.build_id,
        len(evaluation.gather),
        ", latency A/B" if hot_path else "",
        evaluate_timeout_s,
    )
    clock = time.perf_counter()
    sandbox = first_run(built.path, timeout_s=evaluate_timeout_s, evaluation=evaluation)
    elapsed = time.perf_counter() - clock
    seconds["sandbox"] = elapsed - sandbox.evaluate_s
    seconds["evaluate"] = sandbox.evaluate_s
    if not sandbox.ok:
        stats: dict[str, Stat] = {
            "sandbox_phase": sandbox.phase,
            "sandbox_s": sandbox.seconds,
        }
        reason = f"sandbox: {sandbox.reason}"
        return (
            Decision(Verdict.REJECT, require, built.build_id, active.build_id, reason, stats),
            None,
            [],
        )
    for measured in sandbox.evidence:
        ledger.record_evidence(measured)
        known[measured.build_id] = measured
    before, after = known[active.build_id], known[built.build_id]
    if before is None or after is None:
        raise LedgerError(
            f"sandbox of {built.build_id} returned no evidence for "
            f"{active.build_id if before is None else built.build_id}"
        )
    clock = time.perf_counter()
    decision = decide(before, after, require=require, settings=gate, latency=sandbox.latency)
    seconds["gate"] = time.perf_counter() - clock
    return decision, sandbox.latency, cached


def _resume(project: Project, data: bytes) -> PromotionReport | None:
    """The report of a promotion of ``data`` already committed and active (a rerun after a
    kill between the commit and the state file's write): finish it, decide nothing again.
    """
    digest = hashlib.sha256(data).hexdigest()
    with project_lock(project.state_path, timeout_s=project.lock_timeout_s):
        record = next(
            (
                d
                for d in project.ledger.decisions(limit=1000)
                if d.verdict == Verdict.PROMOTE and d.candidate_sha256 == digest
            ),
            None,
        )
        if record is None:
            return None  # committed by `rsi build`, not by a promotion
        if record.committed_version is None:
            project.ledger.mark_committed(record.id, record.candidate_version)
        ledger = project.ledger
        before = {
            ledger.state(v).data
            for v in ledger.versions()
            if ledger.state(v).build_id == record.incumbent
        }
        warnings = _write_state_file(ledger, project.state_path, before, data)
    logger.info("promotion of %s was already committed; state file synced", record.candidate)
    decision = Decision(
        Verdict(record.verdict),
        "better" if record.require == "better" else "not-worse",
        record.candidate,
        record.incumbent,
        record.reason,
        {k: v for k, v in record.stats.items() if v is None or isinstance(v, float | int | str)},
    )
    return PromotionReport(
        decision=decision,
        promoted=True,
        state_version=record.candidate_version,
        build_id=record.candidate,
        rejected_path=None,
        waived=record.waived,
        seconds={},
        decision_id=record.id,
        warnings=warnings,
    )


def _active(project: Project) -> Active:
    active = project.ledger.active()
    if active is None:
        raise LedgerError(
            f"{project.state_path.name}: never built, so there is no incumbent to gate "
            "against; run `rsi build` first"
        )
    return active


def _check_newer(ledger: Ledger, candidate: RSIState, source: str) -> None:
    versions = ledger.versions()
    newest = versions[-1] if versions else 0
    if candidate.version <= newest:
        raise StateError(
            f"{source}: version {candidate.version} is not newer than the committed "
            f'{newest}; set "version" to {newest + 1}'
        )
    check_version_jump(source, candidate.version, newest)


def _with_noise_floor(gate: GateSettings, ledger: Ledger) -> GateSettings:
    """``gate`` with the latency noise floor of the latest ``rsi gate calibrate`` (if higher)."""
    measured = ledger.latency_noise_floor()
    if measured is None or measured <= gate.latency_noise_floor:
        return gate
    return replace(gate, latency_noise_floor=measured)


def _check_unchanged(project: Project, before: Active) -> None:
    now = project.ledger.active()
    if now != before:
        version = now.version if now else None
        raise LedgerError(
            f"{project.state_path.name}: the active state changed from v{before.version} to "
            f"v{version} during the promotion; run rsi promote again"
        )


def _write_state_file(
    ledger: Ledger, path: Path, replaceable: Collection[bytes], candidate: bytes
) -> tuple[str, ...]:
    """Write ``candidate`` (committed) over the incumbent's bytes, never over anyone else's
    edit; a file holding a save committed as ``candidate`` (an alias) is left as saved.

    Returns the warning (one line) when the file held another edit and was left alone.
    """
    try:
        current = read_state_file(path)
    except StateError:
        current = b""
    if current == candidate or ledger.resolve(current) == candidate:
        return ()
    if current != b"" and current not in replaceable:
        warning = (
            f"{path.name} was edited during the promotion; the promoted state is committed "
            "and active, the file keeps the edit (run `rsi status` to compare)"
        )
        logger.warning("%s", warning)
        return (warning,)
    atomic_write(path, candidate)
    return ()
