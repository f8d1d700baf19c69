"""``rsi eval`` on the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runtime.cli import main

REPO = Path(__file__).resolve().parents[3]


def test_rsi_eval_json_last_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(REPO / "rsi_state.json", tmp_path / "rsi_state.json")
    code = main(
        ["eval", "--state", str(tmp_path / "rsi_state.json"), "--backend", "python", "--json"]
    )
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert summary["passed"] == len(summary["per_task"]) >= 8
    assert summary["questions"] > 0 and summary["questions_per_s"] > 0
