"""Compile failures: a template bug a state value triggers (invalid Python, a type error,
invalid Cython), a missing compiler, a full disk. The old build keeps serving, and the one-line
diagnostic names the template line and the state field involved."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PURE, Served, serve
from hardening_corpus import DATA, load_corpus, serialize

from codegen.errors import CheckError, CompileError, RenderError, RSIError, StorageError
from codegen.toolchain import CompileSettings

REPO = Path(__file__).resolve().parents[2]
FRAGILE = DATA / "fragile"
BASE, _ = load_corpus()
CYTHON_ONLY = CompileSettings(backend="cython", shared_utility=False, jobs=1)


@pytest.fixture
def fragile(tmp_path: Path, hardening_cache: Path) -> Iterator[Served]:
    served = serve(tmp_path / "proj", hardening_cache, templates=FRAGILE)
    before = served.project.load_active()
    yield served
    # The build loaded before the failure still answers, and is still the active one.
    assert before.module("fragile").rsi_selftest() == 4.0
    status = served.project.status()
    assert (status.active_build, status.state_version) == (served.build_id, 1)
    assert served.project.load_active().build_id == served.build_id
    served.project.ledger.check_integrity()
    assert not list(served.project.generated_dir.glob(".tmp-*"))


def _edit(served: Served, **changes: Any) -> None:
    doc = copy.deepcopy(BASE)
    doc["version"] = 2
    for section, values in changes.items():
        doc[section].update(values)
    served.project.state_path.write_bytes(serialize(doc))


def test_template_renders_invalid_python(fragile: Served) -> None:
    _edit(fragile, scoring={"rag": 7.5, "temperature": 2.0})
    expected = (
        "fragile.py.j2: rendered source is not valid Python: cannot parse: 6:13 SCALED = 7.5 "
        "2.0 ^ ParseError: bad input [from fragile.py.j2:7 `SCALED = {{ state.scoring.rag|num "
        "}} {{ state.scoring.temperature|num }}`, state fields scoring.rag, "
        "scoring.temperature]"
    )
    with pytest.raises(RenderError, match=f"^{re.escape(expected)}$"):
        fragile.project.build(PURE)


def test_template_produces_a_type_error(fragile: Served) -> None:
    _edit(fragile, scoring={"temperature": 7.25})
    expected = (
        "mypy: fragile.py:6: error: Incompatible types in assignment (expression has type "
        '"float", variable has type "int") [assignment] [from fragile.py.j2:10 `STEPS: int = '
        "{{ state.scoring.temperature|num }}`, state field scoring.temperature]"
    )
    with pytest.raises(CheckError, match=f"^{re.escape(expected)}$"):
        fragile.project.build(PURE)


@pytest.mark.slow
def test_template_produces_invalid_cython(fragile: Served) -> None:
    _edit(fragile, architecture={"causal": True})
    # Cython refuses the module; its pure-Python fallback would raise in its selftest, so
    # the build fails and the old build keeps serving (tests/codegen/test_build_feedback.py
    # has the fallback that passes and serves).
    expected = (
        "cython: fragile.py: fragile.py:10:24: Only single-character string literals can be "
        "coerced into ints.; its pure-Python fallback fails: TypeError: unsupported operand "
        "type(s) for +: 'float' and 'str' [from fragile.py.j2:17 `label: cython.int = "
        "{{ state.answer_vocabulary[1]|pyrepr }}`, state field answer_vocabulary[1]]"
    )
    with pytest.raises(CompileError, match=f"^{re.escape(expected)}$"):
        fragile.project.build(CYTHON_ONLY)


def test_missing_compiler(fragile: Served) -> None:
    _edit(fragile, scoring={"rag": 2.0})
    with pytest.raises(
        CompileError,
        match=r"^C compiler 'no-such-cc' not found on PATH \(install gcc, or use --backend "
        r"python\)$",
    ):
        fragile.project.build(CompileSettings(backend="cython", cc="no-such-cc"))


def test_missing_compiler_on_the_command_line(fragile: Served) -> None:
    # The CLI cannot take a template dir, so the real templates render here: any state works.
    state = fragile.project.state_path
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": "/nonexistent"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime.cli",
            "build",
            "--backend",
            "cython",
            "--state",
            str(state),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "rsi: error: C compiler 'cc' not found on PATH (install gcc, or use --backend python)\n"
    )


# The build runs in a child whose files may not grow past a few KiB: every write of the
# build fails as on a full disk (EFBIG rather than ENOSPC), nothing else changes.
FULL_DISK_CHILD = """
import resource, signal, sys
from pathlib import Path
from runtime.project import Project
from codegen.errors import RSIError
from codegen.toolchain import CompileSettings
from hardening_corpus import DATA
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
try:
    Project(Path(sys.argv[1]), template_dir=DATA / "fragile").build(
        CompileSettings(backend="python"))
except RSIError as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(2)
"""


def test_full_disk_simulated_with_a_file_size_limit(fragile: Served) -> None:
    _edit(fragile, scoring={"rag": 3.0})
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{Path(__file__).parent}"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(FULL_DISK_CHILD),
            str(fragile.project.state_path),
            "100",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert re.fullmatch(r"StorageError: build failed: File too large( \(\S+\))?\n", proc.stdout)


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    path.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return proc.returncode == 0


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError:
        pass  # ENOSPC: full
    finally:
        os.close(fd)


def test_full_disk_on_a_tiny_tmpfs(tmp_path: Path, hardening_cache: Path) -> None:
    mount = tmp_path / "tiny"
    if not _mount_tmpfs(mount, "512k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE test covers it")
    try:
        served = serve(mount / "proj", hardening_cache, templates=FRAGILE)
        loaded = served.project.load_active()
        _edit(served, scoring={"rag": 3.0})
        _fill(mount / "filler")
        with pytest.raises(StorageError, match=r"^build failed: No space left on device"):
            served.project.build(PURE)
        # On the full disk: the old build still serves and status still answers.
        assert loaded.module("fragile").rsi_selftest() == 4.0
        status = served.project.status()
        assert (status.active_build, status.state_file_version) == (served.build_id, 2)
        assert [p.name for p in served.project.generated_dir.iterdir() if p.name != ".cache"] == [
            served.build_id
        ]
        # Space comes back: the same command now succeeds, with no manual step.
        (mount / "filler").unlink()
        report = served.project.build(PURE)
        assert report.build_id != served.build_id
        assert served.project.load_active().module("fragile").RAG == 3.0
        served.project.ledger.check_integrity()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_every_failure_is_one_rsi_error_line() -> None:
    for cls in (RenderError, CheckError, CompileError, StorageError):
        assert issubclass(cls, RSIError)
        assert "\n" not in str(cls("a\nb"))
