"""`rsi --help` and `rsi status` import only what they need (issue 10: a quick CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from codegen.state import AttentionMechanism
from runtime.kernels.cli import MECHANISMS

HEAVY = ("libcst", "jinja2", "numpy", "black", "mypy", "runtime.babi.model", "codegen.render")

PROBE = """
import json, sys
from runtime.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _imported(*argv: str, cwd: Path) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=cwd, check=True
    )
    modules: list[str] = json.loads(proc.stderr.strip().splitlines()[-1])
    return set(modules)


@pytest.mark.parametrize("argv", [("--help",), ("status",), ("build", "--help")])
def test_cli_imports_no_heavy_module(argv: tuple[str, ...], tmp_path: Path) -> None:
    loaded = _imported(*argv, cwd=tmp_path)
    assert "runtime.cli" in loaded
    assert sorted(m for m in HEAVY if m in loaded) == []


def test_help_describes_rsi_for_users(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert "Build a model from its state file" in proc.stdout
    assert ":class:" not in proc.stdout and ":func:" not in proc.stdout


def test_tune_mechanism_choices_are_the_schema_enum() -> None:
    assert MECHANISMS == tuple(m.value for m in AttentionMechanism)
