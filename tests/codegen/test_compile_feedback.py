"""Compile feedback: each failure kind is read from the compiler's diagnostic, retried within
the attempt budget, and ends in a served module (recovered or pure Python), recorded."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from codegen.compile import NUITKA_MISSING, Attempt, compile_modules
from codegen.diagnostics import c_line_origin, parse_compiler_message
from codegen.errors import CompileError
from codegen.toolchain import CompileSettings

SRC = "import cython\n\nK: float = 1.0\n\n\ndef f(x: float) -> float:\n    return K * x\n"
BAD_CYTHON = "import cython\n\n\ndef g() -> int:\n    x: cython.int = 'text'\n    return x\n"
PORTABLE = ("-O1", "-pipe", "-fno-strict-aliasing")


def _settings(*cflags: str, max_attempts: int = 3) -> CompileSettings:
    return CompileSettings(cflags=cflags, shared_utility=False, jobs=1, max_attempts=max_attempts)


def test_an_unsupported_march_flag_is_dropped(tmp_path: Path) -> None:
    done = compile_modules({"m": SRC}, _settings("-O1", "-march=no-such-cpu"), tmp_path)["m"]
    assert done.tier == "cython"
    assert [(a.flags, a.outcome, a.kind) for a in done.attempts] == [
        (("-O1", "-march=no-such-cpu"), "failed", "flag"),
        (("-O1",), "compiled", ""),
    ]
    assert re.search(r"bad value .no-such-cpu. for .-march=. switch", done.attempts[0].diagnostic)
    # The record travels with the cached artifact: a cache hit shows the same attempts.
    again = compile_modules({"m": SRC}, _settings("-O1", "-march=no-such-cpu"), tmp_path)["m"]
    assert again.cache_hit and again.attempts == done.attempts


def test_a_c_error_some_flags_trigger_is_retried_with_portable_flags(tmp_path: Path) -> None:
    flags = ("-O1", "-Werror=declaration-after-statement")
    done = compile_modules({"m": SRC}, _settings(*flags), tmp_path)["m"]
    assert done.tier == "cython"
    assert [(a.flags, a.outcome, a.kind) for a in done.attempts] == [
        (flags, "failed", "c"),
        (PORTABLE, "compiled", ""),
    ]
    failed = done.attempts[0].diagnostic
    assert failed.startswith("cc m.c failed: m.c:") and failed.endswith(
        "error: ISO C90 forbids mixed declarations and code [-Werror=declaration-after-statement]"
        " (from m.py:6)"
    )


def test_a_cython_error_falls_back_to_python_at_once(tmp_path: Path) -> None:
    done = compile_modules({"m": SRC, "bad": BAD_CYTHON}, _settings("-O1"), tmp_path)
    assert done["m"].tier == "cython"
    bad = done["bad"]
    assert (bad.tier, bad.artifact.name) == ("python", "bad.py")
    assert bad.attempts == (
        Attempt(
            "cython",
            ("-O1",),
            "failed",
            "cython: bad.py: bad.py:5:20: Only single-character string literals can be coerced "
            "into ints.",
            "cython",
        ),
        Attempt("python", (), "fallback"),
    )


def test_the_attempt_budget_bounds_the_retries(tmp_path: Path) -> None:
    done = compile_modules(
        {"m": SRC}, _settings("-O1", "-march=no-such-cpu", max_attempts=1), tmp_path
    )
    assert done["m"].tier == "python"
    assert [a.outcome for a in done["m"].attempts] == ["failed", "fallback"]


def test_workers_carry_the_record_back(tmp_path: Path) -> None:
    settings = CompileSettings(cflags=("-O1", "-march=no-such-cpu"), shared_utility=False, jobs=2)
    done = compile_modules({"m": SRC, "bad": BAD_CYTHON}, settings, tmp_path)
    assert (done["m"].tier, [a.outcome for a in done["m"].attempts]) == (
        "cython",
        ["failed", "compiled"],
    )
    assert (done["bad"].tier, done["bad"].artifact.exists()) == ("python", True)


def test_missing_nuitka_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "nuitka", None)  # how Python marks a module not importable
    with pytest.raises(CompileError) as raised:
        compile_modules({"m": SRC}, CompileSettings(backend="nuitka"), tmp_path)
    assert (
        str(raised.value)
        == NUITKA_MISSING
        == (
            "backend 'nuitka' needs Nuitka, which is not installed: pip install '.[nuitka]' "
            "(or pip install nuitka), or use --backend cython"
        )
    )


@pytest.mark.parametrize(
    ("message", "kind", "where"),
    [
        (
            "cc m.c failed: cc1: error: bad value \u2018x\u2019 for \u2018-march=\u2019 switch",
            "flag",
            ("", 0),
        ),
        ("cc m.c failed: cc: error: unrecognized command-line option '-mfoo'", "flag", ("", 0)),
        ("cc m.c failed: m.c:12:3: error: expected ';'", "c", ("m.c", 12)),
        ("cython: m.py: m.py:5:20: Cannot assign type", "cython", ("m.py", 5)),
        ("nuitka m.py failed: FATAL: error", "nuitka", ("", 0)),
        ("cc m.c failed: ld: cannot find -lpython", "unknown", ("", 0)),
    ],
)
def test_compiler_messages_are_classified(message: str, kind: str, where: tuple[str, int]) -> None:
    diagnostic = parse_compiler_message(message)
    assert (diagnostic.kind, (diagnostic.file, diagnostic.line)) == (kind, where)
    assert diagnostic.flags_may_help == (kind in ("flag", "c"))


def test_a_c_line_maps_to_the_python_line_cython_wrote_it_for(tmp_path: Path) -> None:
    c_file = tmp_path / "m.c"
    c_file.write_text('int a;\n  /* "m.py":3\n * x = 1\n */\nint b;\n  /* "m.py":7\nint c\n')
    assert c_line_origin("m.c:5:1: error: x", c_file) == "m.py:3"
    assert c_line_origin("m.c:7:1: error: x", c_file) == "m.py:7"
    assert c_line_origin("m.c:1:1: error: x", c_file) == ""
