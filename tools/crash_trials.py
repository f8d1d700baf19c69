"""Crash trials: SIGKILL ``rsi build``, a promotion, ``rsi rollback``, ``rsi gc`` and
``rsi promote`` (through the gate) at random.

Two more kinds: ``pair`` promotes ``rsi_state.json`` while a second state file in the same
directory (``other.json``) is promoted concurrently and uncut (each keeps its own commit;
``other.json`` rolls back to its own bytes), and ``edit-rollback`` rolls back over an
uncommitted edit of the state file (the edit is the state file or a kept
``rsi_state.uncommitted-*.json`` copy, at every instant).

Each trial copies a prepared project (state v1 and v2 committed, v2 active), starts one
command as a subprocess, kills it with SIGKILL after a random delay drawn over the command's
measured duration, and checks, before anything else runs:

- the state file parses and is byte-identical to a committed version (or, for a promotion,
  to the new state the user wrote before the command: an edit must never be lost or torn);
- the ledger passes its integrity check and every stored state is the bytes that were given;
- the active build is one of the two allowed (before or after) and loads in a fresh process;
- every visible entry of ``generated/`` is a complete build whose artifacts match its
  manifest (staging dirs are hidden ``.tmp-<pid>-*`` names, never taken for builds).

Then the same command runs again, uncut, and must succeed on its own: afterwards the state
file, the ledger and the active build are the expected ones and no staging dir or temp file
is left. Kills hit either the command's process alone (its worker processes live on, as
after ``kill -9 <pid>``) or its whole process group.

The ``gate`` kind runs ``rsi promote -v cand.json`` (pure-Python tier, generated stories;
the incumbent's evidence cached in the ledger). Its kill is aimed at a phase by the
command's log: a random time after start (start-up, build, sandbox), after the sandbox
child started (its first run and the candidate's evaluation), after it passed (storing the
evidence, the gate), or within 0.3 s of the decision (recording it, the commit, the state
file). Alternate trials use a
candidate the gate promotes and one it rejects (the tracking expert zeroed, with
``--approve '*'``). Besides the invariants above: every evaluation and decision in the
ledger is whole (``Ledger.check_gate_records``), an active candidate has its promotion
decision, and a ``rsi_state.rejected.json`` is the candidate's
exact bytes. The uncut rerun must reach the verdict an uncut run reaches.

usage: PYTHONPATH=. .venv/bin/python tools/crash_trials.py --trials 60 [--cython 0.2]
       PYTHONPATH=. .venv/bin/python tools/crash_trials.py --ops gate --trials 40
       PYTHONPATH=. .venv/bin/python tools/crash_trials.py --corrupt 20 (corrupted files)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codegen.state import load_state, read_state_file  # noqa: E402
from runtime.ledger import Ledger, ledger_path  # noqa: E402

__all__ = [
    "Base",
    "CorruptionResult",
    "Trial",
    "TrialResult",
    "main",
    "prepare_base",
    "prepare_corruption_base",
    "run_corruption_trial",
    "run_corruption_trials",
    "run_trial",
    "run_trials",
]

OPS = ("build", "promote", "rollback", "gc", "pair", "edit-rollback", "gate")
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
STATE = "rsi_state.json"
OTHER = "other.json"  # a second state file in the project directory (its own history)

CANDIDATE = "cand.json"
#: Where a gate trial's kill is aimed: after the command's log shows this line (``""``:
#: from the start), plus a random delay of up to the seconds given.
GATE_PHASES = {
    "start": ("", 20.0),
    "evaluate": ("rsi: info: runtime.promote: judging", 6.0),
    "gate": ("rsi: info: runtime.sandbox: ", 1.0),
    "commit": ("rsi: info: runtime.gate: ", 0.3),
}
REJECTED = "rsi_state.rejected.json"
# Measure the incumbent (v2) once in the base project, and build both gate candidates, so a
# gate trial's time goes to the sandbox, the candidate's evaluation, the gate and the commit.
WARM_GATE = (
    "import sys; from pathlib import Path; from codegen.state import parse_state; "
    "from codegen.toolchain import CompileSettings; from runtime.evidence import gather; "
    "from runtime.project import Project; p = Project(Path(sys.argv[1])); "
    "p.ledger.record_evidence(gather(p.load_active(), data=None)); "
    "[p.build_candidate(parse_state(Path(f).read_bytes()), Path(f).read_bytes(), "
    "CompileSettings(backend='python')) for f in sys.argv[2:]]"
)

LOAD_ACTIVE = (
    "import sys; from pathlib import Path; from runtime.project import Project; "
    "b = Project(Path(sys.argv[1])).load_active(); print(b.build_id, b.tier, len(b.modules))"
)


class TrialError(Exception):
    """An invariant did not hold."""


@dataclass(frozen=True)
class Base:
    """The prepared project every trial starts from."""

    path: Path
    committed: dict[int, bytes]
    tiers: dict[int, str]
    cython: bool
    other: dict[int, bytes]  # other.json: v1 committed and active


@dataclass(frozen=True)
class Trial:
    """One kill: which command, which backend, when, and whom."""

    index: int
    op: str
    backend: str
    delay: float
    group: bool  # kill the whole process group, not only the command
    rebuild: bool = False  # rollback whose target build was deleted (it must rebuild)
    reject: bool = False  # gate: the candidate the gate rejects (else the one it promotes)
    promotes: bool = True  # gate: what an uncut run of this candidate decides
    phase: str = ""  # gate: the key of GATE_PHASES the kill is aimed at


@dataclass
class TrialResult:
    """What one trial saw."""

    trial: Trial
    killed: bool = False
    staging_left: int = 0
    pending_state: bool = False
    error: str | None = None
    seconds: float = 0.0


def rsi_cmd(state: Path, *args: str) -> list[str]:
    """The ``rsi`` command line run as a subprocess of this interpreter."""
    return [sys.executable, "-m", "runtime.cli", *args, "--state", str(state)]


def _run_ok(cmd: list[str], what: str, ok: tuple[int, ...] = (0,), cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600, cwd=cwd)
    if proc.returncode not in ok:
        raise TrialError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return proc.stdout


def _state_with(data: bytes, version: int, rag: float) -> bytes:
    doc = json.loads(data)
    doc["version"] = version
    doc["scoring"]["rag"] = rag
    return (json.dumps(doc, indent=2) + "\n").encode()


def _write_as_user(path: Path, data: bytes) -> None:
    # An editor's atomic save: the command under test must never see a half-written file.
    tmp = path.with_name(f"{path.name}.editor")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def prepare_base(work: Path, *, cython: bool) -> Base:
    """A project with v1 and v2 committed (pure tier), v2 active; caches warm."""
    root = work / "base"
    root.mkdir(parents=True)
    state = root / STATE
    v1 = (REPO / STATE).read_bytes()
    v1 = _state_with(v1, 1, 1.0)
    state.write_bytes(v1)
    _run_ok(rsi_cmd(state, "build", "--backend", "python"), "base build v1")
    v2 = _state_with(v1, 2, 2.0)
    _write_as_user(state, v2)
    if cython:  # warm the compiled cache (shared utility, every module of v2)
        _run_ok(rsi_cmd(state, "build", "--backend", "cython"), "base build v2 (cython)")
    _run_ok(rsi_cmd(state, "build", "--backend", "python"), "base build v2")
    other = _state_with(v1, 1, 0.5)
    (root / OTHER).write_bytes(other)
    _run_ok(rsi_cmd(root / OTHER, "build", "--backend", "python"), "base build other.json v1")
    return Base(root, {1: v1, 2: v2}, {1: "python", 2: "python"}, cython, {1: other})


def _ledger(root: Path, name: str = STATE) -> Ledger:
    return Ledger(ledger_path(root / name))


@dataclass(frozen=True)
class _Plan:
    args: tuple[str, ...]
    expect_version: int
    expect_tier: str
    pending: bytes | None  # the user's edit the command is to commit
    before: int = 2  # the active version before the command
    committed: bytes | None = None  # a version 3 committed while preparing
    gone: str | None = None  # a build the command deletes
    other_edit: bytes | None = None  # other.json v2, promoted concurrently and uncut
    kept_edit: bool = False  # ``pending`` is an uncommitted edit the rollback must keep
    candidate: bytes | None = None  # gate: the candidate file's bytes (version 3)
    ok_codes: tuple[int, ...] = (0,)  # exit statuses of an uncut run


def gate_candidate(base: Base, reject: bool) -> bytes:
    """Version 3 for a gate trial: within the step bound, or (``reject``) an expert zeroed."""
    doc = json.loads(_state_with(base.committed[2], 3, 2.5))
    if reject:
        doc["experts"]["tracker"]["weight"] = 0.0
    return (json.dumps(doc, indent=2) + "\n").encode()


def _gate_args(reject: bool) -> tuple[str, ...]:
    approve = ("--approve", "*") if reject else ()
    return ("promote", "-v", CANDIDATE, "--backend", "python", *approve)


def _prepare_trial(base: Base, trial: Trial, root: Path, rng: random.Random) -> _Plan:
    shutil.copytree(base.path, root, symlinks=True)
    state, generated = root / STATE, root / "generated"
    if trial.op == "gate":
        v3 = gate_candidate(base, trial.reject)
        (root / CANDIDATE).write_bytes(v3)
        return _Plan(
            _gate_args(trial.reject),
            3 if trial.promotes else 2,
            "python",
            None,
            candidate=v3,
            ok_codes=(0,) if trial.promotes else (1,),
        )
    if trial.op == "build":
        # A cold build of the committed state: no build of this backend and an empty cache
        # (but mypy's own: a cold mypy run is 10 s of one phase, not more kill points).
        for entry in (generated / ".cache").iterdir():
            if entry.name != "mypy_cache":
                shutil.rmtree(entry)
        for build in generated.iterdir():
            manifest = build / "manifest.json"
            if manifest.exists() and json.loads(manifest.read_text())["tier"] != "python":
                shutil.rmtree(build)
        return _Plan(("build", "--backend", trial.backend), 2, trial.backend, None)
    if trial.op in ("promote", "pair"):
        v3 = _state_with(base.committed[2], 3, round(rng.uniform(0.0, 10.0), 3))
        _write_as_user(state, v3)
        other = None
        if trial.op == "pair":
            other = _state_with(base.other[1], 2, round(rng.uniform(0.0, 10.0), 3))
            _write_as_user(root / OTHER, other)
        return _Plan(("build", "--backend", trial.backend), 3, trial.backend, v3, other_edit=other)
    if trial.op == "edit-rollback":
        edit = _state_with(base.committed[2], 3, round(rng.uniform(0.0, 10.0), 3))
        _write_as_user(state, edit)
        return _Plan(("rollback", "--to", "1"), 1, base.tiers[1], edit, kept_edit=True)
    if trial.op == "gc":
        # Commit v3 with a history of two: v1 drops out, and its build is garbage.
        doc = json.loads(_state_with(base.committed[2], 3, round(rng.uniform(0.0, 10.0), 3)))
        doc["safety"]["history_limit"] = 2
        v3 = (json.dumps(doc, indent=2) + "\n").encode()
        garbage = _ledger(root).state(1).build_id
        _write_as_user(state, v3)
        _run_ok(rsi_cmd(state, "build", "--backend", "python"), "gc trial set-up")
        return _Plan(("gc",), 3, "python", None, before=3, committed=v3, gone=garbage)
    if trial.rebuild:
        target = _ledger(root).state(1).build_id
        shutil.rmtree(generated / target)
    return _Plan(("rollback", "--to", "1"), 1, base.tiers[1], None)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_builds(generated: Path) -> int:
    """Every visible entry must be a complete build; return how many staging dirs exist."""
    staging = 0
    for entry in sorted(generated.iterdir()):
        if entry.name.startswith(".tmp-"):
            staging += 1
            continue
        if entry.name.startswith("."):
            continue
        manifest_path = entry / "manifest.json"
        if not entry.is_dir() or not manifest_path.is_file():
            raise TrialError(f"generated/{entry.name} is visible but is not a complete build")
        manifest = json.loads(manifest_path.read_text())
        if manifest["build_id"] != entry.name:
            raise TrialError(f"generated/{entry.name}: manifest names {manifest['build_id']}")
        for name, info in manifest["modules"].items():
            artifact = entry / info["artifact"]
            if not artifact.is_file() or _sha(artifact.read_bytes()) != info["artifact_sha256"]:
                raise TrialError(f"generated/{entry.name}: module {name} is torn or missing")
    cache = generated / ".cache"
    if cache.is_dir():
        staging += sum(1 for p in cache.iterdir() if p.name.startswith(".tmp-"))
    return staging


def _check_active_loads(state: Path) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", LOAD_ACTIVE, str(state)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    if out.returncode != 0:
        raise TrialError(f"active build does not load: {out.stderr.strip()[-400:]}")
    build_id, tier, _ = out.stdout.split()
    return build_id, tier


def _check_invariants(
    root: Path, known: dict[int, bytes], allowed_state: set[bytes], allowed_active: set[int]
) -> tuple[int, bytes]:
    state = root / STATE
    data = read_state_file(state)
    load_state(state)
    ledger = _ledger(root)
    ledger.check_integrity()
    stored = {v: ledger.state(v).data for v in ledger.versions()}
    for version, blob in stored.items():
        if known.get(version) != blob:
            raise TrialError(f"ledger holds version {version} with bytes nobody committed")
    if data not in set(stored.values()) | allowed_state:
        raise TrialError("state file is neither a committed version nor the user's edit")
    active = ledger.active()
    if active is None or active.version not in allowed_active:
        raise TrialError(f"active {active} is not one of versions {sorted(allowed_active)}")
    if active.build_id not in {b.build_id for b in ledger.builds(active.version)}:
        raise TrialError(f"active build {active.build_id} is not a build of its version")
    build_id, _ = _check_active_loads(state)
    if build_id != active.build_id:
        raise TrialError(f"loaded build {build_id}, ledger says {active.build_id}")
    return _check_builds(root / "generated"), data


def _check_edit_kept(root: Path, edit: bytes | None, data: bytes) -> None:
    """The user's uncommitted edit is the state file or a kept copy beside it."""
    if data == edit:
        return
    kept = [p.read_bytes() for p in root.glob("rsi_state.uncommitted-*.json")]
    if edit not in kept:
        raise TrialError("the uncommitted edit is neither the state file nor a kept copy")


