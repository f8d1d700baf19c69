"""Promotion through the gate: policy before building, sandbox before loading, evidence cached
in the ledger, commit or keep the candidate; the state file never holds an ungated state."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from codegen.errors import LedgerError, StateError
from codegen.policy import PolicyError
from codegen.toolchain import CompileSettings
from runtime.gate import Verdict
from runtime.loader import loaded_builds
from runtime.project import Project
from runtime.promote import format_p, promote, rejected_path
from tests.conftest import REPO
from tests.runtime.test_sandbox import HANG_AFTER_50_STORIES

PYTHON = CompileSettings(backend="python")
UNIFORM = REPO / "states" / "uniform.json"


def candidate(base: bytes | Path, version: int, **changes: Any) -> bytes:
    """``base`` at ``version`` with dotted-path changes (``scoring__rag=0.2``)."""
    data = json.loads(base.read_bytes() if isinstance(base, Path) else base)
    data["version"] = version
    for key, value in changes.items():
        target = data
        *parents, leaf = key.split("__")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return (json.dumps(data, indent=2) + "\n").encode()


@pytest.mark.slow
def test_promote_reject_and_cached_evidence(make_project: Callable[..., Project]) -> None:
    """Uniform -> tuned is promoted; tuned -> uniform is rejected and kept; then a change of
    the benchmark summary only (same build) is promoted with both evidences from the cache."""
    project = make_project(templates=None)
    project.state_path.write_bytes(candidate(UNIFORM, 1))
    project.build(PYTHON)
    tuned = candidate(REPO / "rsi_state.json", 2)

    with pytest.raises(PolicyError, match=r"\(\+\d+ more: .+\); approve all with --approve "):
        promote(project, tuned, settings=PYTHON, require="better")
    report = promote(project, tuned, settings=PYTHON, require="better", approve=["*"])
    assert report.promoted and report.decision.verdict is Verdict.PROMOTE
    assert report.state_version == 2 and report.rejected_path is None
    assert float(report.decision.stats["heldout_p_gain"]) < 1e-6  # type: ignore[arg-type]
    assert project.state_path.read_bytes() == tuned
    active = project.ledger.active()
    assert active is not None and (active.version, active.build_id) == (2, report.build_id)
    assert report.cached == ()
    assert set(report.seconds) == {"build", "sandbox", "evaluate", "gate", "commit"}

    back = candidate(UNIFORM, 3)
    report = promote(project, back, settings=PYTHON, approve=["*"])
    assert not report.promoted and report.decision.verdict is Verdict.REJECT
    assert report.decision.reason.endswith(": worse")
    assert report.rejected_path == rejected_path(project.state_path)
    assert report.rejected_path.read_bytes() == back
    assert project.state_path.read_bytes() == tuned  # the incumbent's file, untouched
    assert len(report.cached) == 2  # neither build was evaluated again

    same = candidate(tuned, 3, benchmark__mean=0.9)
    report = promote(project, same, settings=PYTHON, waive_policy=True)
    assert report.promoted and report.decision.reason.startswith("changes no answer")
    assert report.waived == ()
    newest, rejected, first = project.ledger.decisions()
    assert (newest.verdict, newest.committed_version) == ("promote", 3)
    assert (rejected.verdict, rejected.committed_version) == ("reject", None)
    assert project.ledger.decision_candidate(rejected.id) == back
    assert first.committed_version == 2
    project.ledger.check_gate_records()


def test_waived_policy_is_recorded(make_project: Callable[..., Project]) -> None:
    project = make_project(templates=None)
    project.build(PYTHON)
    edit = candidate(project.state_path, 2, benchmark__mean=0.5, safety__history_limit=60)
    report = promote(project, edit, settings=PYTHON, waive_policy=True)
    assert report.waived == (
        "safety.history_limit: 50 -> 60 changes the safety policy (safety.approval_required); "
        "approve with --approve safety.history_limit",
    )
    assert report.promoted and project.ledger.decisions()[0].waived == report.waived


def test_a_rerun_finishes_a_promotion_killed_before_the_state_file_was_written(
    make_project: Callable[..., Project],
) -> None:
    project = make_project(templates=None)
    project.build(PYTHON)
    v1 = project.state_path.read_bytes()
    edit = candidate(v1, 2, benchmark__mean=0.5)
    first = promote(project, edit, settings=PYTHON)
    project.state_path.write_bytes(v1)  # as if killed between the commit and the write
    again = promote(project, edit, settings=PYTHON)
    assert again.promoted and again.decision_id == first.decision_id
    assert again.decision.reason == first.decision.reason
    assert project.state_path.read_bytes() == edit
    assert len(project.ledger.decisions()) == 1
    other = candidate(v1, 2, benchmark__mean=0.7)
    with pytest.raises(StateError, match="version 2 is not newer than the committed 2"):
        promote(project, other, settings=PYTHON)


def test_a_renumbered_save_is_promoted_without_a_false_edit_warning(
    make_project: Callable[..., Project], caplog: pytest.LogCaptureFixture
) -> None:
    """Watch mode promotes a save of version 1 as v2 and leaves the file as saved: the file
    is the promoted state's alias, not an edit made during the promotion (red team)."""
    project = make_project(templates=None)
    project.build(PYTHON)
    saved = candidate(project.state_path, 1, benchmark__mean=0.5)
    project.state_path.write_bytes(saved)
    renumbered = candidate(saved, 2)
    report = promote(project, renumbered, settings=PYTHON, waive_policy=True, saved=saved)
    assert report.promoted and report.state_version == 2
    assert report.warnings == ()
    assert "edited during the promotion" not in caplog.text
    assert project.state_path.read_bytes() == saved  # left as saved
    assert project.ledger.committed_version(saved) == 2


