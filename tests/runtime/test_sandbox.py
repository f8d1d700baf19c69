"""First run in a sandbox: a crash, a hang or a failed self-test rejects the build, with the
reason, and the testing process never imports it."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codegen.build import build_state
from codegen.state import load_state
from codegen.toolchain import CompileSettings
from runtime.evidence import gather
from runtime.loader import load_build, loaded_builds
from runtime.sandbox import Evaluation, first_run
from tests.conftest import REPO, SHIPPED_STATE


@pytest.fixture(scope="module")
def pure_build(tmp_path_factory: pytest.TempPathFactory, module_cache: Path) -> Path:
    """A pure-Python build of the shipped state (real templates)."""
    generated = tmp_path_factory.mktemp("sandbox") / "generated"
    generated.mkdir()
    (generated / ".cache").symlink_to(module_cache)
    state = load_state(SHIPPED_STATE)
    result = build_state(
        state, SHIPPED_STATE.read_bytes(), CompileSettings(backend="python"), generated
    )
    return result.path


def tampered(build: Path, dst: Path, module: str, code: str) -> Path:
    """A copy of ``build`` whose ``module`` artifact ends with ``code`` (manifest updated)."""
    copy = dst / build.name
    shutil.copytree(build, copy)
    artifact = copy / f"{module}.py"
    artifact.write_text(artifact.read_text() + "\n" + code + "\n")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["modules"][module]["artifact_sha256"] = hashlib.sha256(
        artifact.read_bytes()
    ).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_a_sound_build_passes(pure_build: Path) -> None:
    report = first_run(pure_build)
    assert report.ok and report.reason == "" and report.phase == "done"
    assert "scoring" in report.selftests and report.answers > 12
    assert pure_build.resolve() not in loaded_builds()


@pytest.mark.parametrize(
    ("code", "signal_name"),
    [
        ("import ctypes\nctypes.string_at(0)", "SIGSEGV"),
        ("import os\nos.abort()", "SIGABRT"),
    ],
)
def test_a_crash_on_import_is_rejected(
    pure_build: Path, tmp_path: Path, code: str, signal_name: str
) -> None:
    bad = tampered(pure_build, tmp_path, "experts", code)
    report = first_run(bad)
    assert not report.ok
    assert report.reason == f"build {bad.name} crashed with {signal_name} in its first run (import)"
    assert bad.resolve() not in loaded_builds()


def test_a_hang_is_killed_at_the_time_limit(pure_build: Path, tmp_path: Path) -> None:
    bad = tampered(pure_build, tmp_path, "scoring", "while True:\n    pass")
    # The limit leaves start-up (imports) room on a loaded machine: the hang is in import.
    report = first_run(bad, timeout_s=12.0)
    assert not report.ok
    assert report.reason == (
        f"build {bad.name} did not finish its first run within 12 s (hung in import); killed"
    )
    assert report.seconds < 40


def test_the_child_dies_with_a_killed_parent(pure_build: Path, tmp_path: Path) -> None:
    """kill -9 of the promoting process must not leave its sandbox child running (red team)."""
    bad = tampered(pure_build, tmp_path, "scoring", "while True:\n    pass")
    code = (
        "import sys; from pathlib import Path; from runtime.sandbox import first_run; "
        "first_run(Path(sys.argv[1]), timeout_s=600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code, str(bad)], cwd=REPO)
    deadline = time.monotonic() + 120
    children: list[int] = []
    while not children and time.monotonic() < deadline:
        time.sleep(0.2)
        children = _children(parent.pid)
    assert children, "the sandbox child never started"
    time.sleep(2.0)  # past its start: it has asked to die with its parent
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children)


def _children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_failing_selftest_is_rejected_with_its_message(pure_build: Path, tmp_path: Path) -> None:
    code = "def rsi_selftest() -> None:\n    raise AssertionError('scores drifted')"
    bad = tampered(pure_build, tmp_path, "scoring", code)
    report = first_run(bad)
    assert not report.ok and report.phase == "selftest"
    assert report.reason == (
        f"build {bad.name} failed its first run (selftest): AssertionError: scores drifted"
    )


def test_a_model_that_cannot_answer_is_rejected(pure_build: Path, tmp_path: Path) -> None:
    bad = tampered(pure_build, tmp_path, "knowledge", "del run_story")  # no selftest there
    report = first_run(bad)
    assert not report.ok and report.phase == "answers"
    assert report.reason.startswith(f"build {bad.name} failed its first run (answers): ")


def test_a_build_that_does_not_match_its_manifest_never_runs(
    pure_build: Path, tmp_path: Path
) -> None:
    copy = tmp_path / pure_build.name
    shutil.copytree(pure_build, copy)
    (copy / "scoring.py").write_text("import os\nos.abort()\n")
    report = first_run(copy)
    assert report.reason == (
        f"build {copy.name} failed its first run (import): runtime.loader.LoadError: "
        f"{copy.name}: scoring.py of module scoring does not match its manifest"
    )


@pytest.mark.slow
def test_compiled_tiers_that_disagree_are_rejected(tmp_path: Path, module_cache: Path) -> None:
    generated = tmp_path / "generated"
    generated.mkdir()
    (generated / ".cache").symlink_to(module_cache)
    state = load_state(SHIPPED_STATE)
    built = build_state(
        state, SHIPPED_STATE.read_bytes(), CompileSettings(backend="cython"), generated
    ).path
    assert first_run(built).ok
    # The pure tier (the rendered source beside the extension) now answers its self-test
    # differently from the compiled artifact.
    copy = tmp_path / "copy" / built.name
    shutil.copytree(built, copy)
    source = copy / "scoring.py"
    source.write_text(source.read_text() + "\n\ndef rsi_selftest() -> list[int]:\n    return [1]\n")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["modules"]["scoring"]["source_sha256"] = hashlib.sha256(
        source.read_bytes()
    ).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    report = first_run(copy)
    assert not report.ok and report.phase == "tiers"
    assert report.reason == (
        f"build {copy.name} failed its first run (tiers): runtime.live.TierMismatch: module "
        f"scoring: cython tier of build {copy.name} disagrees with the python tier on "
        "rsi_selftest()"
    )


#: Appended to scoring: answers the first run's few stories, then hangs (the gate's splits
#: have many more stories than the first run answers).
HANG_AFTER_50_STORIES = """
_rsi_calls: list[int] = [0]
_rsi_decide_story = decide_story


