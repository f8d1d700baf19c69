"""``rsi gate calibrate``: A/A and known-worse trials on the state's own builds."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from codegen.state import RSIState, load_state
from runtime.calibrate import (
    CalibrationError,
    CalibrationReport,
    CalibrationSettings,
    calibrate,
    exchange,
)
from runtime.cli import main
from runtime.gate import REQUIRES, GateSettings, SplitOutcome
from runtime.ledger import Ledger, ledger_path
from tests.conftest import SHIPPED_STATE

REPO = Path(__file__).resolve().parents[2]
ABLATE = ("experts.tracker.weight", "experts.counter.weight", "experts.embedder.weight")


pytestmark = pytest.mark.slow  # compiles the shipped state and its ablations


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory, module_cache: Path) -> Path:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: calibration builds the compiled tier")
    root = tmp_path_factory.mktemp("calibrate") / "generated"
    root.mkdir()
    (root / ".cache").symlink_to(module_cache)
    return root


@pytest.fixture(scope="module")
def state() -> RSIState:
    return load_state(REPO / "rsi_state.json")


@pytest.fixture(scope="module")
def report(state: RSIState, generated: Path) -> CalibrationReport:
    settings = CalibrationSettings(trials=2, ablate=ABLATE)
    return calibrate(state, generated, data=None, settings=settings, gate=GateSettings())


def test_exchange_deals_each_question_to_one_arm() -> None:
    rng = random.Random(0)
    x = [rng.random() < 0.8 for _ in range(500)]
    w = [rng.random() < 0.6 for _ in range(500)]
    tasks = tuple(range(500))
    a, b = exchange(
        SplitOutcome("heldout", 0, "f", tasks, tuple(x)),
        SplitOutcome("heldout", 0, "f", tasks, tuple(w)),
        random.Random(1),
    )
    assert all(
        sorted((p, q)) == sorted((s, t))
        for p, q, s, t in zip(a.correct, b.correct, x, w, strict=True)
    )
    assert a.tasks == b.tasks == tasks
    moved = sum(p != s for p, s in zip(a.correct, x, strict=True))
    assert 0 < moved < sum(s != t for s, t in zip(x, w, strict=True))  # about half swap


def test_every_kind_of_trial_is_decided_under_both_questions(report: CalibrationReport) -> None:
    for kind in ("aa-identical", "aa-exchanged", "worse", "better"):
        for require in REQUIRES:
            assert report.count(kind, require)[1] == 2
    assert report.count("aa-identical", "better") == (0, 2)
    assert report.count("aa-identical", "not-worse") == (0, 2)
    assert report.count("worse", "not-worse") == (0, 2)
    assert report.count("worse", "better") == (0, 2)
    assert report.count("better", "better") == (0, 2)


def test_known_worse_candidates_are_screened_on_train(report: CalibrationReport) -> None:
    # The embedder's weight is already 0: there is nothing to zero.
    labels = [w.label for w in report.worse]
    assert sorted(labels) == ["experts.counter.weight zeroed", "experts.tracker.weight zeroed"]
    costs = [w.train_cost for w in report.worse]
    assert costs == sorted(costs) and costs[0] >= 0.02


def test_exchanged_trials_exercise_the_test(report: CalibrationReport) -> None:
    """The A/A null has discordant questions (identical builds have none)."""
    for t in report.trials:
        discordant = int(t.decision.stats["heldout_gains"] or 0) + int(
            t.decision.stats["heldout_losses"] or 0
        )
        if t.kind == "aa-identical":
            assert discordant == 0
        if t.kind == "aa-exchanged":
            assert discordant > 10
            assert t.seed in (1, 2)


def test_report_summary(report: CalibrationReport) -> None:
    summary = report.to_json()
    assert summary["worse_rejected_not_worse"] == 2
    assert summary["worse_promoted_any"] == 0
    assert len(report.latency_changes) == 2
    assert summary["latency_noise_floor"] == round(max(abs(c) for c in report.latency_changes), 4)
    table = report.table()
    assert table.splitlines()[0].startswith("trial")
    assert "known worse: experts.tracker.weight zeroed" in table
    assert table.splitlines()[-1] == f"16 decisions in {report.seconds:.1f} s"


def test_no_known_worse_candidate_is_an_error(state: RSIState, generated: Path) -> None:
    settings = CalibrationSettings(trials=1, ablate=("experts.embedder.weight",))
    with pytest.raises(CalibrationError) as err:
        calibrate(state, generated, data=None, settings=settings, gate=GateSettings())
    assert str(err.value) == (
        "no expert weight or scoring coefficient of the state costs >= 2% on the train split "
        "when zeroed; calibrate a state whose experts matter (e.g. rsi_state.json)"
    )


def test_unknown_ablation_is_an_error(state: RSIState, generated: Path) -> None:
    settings = CalibrationSettings(trials=1, ablate=("experts.nobody.weight",))
    with pytest.raises(CalibrationError) as err:
        calibrate(state, generated, data=None, settings=settings, gate=GateSettings())
    assert str(err.value).startswith(
        "ablate 'experts.nobody.weight': not an expert weight or scoring coefficient of the "
        "state; use one of experts.tracker.weight, "
    )


def test_cli_prints_the_table_and_json(
    generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    shutil.copy(REPO / "rsi_state.json", project / "rsi_state.json")
    (project / "generated").mkdir()
    (project / "generated" / ".cache").symlink_to((generated / ".cache").resolve())
    argv = ["gate", "calibrate", "--state", str(project / "rsi_state.json"), "--trials", "1"]
    argv += ["--no-latency", "--ablate", "experts.tracker.weight", "--json"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    summary = json.loads(out[-1])
    assert summary["trials"]["worse/not-worse"] == {"wrong": 0, "trials": 1, "decided_by": {}}
    assert summary["latency_changes"] == []
    assert out[0].startswith("trial")
    ledger = Ledger(ledger_path(project / "rsi_state.json"))
    assert ledger.latency_noise_floor() is None  # --no-latency: nothing measured, none kept


def test_cli_refuses_zero_trials(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gate", "calibrate", "--trials", "0"]) == 2
    assert capsys.readouterr().err.strip() == "rsi: error: trials=0: use 1 to 10000 trials"


def test_cli_checks_data_before_building(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "rsi_state.json"
    state.write_bytes(SHIPPED_STATE.read_bytes())
    missing = tmp_path / "no-such-dir"
    argv = ["gate", "calibrate", "--state", str(state), "--data", str(missing)]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"rsi: error: {missing}: not a directory"
    assert not (tmp_path / "generated").exists()


@pytest.mark.slow
def test_calibrate_on_the_real_files(state: RSIState, generated: Path) -> None:
    value = os.environ.get("RSI_BABI_DIR")
    if not value:
        pytest.skip("RSI_BABI_DIR is not set: no real bAbI files to calibrate on")
    settings = CalibrationSettings(trials=3, latency=False, ablate=ABLATE)
    report = calibrate(state, generated, data=Path(value), settings=settings, gate=GateSettings())
    assert report.count("worse", "not-worse") == (0, 3)
    assert report.count("aa-exchanged", "better")[0] <= 1
    assert report.count("aa-identical", "not-worse") == (0, 3)