def test_a_candidate_that_hangs_is_rejected_unloaded(
    make_project: Callable[..., Project], tmp_path: Path
) -> None:
    project, bad = _hangs_at_temperature_1_25(make_project, tmp_path, "while True:\n    pass")
    before = project.state_path.read_bytes()
    report = promote(project, bad, settings=PYTHON, evaluate_timeout_s=12.0)
    assert not report.promoted and report.decision.verdict is Verdict.REJECT
    assert report.decision.reason == (
        f"sandbox: build {report.build_id} did not finish its first run within 12 s "
        "(hung in import); killed"
    )
    assert project.generated_dir.joinpath(report.build_id).resolve() not in loaded_builds()
    assert project.state_path.read_bytes() == before
    assert rejected_path(project.state_path).read_bytes() == bad
    assert project.ledger.decisions()[0].stats["sandbox_phase"] == "import"


def test_neither_build_is_imported_by_the_promoting_process(
    make_project: Callable[..., Project],
) -> None:
    """Evidence and latency are measured in the sandbox child, never here."""
    project = make_project(templates=None)
    project.build(PYTHON)
    edit = candidate(project.state_path, 2, architecture__heads=2)
    # The latest calibration's noise floor (here absurdly high) is the minimum effect.
    project.ledger.record_calibration(latency_noise_floor=0.5, latency_changes=[0.5], summary={})
    report = promote(project, edit, settings=PYTHON, approve=["architecture.heads"])
    assert report.decision.stats["latency_repeats"] == 9  # hot path: timed in the child
    assert report.decision.stats["latency_min_effect"] == 0.5
    assert report.seconds["evaluate"] > 0 and report.cached == ()
    for build_id in (report.build_id, report.decision.incumbent):
        assert project.generated_dir.joinpath(build_id).resolve() not in loaded_builds()
        assert project.ledger.evidence(build_id, 0, "generated:0") is not None


def test_a_candidate_that_hangs_in_evaluation_is_rejected_and_kept(
    make_project: Callable[..., Project], tmp_path: Path
) -> None:
    project, bad = _hangs_at_temperature_1_25(make_project, tmp_path, HANG_AFTER_50_STORIES)
    before = project.state_path.read_bytes()
    report = promote(project, bad, settings=PYTHON, evaluate_timeout_s=30.0)
    assert not report.promoted and report.decision.verdict is Verdict.REJECT
    phase = f"evidence of {report.build_id}"
    assert report.decision.reason == (
        f"sandbox: build {report.build_id} did not finish its first run within 30 s "
        f"(hung in {phase}); killed"
    )
    assert project.state_path.read_bytes() == before
    assert rejected_path(project.state_path).read_bytes() == bad
    (decision,) = project.ledger.decisions()
    assert decision.stats["sandbox_phase"] == phase and decision.verdict == "reject"
    assert project.ledger.decision_candidate(decision.id) == bad


def test_refusals_before_anything_is_built(make_project: Callable[..., Project]) -> None:
    project = make_project(templates=None)
    with pytest.raises(LedgerError) as never:
        promote(project, project.state_path.read_bytes(), settings=PYTHON)
    assert str(never.value) == (
        "rsi_state.json: never built, so there is no incumbent to gate against; "
        "run `rsi build` first"
    )
    project.build(PYTHON)
    builds = sorted(project.generated_dir.iterdir())
    with pytest.raises(StateError) as old:
        promote(project, project.state_path.read_bytes(), settings=PYTHON, source="cand.json")
    assert (
        str(old.value)
        == 'cand.json: version 1 is not newer than the committed 1; set "version" to 2'
    )
    attention = candidate(project.state_path, 2, architecture__attention="linear")
    with pytest.raises(PolicyError) as refused:
        promote(project, attention, settings=PYTHON)
    assert str(refused.value) == (
        "architecture.attention: sdpa -> linear needs approval (safety.approval_required); "
        "approve with --approve architecture.attention"
    )
    assert sorted(project.generated_dir.iterdir()) == builds
    assert project.ledger.decisions() == []


@pytest.mark.parametrize(
    ("p", "shown"), [(None, "p=-"), (0.0, "p<1e-300"), (1.0, "p=1"), (0.00123456, "p=0.00123")]
)
def test_format_p(p: float | None, shown: str) -> None:
    assert format_p(p) == shown


def _hangs_at_temperature_1_25(
    make_project: Callable[..., Project], tmp_path: Path, code: str
) -> tuple[Project, bytes]:
    """A built project whose scoring template appends ``code`` when the temperature is 1.25,
    and a candidate state (v2) with that temperature."""
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "codegen" / "templates", templates)
    scoring = templates / "scoring.py.j2"
    hang = f"\n{{% if state.scoring.temperature == 1.25 %}}\n{code}\n{{% endif %}}\n"
    scoring.write_text(scoring.read_text() + hang)
    project = make_project(templates=templates)
    project.build(PYTHON)
    return project, candidate(project.state_path.read_bytes(), 2, scoring__temperature=1.25)
