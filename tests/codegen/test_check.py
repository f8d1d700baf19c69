"""Static checks: parse, import allowlist, forbidden builtins, mypy with a skeleton cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from codegen.check import check_sources, parse_checked, type_skeleton
from codegen.errors import CheckError

GOOD = (
    "import math\n\nX: float = 1.5\nNAME: str = 'a'\n\n\n"
    "def f(y: float) -> float:\n    return math.sqrt(X * y)\n"
)


class TestAllowlist:
    def test_import_os_is_refused(self) -> None:
        with pytest.raises(
            CheckError, match=r"^m.py:1: generated code imports 'os', which is not allowed$"
        ):
            parse_checked("m", "import os\n")

    def test_from_import_subprocess_is_refused(self) -> None:
        with pytest.raises(CheckError, match=r"imports 'subprocess'"):
            parse_checked("m", "from subprocess import run\n")

    def test_eval_is_refused(self) -> None:
        with pytest.raises(CheckError, match=r"^m.py:1: generated code uses the name 'eval', which is not allowed$"):
            parse_checked("m", "x = eval('1')\n")

    def test_forbidden_name_as_attribute(self) -> None:
        with pytest.raises(CheckError, match=r"^m.py:2: generated code uses math.exec, which is not allowed$"):
            parse_checked("m", "import math\nf = math.exec\n")

    def test_relative_import_is_refused(self) -> None:
        with pytest.raises(CheckError, match=r"^m.py:1: generated code uses a relative import, which is not allowed$"):
            parse_checked("m", "from . import experts\n")

    def test_syntax_error(self) -> None:
        with pytest.raises(CheckError, match=r"^m.py:1: does not parse"):
            parse_checked("m", "def (:\n")


class TestSkeleton:
    def test_float_and_string_literals_are_blanked(self) -> None:
        a = type_skeleton(GOOD)
        b = type_skeleton(GOOD.replace("1.5", "7.25").replace("'a'", "'b'"))
        assert a == b

    def test_integers_are_kept(self) -> None:
        a = type_skeleton("X = (1, 2)[0]\n")
        b = type_skeleton("X = (1, 2)[1]\n")
        assert a != b


class TestMypy:
    def test_type_error_stops_the_check(self, tmp_path: Path) -> None:
        bad = "def f(x: int) -> str:\n    return x\n"
        with pytest.raises(
            CheckError, match=r"^mypy: m.py:2: error: Incompatible return value type"
        ):
            check_sources({"m": bad}, tmp_path)

    def test_coefficient_change_costs_no_mypy_run(self, tmp_path: Path) -> None:
        assert check_sources({"m": GOOD}, tmp_path) == ["m"]
        assert check_sources({"m": GOOD.replace("1.5", "3.5")}, tmp_path) == []
