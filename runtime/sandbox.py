"""First run of a candidate build in a child process, before any serving process loads it,
and the measurements the gate needs, under the same time limit.

The child imports the build (artifacts verified against the manifest), runs every module's
``rsi_selftest()``, checks that a compiled build's tiers agree (its rendered ``.py`` sources
interpreted against its artifacts, with the differential test's tolerances), and answers a
few generated bAbI questions with the model over the build. Asked to (an
:class:`Evaluation`), it then gathers the gate's evidence (:func:`runtime.evidence.gather`)
for the builds named, and times the incumbent and the candidate interleaved
(:func:`runtime.evidence.measure_latency`, which needs both builds in one process), and
sends the results back as one JSON line. It reports each phase as it starts, so a crash
(SIGSEGV, SIGBUS, abort), a hang past ``timeout_s`` (the whole process group is killed) or a
failure is reported with the phase it happened in. The parent never imports the build.

Run by hand: ``python -m runtime.sandbox generated/<build id>``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the gate imports scipy: the CLI imports this module for its defaults
    from runtime.gate import Evidence, LatencySamples, SplitOutcome

__all__ = [
    "SandboxReport",
    "Evaluation",
    "first_run",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_EVALUATE_TIMEOUT_S",
    "STORIES_PER_TASK",
]

logger = logging.getLogger(__name__)

#: Import, self-tests and a few answers take 1-3 s; a minute means the build hangs.
DEFAULT_TIMEOUT_S = 60.0
#: First run, evidence and latency together. A compiled decision on ~2,000 held-out and
#: ~2,000 hidden questions takes 3-20 s (quiet to badly overloaded machine); the slowest
#: legitimate case, a pure-tier build of the heaviest model on the real files with neither
#: build's evidence cached and the latency A/B, took 649 s at load average 13 on 2 cores
#: (``tools/bench_gate.py --worst-case``). 1,200 s leaves that a factor of almost 2 and
#: still bounds a hang to 20 minutes; ``rsi promote --timeout-s`` tightens it.
DEFAULT_EVALUATE_TIMEOUT_S = 1200.0
#: Generated stories per task family answered in the first run (12 families).
STORIES_PER_TASK = 1
_PHASE = "phase "
_RESULT = "result "
_REPO = Path(__file__).resolve().parents[1]
#: The pid of the process that started a sandbox child (the child dies with it).
_PARENT_ENV = "RSI_SANDBOX_PARENT"


@dataclass(frozen=True)
class Evaluation:
    """What the child measures once the first run passed.

    ``gather``: build directories whose evidence is gathered (on ``data``, split ``seed``);
    ``latency``: the incumbent's and the candidate's build directories, timed interleaved
    ``repeats`` times each. ``template_dir``: the templates the builds were rendered from
    (None: the shipped ones), which name the modules a build may have.
    """

    data: Path | None
    seed: int
    gather: tuple[Path, ...] = ()
    latency: tuple[Path, Path] | None = None
    repeats: int = 9
    template_dir: Path | None = None


@dataclass(frozen=True)
class SandboxReport:
    """The outcome of a build's first run; ``reason`` is one line when ``ok`` is False."""

    build_id: str
    ok: bool
    reason: str
    phase: str  # the last phase reached: import, selftest, tiers, answers, evidence, latency, done
    seconds: float
    selftests: tuple[str, ...] = ()  # modules whose rsi_selftest ran
    answers: int = 0  # questions answered
    evidence: tuple[Evidence, ...] = ()  # of the builds an Evaluation named, in its order
    latency: LatencySamples | None = None  # when an Evaluation asked for it
    evaluate_s: float = 0.0  # of ``seconds``, the child's time in evidence and latency


def first_run(
    build_dir: Path,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    evaluation: Evaluation | None = None,
) -> SandboxReport:
    """Run the build at ``build_dir`` in a child process, then ``evaluation`` there too;
    never import the build here. ``timeout_s`` bounds the whole child."""
    start = time.perf_counter()
    build_id = build_dir.name
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])),
        _PARENT_ENV: str(os.getpid()),
    }
    cmd = [sys.executable, "-m", "runtime.sandbox", str(build_dir)]
    if evaluation is not None:
        cmd.append(json.dumps(_request(evaluation)))
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=_REPO,
        start_new_session=True,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        phase = _last_phase(out)
        reason = (
            f"build {build_id} did not finish its first run within {timeout_s:g} s "
            f"(hung in {phase}); killed"
        )
        return _failed(build_id, reason, phase, start)
    finally:
        if proc.poll() is None:  # interrupted (KeyboardInterrupt): leave no child behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    phase = _last_phase(out)
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        reason = f"build {build_id} crashed with {name} in its first run ({phase})"
        return _failed(build_id, reason, phase, start)
    if proc.returncode != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        reason = f"build {build_id} failed its first run ({phase}): {last}"
        return _failed(build_id, reason, phase, start)
    from runtime.gate import LatencySamples

    results = [line for line in out.splitlines() if line.startswith(_RESULT)]
    result = json.loads(results[-1].removeprefix(_RESULT))
    seconds = time.perf_counter() - start
    logger.info("first run of %s passed in %.2f s", build_id, seconds)
    latency = result.get("latency")
    return SandboxReport(
        build_id,
        True,
        "",
        "done",
        seconds,
        tuple(result["selftests"]),
        int(result["answers"]),
        tuple(_evidence_from(e) for e in result.get("evidence", [])),
        LatencySamples(tuple(latency[0]), tuple(latency[1])) if latency is not None else None,
        float(result.get("evaluate_s", 0.0)),
    )


