"""The CLI: --json prints one object on the last line; errors are one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.cli import main
from tests.conftest import copy_state


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


def test_schema_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "RSIState"
