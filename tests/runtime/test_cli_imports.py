"""`rsi --help` and `rsi status` import only what they need (issue 10: a quick CLI)."""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codegen.state import AttentionMechanism
from codegen.toolchain import CompileSettings
from runtime.cli_extensions import COMMANDS, MODULES
from runtime.kernels.cli import MECHANISMS
from runtime.project import Project

REPO = Path(__file__).resolve().parents[2]

HEAVY = (
    "libcst",
    "jinja2",
    "numpy",
    "black",
    "mypy",
    "scipy",
    "matplotlib",
    "runtime.babi.model",
    "codegen.render",
    "codegen.diagnostics",
)

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


def test_status_of_a_built_project_imports_no_heavy_module(tmp_path: Path) -> None:
    state = Path(shutil.copy(REPO / "rsi_state.json", tmp_path / "rsi_state.json"))
    Project(state).build(CompileSettings(backend="python"))
    loaded = _imported("status", "--state", str(state), cwd=tmp_path)
    assert "runtime.status" in loaded
    # Nor the schema or the build code: a committed state file is known by its hash.
    light = ("pydantic", "codegen.state", "codegen.build", "runtime.project")
    assert sorted(m for m in (*HEAVY, *light) if m in loaded) == []


def test_a_feature_command_imports_its_module(tmp_path: Path) -> None:
    loaded = _imported("watch", "--help", cwd=tmp_path)
    assert "runtime.watch_cli" in loaded
    assert "runtime.rsi.cli" not in loaded


def test_the_command_table_lists_what_each_module_registers() -> None:
    listed: dict[str, tuple[str, str]] = {}
    for module in MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub, argparse.ArgumentParser(add_help=False))
        listed.update({a.dest: (module, str(a.help)) for a in sub._choices_actions})
    assert listed == COMMANDS
