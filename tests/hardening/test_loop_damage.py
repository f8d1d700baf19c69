"""The loop's own files damaged on disk: the evidence cache is recomputed, a run manifest
is named with the way out; nothing else is lost."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from codegen.state import parse_state
from codegen.toolchain import CompileSettings
from runtime.cli import main
from runtime.project import Project
from runtime.rsi.loop import LoopSettings, _config, train_evidence
from runtime.rsi.manifest import RunManifest, run_id, runs_dir, save_manifest

REPO = Path(__file__).resolve().parents[2]
UNIFORM = REPO / "states" / "uniform.json"
#: Ten one-fact stories of task 1: enough train questions for the evidence to be collected.
PLACES = ("kitchen", "garden", "office", "hallway", "bathroom")
NAMES = ("mary", "john", "sandra", "daniel")


def _tiny_data(root: Path) -> Path:
    lines = []
    for i in range(40):
        name, place = NAMES[i % 4].capitalize(), PLACES[i % 5]
        lines += [f"1 {name} went to the {place}.", f"2 Where is {name}? \t{place}\t1"]
    root.mkdir()
    (root / "qa1_single-supporting-fact_train.txt").write_text("\n".join(lines) + "\n")
    return root


def test_a_damaged_evidence_cache_is_recomputed_with_a_warning(
    tmp_path: Path, module_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "proj"
    (root / "generated").mkdir(parents=True)
    (root / "generated" / ".cache").symlink_to(module_cache)
    (root / "rsi_state.json").write_bytes(UNIFORM.read_bytes())
    project = Project(root / "rsi_state.json")
    project.build(CompileSettings(backend="python"))
    state = parse_state(UNIFORM.read_bytes(), "uniform")
    data = _tiny_data(tmp_path / "data")
    first = train_evidence(project, state, data=data, seed=0, backend="python")
    (cache,) = (project.ledger.path.parent / "evidence").glob("*.npz")
    good = cache.read_bytes()
    for damaged in (good[: len(good) // 2], b"garbage", good[:100] + b"x" * 64 + good[164:]):
        cache.write_bytes(damaged)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="runtime.rsi.loop"):
            again = train_evidence(project, state, data=data, seed=0, backend="python")
        assert again.rows == first.rows and (again.scores == first.scores).all()
        (record,) = caplog.records
        assert record.getMessage().startswith(f"{cache}: damaged evidence cache (")
        assert record.getMessage().endswith("); recomputing it")
        assert cache.read_bytes() == good


#: Damaged manifests and what the error says of each.
DAMAGED = [
    (b'{"run_id": "ab', "not JSON"),
    (b"\x00\xff" * 20, "not JSON"),
    (b"[1, 2]", "a JSON list, not an object"),
    (b'{"run_id": "ab"}', "no config, data_fingerprint, decisions, elapsed_s, git_revision, "
     "iterations, packages, pending, seconds, seed, started_at, status, stop_reason, tried"),
]  # fmt: skip


def _message(path: Path, why: str) -> str:
    return (
        f"rsi: error: {path}: damaged run manifest ({why}); move it aside and run again "
        "(that run starts afresh; its decisions stay in the ledger: rsi history)\n"
    )


@pytest.mark.parametrize(("body", "why"), DAMAGED)
def test_report_names_a_damaged_manifest(
    tmp_path: Path, body: bytes, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "rsi_state.json"
    config = {"seed": 0}
    good = RunManifest(
        run_id=run_id(config),
        config=config,
        seed=0,
        data_fingerprint="generated:0",
        git_revision="abc",
        packages={},
        started_at=1.0,
    )
    save_manifest(state, good)
    damaged = runs_dir(state) / "0000.json"
    damaged.write_bytes(body)
    assert main(["report", "--state", str(state)]) == 2
    assert capsys.readouterr().err == _message(damaged, why)


def test_a_damaged_manifest_stops_a_resume_before_anything_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RSI_BACKEND", "python")
    state = tmp_path / "rsi_state.json"
    state.write_bytes(UNIFORM.read_bytes())
    settings = LoopSettings(iterations=1, knobs=False, backend="python")
    path = runs_dir(state) / f"{run_id(_config(Project(state), settings))}.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"run_id": "ab')
    argv = ["loop", "--state", str(state), "--iterations", "1", "--no-knobs", "--json"]
    assert main(argv) == 2
    assert capsys.readouterr().err == _message(path, "not JSON")
    assert path.read_bytes() == b'{"run_id": "ab'
    assert state.read_bytes() == UNIFORM.read_bytes()
    assert not (tmp_path / "generated").exists()
