"""First run of a candidate build in a child process, before any serving process loads it.

The child imports the build (artifacts verified against the manifest), runs every module's
``rsi_selftest()``, checks that a compiled build's tiers agree (its rendered ``.py`` sources
interpreted against its artifacts, with the differential test's tolerances), and answers a
few generated bAbI questions with the model over the build. It reports each phase as it
starts, so a crash (SIGSEGV, SIGBUS, abort), a hang past ``timeout_s`` or a failure is
reported with the phase it happened in. The parent never imports the build.

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
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SandboxReport", "first_run", "DEFAULT_TIMEOUT_S", "STORIES_PER_TASK"]

logger = logging.getLogger(__name__)

#: Import, self-tests and a few answers take 1-3 s; a minute means the build hangs.
DEFAULT_TIMEOUT_S = 60.0
#: Generated stories per task family answered in the first run (12 families).
STORIES_PER_TASK = 1
_PHASE = "phase "
_RESULT = "result "
_REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SandboxReport:
    """The outcome of a build's first run; ``reason`` is one line when ``ok`` is False."""

    build_id: str
    ok: bool
    reason: str
    phase: str  # the last phase the child reached: import, selftest, tiers, answers, done
    seconds: float
    selftests: tuple[str, ...] = ()  # modules whose rsi_selftest ran
    answers: int = 0  # questions answered


def first_run(build_dir: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> SandboxReport:
    """Run the build at ``build_dir`` in a child process; never import it here."""
    start = time.perf_counter()
    build_id = build_dir.name
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, "-m", "runtime.sandbox", str(build_dir)]
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
    result = json.loads(out.splitlines()[-1].removeprefix(_RESULT))
    seconds = time.perf_counter() - start
    logger.info("first run of %s passed in %.2f s", build_id, seconds)
    return SandboxReport(
        build_id,
        True,
        "",
        "done",
        seconds,
        tuple(result["selftests"]),
        int(result["answers"]),
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


def _child(build_dir: Path) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file behind
    from runtime.babi.builds import model_of
    from runtime.babi.evaluate import compare_tiers
    from runtime.babi.generate import generate_stories
    from runtime.live import SELFTEST, differential_check
    from runtime.loader import load_build

    _phase("import")
    build = load_build(build_dir)
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
    _phase("done")
    print(_RESULT + json.dumps({"selftests": selftests, "answers": answers}), flush=True)


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