def _check_other(root: Path, base: Base, edit: bytes) -> None:
    """other.json kept its own commit, and rolls back to its own bytes."""
    other = _ledger(root, OTHER)
    other.check_integrity()
    if other.versions() != [1, 2] or other.state(2).data != edit:
        raise TrialError(f"{OTHER}: commit lost (history {other.versions()})")
    if other.state(1).data != base.other[1]:
        raise TrialError(f"{OTHER}: history holds bytes it never committed")
    _run_ok(rsi_cmd(root / OTHER, "rollback"), f"rollback of {OTHER}")
    if (root / OTHER).read_bytes() != base.other[1]:
        raise TrialError(f"{OTHER}: rollback did not restore its own v1")


def _wait_for(trial: Trial, proc: subprocess.Popen[bytes], log: Path) -> float:
    """Seconds still to wait before the kill: for a gate trial, wait for its phase's log
    line first. A command that ends without that line fails the trial: every uncut
    ``rsi promote -v`` logs each phase, so the marker no longer matches the log format (the
    trial would pass without ever killing that phase)."""
    if trial.op != "gate" or not GATE_PHASES[trial.phase][0]:
        return trial.delay
    marker = GATE_PHASES[trial.phase][0].encode()
    while marker not in log.read_bytes():
        if proc.poll() is not None and marker not in log.read_bytes():  # read after the end
            raise TrialError(f"the command ended without the {trial.phase} phase's log line")
        time.sleep(0.01)
    return trial.delay


