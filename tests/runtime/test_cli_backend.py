"""Every command that builds honours ``$RSI_BACKEND`` (``--backend`` wins over it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runtime.cli import main

REPO = Path(__file__).resolve().parents[2]
BAD = "rsi: error: RSI_BACKEND='fortran' is not one of python, cython, nuitka\n"


@pytest.mark.parametrize(
    "argv", [["build"], ["eval"], ["tune", "kernels", "--mechanism", "sdpa", "--dry-run"]]
)
def test_a_bad_rsi_backend_is_refused_by_every_building_command(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = Path(shutil.copy(REPO / "rsi_state.json", tmp_path / "rsi_state.json"))
    monkeypatch.setenv("RSI_BACKEND", "fortran")
    assert main([*argv, "--state", str(state)]) == 2
    assert capsys.readouterr().err == BAD


def test_backend_flag_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = Path(shutil.copy(REPO / "rsi_state.json", tmp_path / "rsi_state.json"))
    monkeypatch.setenv("RSI_BACKEND", "fortran")
    assert main(["eval", "--state", str(state), "--backend", "python"]) == 0
    assert "mean" in capsys.readouterr().out


def test_a_bad_backend_flag_is_named_as_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """rsi watch takes --backend without argparse choices: its error named RSI_BACKEND."""
    state = Path(shutil.copy(REPO / "rsi_state.json", tmp_path / "rsi_state.json"))
    monkeypatch.delenv("RSI_BACKEND", raising=False)
    assert main(["watch", "--state", str(state), "--backend", "bogus"]) == 2
    assert capsys.readouterr().err == (
        "rsi: error: --backend 'bogus' is not one of python, cython, nuitka\n"
    )
