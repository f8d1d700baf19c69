"""``rsi build --specialize``: the targets reach the compile settings; the build, the
ledger's new-build note and ``rsi status`` name the specialized user code."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import runtime.babi.route_score as route_score
from runtime.cli import build_parser, main, settings_from
from tests.conftest import copy_state

TARGET = "runtime.babi.route_score:route_score"


def test_specialize_targets_reach_the_settings() -> None:
    args = build_parser().parse_args(
        ["build", "--backend", "python", "--specialize", "a.b:f", "--specialize", "c:g"]
    )
    settings = settings_from(args)
    assert (settings.backend, settings.specialize) == ("python", ("a.b:f", "c:g"))


def test_no_specialize_option_specializes_nothing() -> None:
    assert settings_from(build_parser().parse_args(["build"])).specialize == ()


def test_build_ledger_and_status_name_the_specialized_user_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    state = copy_state(tmp_path)
    version = json.loads(state.read_text())["version"]
    args = ["--state", str(state), "--backend", "python"]
    assert main(["build", *args]) == 0
    plain = capsys.readouterr().out.split()[1]
    with caplog.at_level(logging.WARNING, logger="runtime.ledger"):
        assert main(["build", *args, "--specialize", TARGET]) == 0
    out = capsys.readouterr().out.splitlines()
    copy = out[0].split()[1]
    assert out[1:] == [
        f"specialized user code: {TARGET}",
        f"note: committed v{version} now has 2 builds (templates, toolchain, tier or "
        f"specialized user code changed): {plain}, {copy}",
    ]
    assert [r.getMessage() for r in caplog.records] == [
        f"state v{version}: new build {copy} (python; specialized user code: {TARGET}) "
        f"recorded beside {plain} (templates, toolchain or specialized user code changed)"
    ]
    assert main(["status", "--state", str(state)]) == 0
    source = Path(route_score.__file__)
    assert capsys.readouterr().out.splitlines()[1:] == [
        f"specialized: {TARGET} runs opt_runtime_babi_route_score__route_score (state sections "
        f"experts, routing, scoring; from {source})"
    ]