def _check_gate_records(root: Path, candidate: bytes) -> None:
    """Evaluations and decisions whole; an active candidate has its decision; kept bytes."""
    ledger = _ledger(root)
    ledger.check_gate_records()
    active = ledger.active()
    digest = _sha(candidate)
    if active is not None and active.version == 3:
        decisions = ledger.decisions(limit=100)
        if not any(d.verdict == "promote" and d.candidate_sha256 == digest for d in decisions):
            raise TrialError("version 3 is active without its promotion decision")
    rejected = root / REJECTED
    if rejected.exists() and rejected.read_bytes() != candidate:
        raise TrialError("rsi_state.rejected.json is not the candidate's exact bytes")


def _gate_outcomes(base: Base, work: Path) -> dict[bool, tuple[float, bool]]:
    """Seconds and verdict (promoted?) of an uncut gate run of each candidate."""
    out = {}
    for reject in (False, True):
        root = work / "timing"
        shutil.copytree(base.path, root, symlinks=True)
        (root / CANDIDATE).write_bytes(gate_candidate(base, reject))
        start = time.monotonic()
        proc = subprocess.run(
            rsi_cmd(root / STATE, *_gate_args(reject)),
            capture_output=True,
            text=True,
            env=ENV,
            timeout=600,
            cwd=root,
        )
        if proc.returncode not in (0, 1):
            raise TrialError(f"timing gate run failed: {proc.stderr.strip()[-400:]}")
        out[reject] = (time.monotonic() - start, proc.returncode == 0)
        shutil.rmtree(root)
    return out


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _reap_group(pgid: int, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
        while _group_alive(pgid):
            time.sleep(0.05)


def run_trial(base: Base, trial: Trial, work: Path, rng: random.Random) -> TrialResult:
    """Run one trial in ``work/trial-N``; the dir is removed unless the trial failed."""
    result = TrialResult(trial)
    start = time.monotonic()
    root = work / f"trial-{trial.index:04d}"
    try:
        plan = _prepare_trial(base, trial, root, rng)
        known = dict(base.committed)
        for extra in (plan.pending, plan.committed, plan.candidate):
            if extra is not None:
                known[3] = extra
        state = root / STATE
        log = (work / f"trial-{trial.index:04d}.log").open("w")
        sibling = (
            subprocess.Popen(
                rsi_cmd(root / OTHER, "build", "--backend", "python"),
                env=ENV,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
            if plan.other_edit is not None
            else None
        )
        proc = subprocess.Popen(
            rsi_cmd(state, *plan.args),
            env=ENV,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=root,
        )
        try:
            proc.wait(timeout=_wait_for(trial, proc, work / f"trial-{trial.index:04d}.log"))
        except subprocess.TimeoutExpired:
            result.killed = True
            if trial.group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.send_signal(signal.SIGKILL)
        rc = proc.wait()
        sibling_rc = sibling.wait(timeout=600) if sibling is not None else 0
        log.close()
        if not result.killed and rc not in plan.ok_codes:
            raise TrialError(f"uncut command failed with {rc}")
        if sibling_rc != 0:
            raise TrialError(f"the concurrent build of {OTHER} failed with {sibling_rc}")
        allowed_state = {plan.pending} if plan.pending is not None else set()
        allowed_active = {plan.before, plan.expect_version}
        result.staging_left, data = _check_invariants(root, known, allowed_state, allowed_active)
        if plan.candidate is not None:
            _check_gate_records(root, plan.candidate)
        committed = _ledger(root).versions()
        result.pending_state = data == plan.pending and plan.expect_version not in committed
        if plan.kept_edit:
            _check_edit_kept(root, plan.pending, data)
        # Orphaned compiler workers may still be running: the next command must cope with
        # that, but its leftovers are only checked once they have exited.
        _reap_group(proc.pid, 120.0)
        _run_ok(rsi_cmd(state, *plan.args), "recovery command", plan.ok_codes, root)
        _run_ok(rsi_cmd(state, "status"), "status after recovery")
        staging, data = _check_invariants(root, known, set(), {plan.expect_version})
        active = _ledger(root).active()
        assert active is not None
        if (active.version, active.tier) != (plan.expect_version, plan.expect_tier):
            raise TrialError(f"after recovery: active {active}, expected v{plan.expect_version}")
        if data != known[plan.expect_version]:
            raise TrialError("after recovery the state file is not the expected version")
        if staging:
            raise TrialError(f"{staging} staging dirs left after the recovery command")
        if list(root.glob(f".{STATE}.*.tmp")):
            raise TrialError("temp files of the state file left after the recovery command")
        if plan.gone and (root / "generated" / plan.gone).exists():
            raise TrialError(f"gc left the unused build {plan.gone}")
        if plan.kept_edit:
            _check_edit_kept(root, plan.pending, data)
            if list(root.glob(".rsi_state.uncommitted-*.tmp")):
                raise TrialError("temp files of a kept edit left after the recovery command")
        if plan.other_edit is not None:
            _check_other(root, base, plan.other_edit)
        if plan.candidate is not None:
            _check_gate_records(root, plan.candidate)
            if plan.expect_version == 2 and (root / REJECTED).read_bytes() != plan.candidate:
                raise TrialError("after recovery the rejected candidate is not kept")
    except (TrialError, OSError, ValueError, subprocess.SubprocessError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.seconds = time.monotonic() - start
        if result.error is None:
            shutil.rmtree(root, ignore_errors=True)
            (work / f"trial-{trial.index:04d}.log").unlink(missing_ok=True)
    return result


def _uncut_seconds(base: Base, work: Path, op: str, backend: str, rebuild: bool) -> float:
    trial = Trial(-100, op, backend, 1e9, False, rebuild)
    root = work / "timing"
    plan = _prepare_trial(base, trial, root, random.Random(0))
    start = time.monotonic()
    _run_ok(rsi_cmd(root / STATE, *plan.args), f"timing {op}")
    seconds = time.monotonic() - start
    shutil.rmtree(root)
    return seconds


def run_trials(
    n: int, *, cython_share: float, seed: int, work: Path, ops: tuple[str, ...] = OPS
) -> tuple[list[TrialResult], Base]:
    """Prepare a base project, then run ``n`` trials; return their results."""
    rng = random.Random(seed)
    base = prepare_base(work, cython=cython_share > 0)
    plans: list[tuple[str, str, bool, bool]] = []
    for i in range(n):
        op = ops[i % len(ops)]
        compiles = op in ("build", "promote", "pair")
        backend = "cython" if compiles and rng.random() < cython_share else "python"
        rebuild = op == "rollback" and rng.random() < 0.3
        plans.append((op, backend, rebuild, rng.random() < 0.5))
    kinds = {(op, backend, rebuild) for op, backend, rebuild, _ in plans if op != "gate"}
    durations = {kind: _uncut_seconds(base, work, *kind) for kind in sorted(kinds)}
    for kind, seconds in sorted(durations.items()):
        print(f"uncut {kind[0]:8} {kind[1]:7} rebuild={kind[2]!s:5} {seconds:6.2f} s")
    gate: dict[bool, tuple[float, bool]] = {}
    if "gate" in ops:
        warm = [str(base.path / f"cand-{r}.json") for r in (False, True)]
        for path, reject in zip(warm, (False, True), strict=True):
            Path(path).write_bytes(gate_candidate(base, reject))
        _run_ok([sys.executable, "-c", WARM_GATE, str(base.path / STATE), *warm], "gate warm-up")
        for path in warm:
            Path(path).unlink()
        gate = _gate_outcomes(base, work)
        for reject, (seconds, promoted) in sorted(gate.items()):
            print(
                f"uncut gate     reject-candidate={reject!s:5} {seconds:6.2f} s promoted={promoted}"
            )
    results = []
    for i, (op, backend, rebuild, group) in enumerate(plans):
        # Most of a short command is interpreter start-up: skew kills towards its end so
        # publishing and committing are hit too (a few land after it finished).
        if op == "gate":
            reject = (i // len(ops)) % 2 == 1
            promotes = gate[reject][1]
            phase = sorted(GATE_PHASES)[(i // len(ops)) // 2 % len(GATE_PHASES)]
            delay = rng.uniform(0.0, GATE_PHASES[phase][1])
            trial = Trial(
                i, op, backend, delay, group, reject=reject, promotes=promotes, phase=phase
            )
            result = run_trial(base, trial, work, rng)
            results.append(result)
            status = "ok" if result.error is None else f"FAIL {result.error}"
            print(
                f"trial {i:3} gate     {'reject' if reject else 'promote':7} kill "
                f"{'group' if group else 'pid':5} {phase:8} +{delay:5.2f} s "
                f"killed={result.killed!s:5} "
                f"staging={result.staging_left} {result.seconds:5.1f} s {status}",
                flush=True,
            )
            continue
        delay = rng.uniform(0.2, 1.1) * durations[(op, backend, rebuild)]
        trial = Trial(i, op, backend, delay, group, rebuild)
        result = run_trial(base, trial, work, rng)
        status = "ok" if result.error is None else f"FAIL {result.error}"
        print(
            f"trial {i:3} {op:8} {backend:7} kill {'group' if group else 'pid':5} "
            f"at {delay:5.2f} s killed={result.killed!s:5} staging={result.staging_left} "
            f"pending={result.pending_state!s:5} {result.seconds:5.1f} s {status}",
            flush=True,
        )
        results.append(result)
    return results, base


def summary(results: list[TrialResult]) -> str:
    """One line: counts by kind and outcome."""
    ops = Counter(r.trial.op for r in results)
    passed = sum(r.error is None for r in results)
    return (
        f"crash trials: {len(results)} run, {passed} passed, {len(results) - passed} failed "
        f"(build {ops['build']}, promote {ops['promote']}, rollback {ops['rollback']}, "
        f"gc {ops['gc']}, two state files {ops['pair']}, "
        f"rollback over an uncommitted edit {ops['edit-rollback']}, gate {ops['gate']}; "
        f"cython {sum(r.trial.backend == 'cython' for r in results)}; "
        f"killed mid-command {sum(r.killed for r in results)}; "
        f"process-group kills {sum(r.trial.group and r.killed for r in results)}; "
        f"promotions killed before committing the user's edit (kept intact) "
        f"{sum(r.pending_state for r in results)}; "
        f"trials with staging dirs left by the kill {sum(r.staging_left > 0 for r in results)}, "
        "all removed by the next command)"
    )


# --- Trial kind: corrupted cache entries and build artifacts ------------------------------
#
# A base project has v1 (pure tier) and v2 (compiled tier) committed, v2 active, so the cache
# holds sealed .py and .so entries and the Cython shared utility module. Each trial damages
# 1-3 random files (cache artifacts, seals, build artifacts, manifests) in one of several
# ways, then runs a random command (build, eval, rollback, or a build whose build dirs were
# deleted so that it reuses the cache). A sweep then makes every build and cache entry be
# checked: both versions are rolled back to, then rebuilt from the cache with no build dir.
# Counted: processes killed by a signal (SIGBUS, SIGSEGV), files of published builds holding
# damaged bytes, commands that failed, and damaged files still damaged after the sweep.

CORRUPTIONS = ("truncate", "flip-byte", "delete", "zero-fill", "garbage-non-utf8")
CORRUPTION_OPS = ("build", "eval", "rollback", "rebuild-from-cache")


@dataclass
class CorruptionResult:
    """What one corruption trial did and saw."""

    index: int
    op: str
    damaged: list[str]
    signal_deaths: int = 0
    bad_publishes: int = 0
    undetected: int = 0
    warnings: int = 0
    error: str | None = None
    seconds: float = 0.0


def prepare_corruption_base(work: Path, *, compiled: str) -> tuple[Path, dict[str, str]]:
    """A project with v1 (python) and v2 (``compiled``) committed, v2 active; the good sha256
    of every file under ``generated/`` (build artifacts, manifests, cache entries)."""
    root = work / "corruption-base"
    root.mkdir(parents=True)
    state = root / STATE
    v1 = _state_with((REPO / STATE).read_bytes(), 1, 1.0)
    state.write_bytes(v1)
    _run_ok(rsi_cmd(state, "build", "--backend", "python"), "corruption base v1")
    _write_as_user(state, _state_with(v1, 2, 2.0))
    _run_ok(rsi_cmd(state, "build", "--backend", compiled), "corruption base v2")
    return root, _good_files(root / "generated")


def _good_files(generated: Path) -> dict[str, str]:
    good: dict[str, str] = {}
    for path in sorted(generated.rglob("*")):
        rel = path.relative_to(generated)
        if path.is_file() and not _memo(rel):
            good[str(rel)] = _sha(path.read_bytes())
    return good


def _memo(rel: Path) -> bool:
    # Render/check memos and plans are not artifacts: a damaged memo costs a re-render.
    return rel.parts[0] == ".cache" and rel.parts[1] in ("black", "checked", "mypy_cache", "plans")


def _damage(path: Path, how: str, rng: random.Random) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: rng.randrange(0, max(1, len(data)))])
    elif how == "flip-byte":
        flipped = bytearray(data)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(flipped))
    elif how == "delete":
        path.unlink()
    elif how == "zero-fill":
        path.write_bytes(bytes(len(data)))
    else:
        path.write_bytes(bytes(rng.randrange(128, 256) for _ in range(64)) + data[64:])


def _corruption_command(root: Path, op: str, compiled: str) -> list[list[str]]:
    state = root / STATE
    if op == "build":
        return [rsi_cmd(state, "build", "--backend", compiled)]
    if op == "eval":
        return [rsi_cmd(state, "eval", "--backend", compiled, "--split", "heldout")]
    if op == "rollback":
        return [rsi_cmd(state, "rollback", "--to", "1"), rsi_cmd(state, "rollback", "--to", "2")]
    for build in (root / "generated").iterdir():
        if not build.name.startswith("."):
            shutil.rmtree(build)
    shutil.rmtree(root / "generated" / ".cache" / "plans", ignore_errors=True)
    return [rsi_cmd(state, "build", "--backend", compiled)]


def _run_counted(cmd: list[str], result: CorruptionResult, log: Path) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd[2:])}\n{proc.stdout}{proc.stderr}rc={proc.returncode}\n")
    result.warnings += proc.stderr.count("discarded, it is")
    if proc.returncode < 0:
        result.signal_deaths += 1
        raise TrialError(f"{cmd[3]} died of signal {-proc.returncode}")
    if proc.returncode != 0:
        raise TrialError(f"{cmd[3]} failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")


def _bad_publishes(generated: Path, damaged: set[str]) -> int:
    """Files of published builds that hold damaged bytes (a recompiled artifact may differ
    from the original in its bytes, a damaged one must never be published)."""
    bad = 0
    for path in generated.rglob("*"):
        rel = path.relative_to(generated)
        if not rel.parts[0].startswith(".") and path.is_file():
            bad += _sha(path.read_bytes()) in damaged
    return bad


def run_corruption_trial(
    base: Path, good: dict[str, str], index: int, compiled: str, work: Path, rng: random.Random
) -> CorruptionResult:
    """Damage files in a copy of ``base``, run a command and the sweep; count what went wrong."""
    root = work / f"corrupt-{index:04d}"
    log = work / f"corrupt-{index:04d}.log"
    op = rng.choice(CORRUPTION_OPS)
    result = CorruptionResult(index, op, [])
    start = time.monotonic()
    try:
        shutil.copytree(base, root, symlinks=True)
        generated = root / "generated"
        # Deleting the build dirs would erase damage to them undetected: cache only, then.
        pool = sorted(r for r in good if op != "rebuild-from-cache" or r.startswith(".cache"))
        targets = rng.sample(pool, k=rng.randint(1, 3))
        damaged: dict[str, str | None] = {}
        for rel in targets:
            how = rng.choice(CORRUPTIONS)
            _damage(generated / rel, how, rng)
            path = generated / rel
            damaged[rel] = _sha(path.read_bytes()) if path.exists() else None
            result.damaged.append(f"{rel}:{how}")
        for cmd in _corruption_command(root, op, compiled):
            _run_counted(cmd, result, log)
        # The sweep: check every build, then rebuild both versions from the cache alone.
        state = root / STATE
        sweep = [rsi_cmd(state, "rollback", "--to", "1"), rsi_cmd(state, "rollback", "--to", "2")]
        for cmd in sweep:
            _run_counted(cmd, result, log)
        bad_bytes = {sha for sha in damaged.values() if sha is not None}
        result.bad_publishes = _bad_publishes(generated, bad_bytes)
        for build in generated.iterdir():
            if not build.name.startswith("."):
                shutil.rmtree(build)
        shutil.rmtree(generated / ".cache" / "plans", ignore_errors=True)
        for cmd in sweep:
            _run_counted(cmd, result, log)
        result.bad_publishes += _bad_publishes(generated, bad_bytes)
        _check_builds(generated)
        _check_active_loads(state)
        # Every damaged file is now good again or gone (discarded, or a build not rebuilt).
        for rel, bad_sha in damaged.items():
            path = generated / rel
            if path.exists() and bad_sha is not None and _sha(path.read_bytes()) == bad_sha:
                result.undetected += 1
        if result.bad_publishes or result.undetected:
            raise TrialError(
                f"{result.bad_publishes} bad files published, {result.undetected} undetected"
            )
    except (TrialError, OSError, ValueError, subprocess.SubprocessError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.seconds = time.monotonic() - start
        if result.error is None:
            shutil.rmtree(root, ignore_errors=True)
            log.unlink(missing_ok=True)
    return result


def run_corruption_trials(
    n: int, *, compiled: str, seed: int, work: Path
) -> list[CorruptionResult]:
    """Prepare the corruption base project, then run ``n`` corruption trials."""
    rng = random.Random(seed)
    base, good = prepare_corruption_base(work, compiled=compiled)
    results = []
    for i in range(n):
        result = run_corruption_trial(base, good, i, compiled, work, rng)
        status = "ok" if result.error is None else f"FAIL {result.error}"
        print(
            f"corrupt {i:3} {result.op:18} {','.join(result.damaged)} "
            f"warnings={result.warnings} {result.seconds:5.1f} s {status}",
            flush=True,
        )
        results.append(result)
    return results


def corruption_summary(results: list[CorruptionResult]) -> str:
    """One line: corruption trials, corruptions, and what went wrong."""
    ops = Counter(r.op for r in results)
    kinds = Counter(d.rsplit(":", 1)[1] for r in results for d in r.damaged)
    return (
        f"corruption trials: {len(results)} run, {sum(r.error is None for r in results)} "
        f"passed; {sum(len(r.damaged) for r in results)} files damaged "
        f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); ops "
        f"{', '.join(f'{k} {v}' for k, v in sorted(ops.items()))}; corrupt loads "
        f"(signal deaths + bad bytes published) "
        f"{sum(r.signal_deaths + r.bad_publishes for r in results)}; undetected "
        f"{sum(r.undetected for r in results)}; warnings printed {sum(r.warnings for r in results)}"
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: run the trials, print one line per trial and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--cython", type=float, default=0.2, help="share of cython trials")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument(
        "--corrupt",
        type=int,
        default=0,
        metavar="N",
        help="run N corrupted-cache-entry trials instead of the kill trials",
    )
    parser.add_argument("--corrupt-backend", choices=("python", "cython"), default="cython")
    parser.add_argument(
        "--ops", default=",".join(OPS), help=f"comma-separated kinds (default {','.join(OPS)})"
    )
    args = parser.parse_args(argv)
    ops = tuple(args.ops.split(","))
    if not set(ops) <= set(OPS):
        parser.error(f"--ops: choose from {', '.join(OPS)}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rsi-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if args.corrupt:
        damaged = run_corruption_trials(
            args.corrupt, compiled=args.corrupt_backend, seed=args.seed, work=work
        )
        print(corruption_summary(damaged) + f" in {time.monotonic() - started:.0f} s")
        if any(r.error for r in damaged):
            print(f"failing trial dirs kept under {work}")
            return 1
        shutil.rmtree(work, ignore_errors=True)
        return 0
    results, _ = run_trials(
        args.trials, cython_share=args.cython, seed=args.seed, work=work, ops=ops
    )
    print(summary(results) + f" in {time.monotonic() - started:.0f} s")
    failed = [r for r in results if r.error]
    if failed:
        print(f"failing trial dirs kept under {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
