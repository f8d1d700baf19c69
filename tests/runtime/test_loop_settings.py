"""``rsi loop`` refuses settings out of range in one line, before anything runs."""

from __future__ import annotations

import math

import pytest

from runtime.cli import main
from runtime.rsi.loop import LoopError, LoopSettings


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"budget_s": -5.0}, "--budget-s -5.0: give a positive number of seconds"),
        ({"budget_s": math.nan}, "--budget-s nan: give a positive number of seconds"),
        ({"iterations": -1}, "--iterations -1: give 1 or more"),
        ({"workers": 0}, "--workers 0: give 1 to 64 parallel candidate jobs"),
        ({"address": "auto"}, "--address names a Ray cluster: use it with --executor ray"),
    ],
)
def test_out_of_range_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(LoopError) as caught:
        LoopSettings(**settings)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_cli_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loop", "--workers", "-3", "--state", "nowhere.json"]) == 2
    assert capsys.readouterr().err == (
        "rsi: error: --workers -3: give 1 to 64 parallel candidate jobs\n"
    )


def test_backend_follows_rsi_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.cli import build_parser, settings_from

    monkeypatch.setenv("RSI_BACKEND", "python")
    args = build_parser().parse_args(["loop"])
    assert settings_from(args).backend == "python"


def test_executor_choices_are_the_executors() -> None:
    from runtime.rsi import cli, executor

    assert cli.EXECUTORS == executor.EXECUTORS