def _request(evaluation: Evaluation) -> dict[str, Any]:
    def text(path: Path | None) -> str | None:
        return str(path.resolve()) if path is not None else None

    return {
        "data": text(evaluation.data),
        "seed": evaluation.seed,
        "gather": [text(p) for p in evaluation.gather],
        "latency": [text(p) for p in evaluation.latency] if evaluation.latency else None,
        "repeats": evaluation.repeats,
        "template_dir": text(evaluation.template_dir),
    }


def _evidence_json(evidence: Evidence) -> dict[str, Any]:
    def split(outcome: SplitOutcome) -> dict[str, Any]:
        return {
            "split": outcome.split,
            "seed": outcome.seed,
            "data_fingerprint": outcome.data_fingerprint,
            "tasks": list(outcome.tasks),
            "correct": "".join("1" if ok else "0" for ok in outcome.correct),
        }

    return {
        "build_id": evidence.build_id,
        "heldout": split(evidence.heldout),
        "hidden": split(evidence.hidden),
        "tiers_agree": evidence.tiers_agree,
        "kernels_agree": evidence.kernels_agree,
    }


def _evidence_from(raw: Mapping[str, Any]) -> Evidence:
    from runtime.gate import Evidence, SplitOutcome

    def split(part: Mapping[str, Any]) -> SplitOutcome:
        return SplitOutcome(
            split=str(part["split"]),
            seed=int(part["seed"]),
            data_fingerprint=str(part["data_fingerprint"]),
            tasks=tuple(int(t) for t in part["tasks"]),
            correct=tuple(c == "1" for c in part["correct"]),
        )

    return Evidence(
        str(raw["build_id"]),
        split(raw["heldout"]),
        split(raw["hidden"]),
        bool(raw["tiers_agree"]),
        bool(raw["kernels_agree"]),
    )


def _failed(build_id: str, reason: str, phase: str, start: float) -> SandboxReport:
    logger.warning("%s", reason)
    return SandboxReport(build_id, False, reason, phase, time.perf_counter() - start)


def _last_phase(out: str) -> str:
    phases = [line.removeprefix(_PHASE) for line in out.splitlines() if line.startswith(_PHASE)]
    return phases[-1] if phases else "start-up"


# -- the child ---------------------------------------------------------------------------


def _phase(name: str) -> None:
    print(f"{_PHASE}{name}", flush=True)


def _child(build_dir: Path, request: Mapping[str, Any] | None) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file behind
    parent = os.environ.get(_PARENT_ENV)
    if parent is not None:  # a kill -9 of the promotion takes its sandbox with it
        from codegen.compile import die_with_parent

        die_with_parent(int(parent))
    from runtime.babi.builds import model_of
    from runtime.babi.evaluate import compare_tiers
    from runtime.babi.generate import generate_stories
    from runtime.live import SELFTEST, differential_check
    from runtime.loader import load_build

    templates = request.get("template_dir") if request is not None else None
    template_dir = Path(templates) if templates is not None else None
    _phase("import")
    build = load_build(build_dir, template_dir=template_dir)
    _phase("selftest")
    selftests = []
    for name, module in build.modules.items():
        probe = getattr(module, SELFTEST, None)
        if probe is not None:
            probe()
            selftests.append(name)
    stories = generate_stories(seed=0, stories_per_task=STORIES_PER_TASK)
    model = model_of(build)
    if build.tier != "python":
        _phase("tiers")
        from runtime.evidence import pure_tier  # imports scipy: only for compiled builds

        pure = pure_tier(build)
        differential_check(pure, build)
        comparison = compare_tiers(model_of(pure), model, stories)
        if not comparison.agree:
            s, q, a, b = comparison.mismatches[0]
            raise SystemExit(
                f"tiers disagree on {len(comparison.mismatches)} of {comparison.questions} "
                f"answers (story {s} question {q}: python {a}, {build.tier} {b})"
            )
    _phase("answers")
    answers = 0
    for story in stories:
        prepared = model.prepare(story.sentences, [(q.text, q.position) for q in story.questions])
        for choice, confidence in model.answer_all(prepared):
            if not isinstance(choice, str) or confidence != confidence:
                raise SystemExit(f"model answered {choice!r} with confidence {confidence!r}")
            answers += 1
    result: dict[str, Any] = {"selftests": selftests, "answers": answers}
    if request is not None:
        result.update(_evaluate(request, template_dir))
    _phase("done")
    print(_RESULT + json.dumps(result), flush=True)


def _evaluate(request: Mapping[str, Any], template_dir: Path | None) -> dict[str, Any]:
    """The child's evidence and latency for ``request`` (see :class:`Evaluation`)."""
    from runtime.evidence import gather, measure_latency
    from runtime.loader import load_build

    start = time.perf_counter()
    data = Path(request["data"]) if request["data"] is not None else None
    seed = int(request["seed"])
    evidence = []
    for path in request["gather"]:
        _phase(f"evidence of {Path(path).name}")
        build = load_build(Path(path), template_dir=template_dir)
        evidence.append(_evidence_json(gather(build, data=data, seed=seed)))
    latency = None
    if request["latency"] is not None:
        _phase("latency")
        incumbent, candidate = (
            load_build(Path(p), template_dir=template_dir) for p in request["latency"]
        )
        samples = measure_latency(
            incumbent, candidate, repeats=int(request["repeats"]), data=data, seed=seed
        )
        latency = [list(samples.incumbent_s), list(samples.candidate_s)]
    return {"evidence": evidence, "latency": latency, "evaluate_s": time.perf_counter() - start}


if __name__ == "__main__":
    _child(Path(sys.argv[1]), json.loads(sys.argv[2]) if len(sys.argv) > 2 else None)
