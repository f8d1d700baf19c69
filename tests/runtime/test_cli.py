"""The CLI: --json prints one object on the last line; errors are one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.cli import main
from runtime.project import Project
from tests.conftest import REPO, copy_state

RUN = {
    "capture_output": True,
    "text": True,
    "cwd": REPO,
    "timeout": 300,
    "check": False,
}


def last_json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out = capsys.readouterr().out.strip().splitlines()
    data: dict[str, object] = json.loads(out[-1])
    return data


def test_build_status_rollback_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = copy_state(tmp_path)
    args = ["--state", str(state), "--json"]
    assert main(["build", "--backend", "python", *args]) == 0
    build = last_json(capsys)
    assert {"build_id", "seconds", "modules_compiled", "cache_hits", "tier"} <= set(build)
    assert main(["status", *args]) == 0
    status = last_json(capsys)
    assert status["active_build"] == build["build_id"] and status["tier"] == "python"
    data = json.loads(state.read_text())
    data["version"] += 1
    data["scoring"]["rag"] = 0.5
    state.write_text(json.dumps(data))
    assert main(["build", "--backend", "python", *args]) == 0
    capsys.readouterr()
    assert main(["rollback", *args]) == 0
    assert last_json(capsys)["build_id"] == build["build_id"]


def test_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "rsi_state.json"
    state.write_text('{"version": 1, "experts": {}, "bogus": 1}')
    assert main(["build", "--state", str(state)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rsi: error: rsi_state.json: ")


def test_interrupt_while_the_commands_load_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("runtime.cli.build_parser", interrupted)
    assert main(["status"]) == 130
    assert capsys.readouterr().err == "rsi: interrupted; nothing half-written was kept\n"


def test_warnings_are_printed_in_the_cli_form(tmp_path: Path) -> None:
    state = copy_state(tmp_path)
    rsi = [sys.executable, "-m", "runtime.cli", "build", "--state", str(state)]
    rsi += ["--backend", "python"]
    first = subprocess.run([*rsi, "--json"], **RUN)
    assert first.returncode == 0, first.stderr
    build_dir = tmp_path / "generated" / json.loads(first.stdout.splitlines()[-1])["build_id"]
    with (build_dir / "scoring.py").open("a") as fh:
        fh.write("# tampered\n")
    again = subprocess.run(rsi, **RUN)
    assert again.returncode == 0, again.stderr
    assert again.stderr.startswith(
        f"rsi: warning: corrupt build discarded, it is built again: {build_dir.name}: "
        "scoring.py of module scoring does not match its manifest\n"
    )


def test_schema_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "RSIState"


@pytest.mark.slow
def test_promote_and_history(
    make_project: Callable[..., Project], capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 for a policy refusal, 1 when the incumbent is kept, 0 when promoted."""
    project = make_project(templates=None)
    state = project.state_path
    args = ["--state", str(state), "--backend", "python"]
    assert main(["build", *args]) == 0
    capsys.readouterr()
    assert main(["history", "--state", str(state)]) == 0
    assert capsys.readouterr().out == f"{state}: no gate decisions yet\n"
    data = json.loads(state.read_text())
    data["version"] = 2
    data["scoring"]["rag"] = 0.1
    cand = state.with_name("cand.json")
    cand.write_text(json.dumps(data))
    assert main(["promote", str(cand), *args]) == 2
    assert capsys.readouterr().err == (
        "rsi: error: scoring.rag: 5.0 -> 0.1 exceeds max_relative_step 0.5; "
        "approve with --approve scoring.rag\n"
    )
    data["scoring"]["rag"] = 5.0
    data["benchmark"]["mean"] = 0.5  # same behaviour: the same build, no answer changes
    cand.write_text(json.dumps(data))
    assert main(["promote", str(cand), "--require", "better", "--json", *args]) == 1
    report = last_json(capsys)
    assert report["verdict"] == "not significant" and not report["promoted"]
    assert report["p_value"] == 1.0 and report["rejected_path"] == str(
        state.with_name("rsi_state.rejected.json")
    )
    assert state.with_name("rsi_state.rejected.json").read_text() == cand.read_text()
    assert main(["promote", str(cand), "--json", *args]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("promoted v2 (build ") and out[0].endswith(
        "; p=1; changes no answer on held-out or hidden: not worse"
    )
    assert json.loads(out[-1])["cached"] == [report["incumbent"], report["candidate"]]
    assert json.loads(state.read_text())["benchmark"]["mean"] == 0.5
    assert main(["history", "--state", str(state)]) == 0
    newest, oldest = capsys.readouterr().out.splitlines()
    assert " promote " in newest and "committed v2  not-worse  p=1  changes no answer" in newest
    assert " not significant " in oldest and "committed -  better  p=1  " in oldest
