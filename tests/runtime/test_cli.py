"""The CLI: --json prints one object on the last line; errors are one line, exit 2."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import runtime.promote
from runtime.cli import main
from runtime.project import Project
from runtime.sandbox import SandboxReport
from tests.conftest import REPO, copy_state

RUN = {"capture_output": True, "text": True, "cwd": REPO, "timeout": 300, "check": False}


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
    def interrupted(argv: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("runtime.cli.build_parser", interrupted)
    assert main(["status"]) == 130
    assert capsys.readouterr().err == (
        "rsi: interrupted; state, builds and history are as they were "
        "(the next command removes any temp files)\n"
    )


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
    assert out[0] == (
        f"promoted v2: same build {report['candidate']} as v1, no code changed; p=1; "
        "changes no answer on held-out or hidden: not worse"
    )
    assert json.loads(out[-1])["same_build"] is True
    assert json.loads(out[-1])["cached"] == [report["incumbent"], report["candidate"]]
    assert json.loads(state.read_text())["benchmark"]["mean"] == 0.5
    assert main(["history", "--state", str(state)]) == 0
    newest, oldest = capsys.readouterr().out.splitlines()
    assert " promote " in newest and "committed v2  not-worse  p=1  changes no answer" in newest
    assert " not significant " in oldest and "committed -  better  p=1  " in oldest
    assert (newest.split()[0], oldest.split()[0]) == ("2", "1")


def test_history_shows_a_decision_and_its_candidate(
    make_project: Callable[..., Project], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A rejected candidate is retrievable from the ledger, not only the newest on disk."""
    project = make_project(templates=None)
    state = project.state_path
    args = ["--state", str(state), "--backend", "python"]
    assert main(["build", *args]) == 0
    data = json.loads(state.read_text())
    data["version"] = 2
    data["benchmark"]["mean"] = 0.25
    cand = state.with_name("cand.json")
    cand.write_text(json.dumps(data))
    first = cand.read_bytes()
    assert main(["promote", str(cand), "--require", "better", *args]) == 1
    data["benchmark"]["mean"] = 0.5
    cand.write_text(json.dumps(data))
    assert main(["promote", str(cand), "--require", "better", *args]) == 1
    assert state.with_name("rsi_state.rejected.json").read_bytes() == cand.read_bytes()
    capsys.readouterr()

    assert main(["history", "--state", str(state), "--show", "1"]) == 0
    shown = capsys.readouterr().out.splitlines()
    record = project.ledger.decision(1)
    assert shown[1:5] == [
        "verdict      not significant (better)",
        f"reason       {record.reason}",
        f"candidate    v2 build {record.candidate} sha256 {hashlib.sha256(first).hexdigest()}",
        f"incumbent    build {record.incumbent}",
    ]
    assert "stat         heldout_p_gain = 1.0" in shown
    assert sum(line.startswith("stat ") for line in shown) == len(record.stats)
    assert shown[-1] == "candidate bytes: rsi history --candidate 1 -o FILE"

    out = tmp_path / "first.json"
    assert main(["history", "--state", str(state), "--candidate", "1", "-o", str(out)]) == 0
    assert out.read_bytes() == first
    assert main(["history", "--state", str(state), "--candidate", "1"]) == 0
    assert capsys.readouterr().out.endswith(first.decode())

    assert main(["history", "--state", str(state), "--show", "9"]) == 2
    assert capsys.readouterr().err == (
        "rsi: error: decision 9 is not in the ledger; `rsi history` lists the decisions "
        "with their numbers\n"
    )
    assert main(["history", "--state", str(state), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"rsi: error: --output {out}: only with --candidate N (what to write)\n"
    )

    edited = state.read_bytes() + b"\n"  # an edit not yet built: it must not be overwritten
    state.write_bytes(edited)
    assert main(["history", "--state", str(state), "--candidate", "1", "-o", str(state)]) == 2
    assert capsys.readouterr().err == (
        f"rsi: error: -o {state}: that is the project's state file; write the candidate "
        "elsewhere and `rsi promote` it (promote checks it and keeps the state in history)\n"
    )
    assert state.read_bytes() == edited
    nowhere = tmp_path / "missing" / "x.json"
    assert main(["history", "--state", str(state), "--candidate", "1", "-o", str(nowhere)]) == 2
    assert capsys.readouterr().err == f"rsi: error: {nowhere}: No such file or directory\n"


def test_promote_warns_when_the_state_file_was_edited_meanwhile(
    make_project: Callable[..., Project],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = make_project(templates=None)
    state = project.state_path
    args = ["--state", str(state), "--backend", "python"]
    assert main(["build", *args]) == 0
    data = json.loads(state.read_text())
    data["version"] = 2
    data["scoring"]["rag"] = 5.5
    cand = state.with_name("cand.json")
    cand.write_text(json.dumps(data))
    edit = state.read_text().replace('"version": 1', '"version": 3')
    real_first_run = runtime.promote.first_run

    def edited_meanwhile(build_dir: Path, **kwargs: Any) -> SandboxReport:
        state.write_text(edit)  # a person saves an edit while the candidate is evaluated
        return real_first_run(build_dir, **kwargs)

    monkeypatch.setattr(runtime.promote, "first_run", edited_meanwhile)
    capsys.readouterr()
    assert main(["promote", str(cand), "--json", *args]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        "rsi: warning: rsi_state.json was edited during the promotion; the promoted state is "
        "committed and active, the file keeps the edit (run `rsi status` to compare)\n"
    )
    assert json.loads(captured.out.splitlines()[-1])["warnings"] == [captured.err[14:-1]]
    assert state.read_text() == edit


@pytest.mark.parametrize("value", ["0", "nan", "1e9"])
def test_promote_timeout_out_of_range_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    cand = tmp_path / "cand.json"
    assert (
        main(["promote", str(cand), "--state", str(tmp_path / "s.json"), "--timeout-s", value]) == 2
    )
    shown = f"{float(value):g}"
    assert capsys.readouterr().err == (
        f"rsi: error: --timeout-s {shown}: give a number of seconds from 1 to 86400\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["history", "--limit", "99999999999999999999"], "argument --limit: 99999999999999999999"),
        (["promote", "c.json", "--seed", "-1"], "argument --seed: -1 is not in [0, 4294967295]"),
        (["build", "--jobs", "x"], "argument --jobs: 'x' is not an integer"),
    ],
)
def test_integers_out_of_range_are_refused_by_the_parser(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unbounded integers used to overflow SQLite or NumPy deep inside a command."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["watch", "--rescan-ms", "0"], "argument --rescan-ms: 0 is not in [10, 3.6e+06]"),
        (["watch", "--debounce-ms", "-5"], "argument --debounce-ms: -5 is not in [0, 60000]"),
        (["watch", "--debounce-ms", "nan"], "argument --debounce-ms: nan is not in [0, 60000]"),
        (["watch", "--compile-nice", "100"], "argument --compile-nice: 100 is not in [0, 19]"),
    ],
)
def test_watch_timings_out_of_range_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--rescan-ms 0 spun a core at 100% (red team)."""
    with pytest.raises(SystemExit):
        main(argv)
    assert capsys.readouterr().err.splitlines()[-1].endswith(message)