def decide_story(*args: object) -> None:  # type: ignore[no-redef]
    _rsi_calls[0] += 1
    while _rsi_calls[0] > 50:
        pass
    _rsi_decide_story(*args)
"""


def test_the_child_gathers_the_evidence_the_gate_needs(pure_build: Path, tmp_path: Path) -> None:
    evaluation = Evaluation(data=None, seed=0, gather=(pure_build,), latency=None)
    report = first_run(pure_build, evaluation=evaluation)
    assert report.ok and report.phase == "done" and report.latency is None
    (evidence,) = report.evidence
    assert pure_build.resolve() not in loaded_builds()
    copy = tmp_path / pure_build.name  # imported here; the module's build stays unimported
    shutil.copytree(pure_build, copy)
    here = gather(load_build(copy), data=None, seed=0)
    assert evidence == here
    assert 0 < report.evaluate_s < report.seconds


def test_the_child_times_both_builds_interleaved(pure_build: Path) -> None:
    evaluation = Evaluation(data=None, seed=0, latency=(pure_build, pure_build), repeats=9)
    report = first_run(pure_build, evaluation=evaluation)
    assert report.ok and report.evidence == () and report.latency is not None
    assert len(report.latency.incumbent_s) == len(report.latency.candidate_s) == 9
    assert min(report.latency.incumbent_s + report.latency.candidate_s) > 0


def test_a_hang_while_gathering_evidence_is_killed_with_its_phase(
    pure_build: Path, tmp_path: Path
) -> None:
    bad = tampered(pure_build, tmp_path, "scoring", HANG_AFTER_50_STORIES)
    evaluation = Evaluation(data=None, seed=0, gather=(bad,))
    report = first_run(bad, timeout_s=30.0, evaluation=evaluation)
    assert not report.ok and report.phase == f"evidence of {bad.name}"
    assert report.reason == (
        f"build {bad.name} did not finish its first run within 30 s "
        f"(hung in evidence of {bad.name}); killed"
    )
    assert bad.resolve() not in loaded_builds()
