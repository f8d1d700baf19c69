"""Static checks: parse, import allowlist, forbidden builtins, mypy with a skeleton cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from codegen.check import check_sources, guard, guard_sources, parse_checked, type_skeleton
from codegen.errors import CheckError
from codegen.render import MECHANISM_FAMILY, module_names, render_module
from codegen.state import AttentionMechanism, load_state

REPO = Path(__file__).resolve().parents[2]
SHIPPED_STATES = (
    "rsi_state.json",
    "states/uniform.json",
    "states/kernels_n100.json",
    "states/routed.json",
)

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
        with pytest.raises(
            CheckError, match=r"^m.py:1: generated code uses the name 'eval', which is not allowed$"
        ):
            parse_checked("m", "x = eval('1')\n")

    def test_forbidden_name_as_attribute(self) -> None:
        with pytest.raises(
            CheckError, match=r"^m.py:2: generated code uses math.exec, which is not allowed$"
        ):
            parse_checked("m", "import math\nf = math.exec\n")

    @pytest.mark.parametrize("source", ["from .experts import run\n", "from .. import x\n"])
    def test_relative_import_is_refused(self, source: str) -> None:
        with pytest.raises(
            CheckError,
            match=(
                r"^m.py:1: generated code uses a relative import other than "
                r"'from \. import <module>'$"
            ),
        ):
            parse_checked("m", source)

    def test_sibling_module_import_is_allowed(self) -> None:
        parse_checked("m", "from . import reasoning\n\nf = reasoning.run\n")

    def test_syntax_error(self) -> None:
        with pytest.raises(CheckError, match=r"^m.py:1: does not parse"):
            parse_checked("m", "def (:\n")


class TestGuard:
    """The guard is an allowlist over the tree; each refusal names the line."""

    @pytest.mark.parametrize(
        ("source", "message"),
        [
            (
                "from cython.cimports.libc.stdlib import system\n",
                "m.py:1: generated code imports 'system' from 'cython.cimports.libc.stdlib', "
                "which is not allowed",
            ),
            (
                "x = 1\ny = getattr(__builtins__, 'open')\n",
                "m.py:2: generated code uses the name 'getattr', which is not allowed",
            ),
            (
                "x = ().__class__\n",
                "m.py:1: generated code uses the dunder name '__class__', which is not allowed",
            ),
            (
                "import numpy as np\nm = np\n",
                "m.py:2: generated code uses the module 'np' other than to read an attribute",
            ),
            (
                "import numpy as np\nx = np.ctypeslib\n",
                "m.py:2: generated code uses numpy.ctypeslib, which is not allowed",
            ),
            (
                "import cython\nx = cython.inline('1 + 1')\n",
                "m.py:2: generated code uses cython.inline other than as a decorator",
            ),
            (
                "T = type('T', (), {})\n",
                "m.py:1: generated code uses 'type' other than as type(x) of one argument",
            ),
            (
                "x = (i for i in ()).gi_frame\n",
                "m.py:1: generated code uses the attribute 'gi_frame', which is not allowed",
            ),
            (
                "x = '{0.__init__}'.format(1)\n",
                "m.py:1: generated code spells a dunder name in a string literal, "
                "which is not allowed",
            ),
            (
                "class A:\n    v = vars()\n",
                "m.py:2: generated code uses the name 'vars', which is not allowed",
            ),
            (
                "x = print\n",
                "m.py:1: generated code uses the builtin 'print', which is not allowed",
            ),
            (
                "import importlib\n",
                "m.py:1: generated code imports 'importlib', which is not allowed",
            ),
        ],
    )
    def test_bypass_is_refused(self, source: str, message: str) -> None:
        with pytest.raises(CheckError) as info:
            guard("m", source)
        assert str(info.value) == message

    def test_what_the_templates_need_is_allowed(self) -> None:
        guard(
            "m",
            "from __future__ import annotations\n"
            "import cython\nimport numpy as np\n"
            "from cython.cimports.libc.math import exp\n"
            "__all__ = ['A']\n\n\n"
            "class A:\n    def __init__(self, a: object) -> None:\n"
            "        self.name = type(a).__name__\n"
            "        self.ok = type(a) is np.ndarray\n\n\n"
            "@cython.inline\n@cython.cfunc\ndef f(x: cython.double) -> cython.double:\n"
            "    return exp(x)\n",
        )

    @pytest.mark.slow
    @pytest.mark.parametrize("state_file", SHIPPED_STATES)
    def test_every_shipped_module_and_mechanism_passes(self, state_file: str) -> None:
        state = load_state(REPO / state_file)
        for name in module_names():
            selected = state
            if name.startswith(MECHANISM_FAMILY):
                mechanism = AttentionMechanism(name.removeprefix(MECHANISM_FAMILY))
                arch = state.architecture.model_copy(update={"attention": mechanism})
                selected = state.model_copy(update={"architecture": arch})
            guard(name, render_module(name, selected))


class TestSkeleton:
    def test_float_and_string_literals_are_blanked(self) -> None:
        a = type_skeleton(GOOD)
        b = type_skeleton(GOOD.replace("1.5", "7.25").replace("'a'", "'b'"))
        assert a == b

    def test_integers_are_kept(self) -> None:
        a = type_skeleton("X = (1, 2)[0]\n")
        b = type_skeleton("X = (1, 2)[1]\n")
        assert a != b

    def test_a_table_of_literals_keeps_one_element(self) -> None:
        a = type_skeleton("X: list[tuple[int, float]] = [(1, 0.5), (2, -1.5), (3, 2.0)]\n")
        b = type_skeleton("X: list[tuple[int, float]] = [(7, 0.25)]\n")
        assert a == b

    def test_a_table_whose_elements_differ_in_type_is_kept(self) -> None:
        assert type_skeleton("X = [1, 2.0]\n") != type_skeleton("X = [1]\n")

    def test_a_table_of_expressions_is_kept(self) -> None:
        assert type_skeleton("X = [T[1], T[2]]\n") != type_skeleton("X = [T[1]]\n")

    def test_a_module_that_names_literal_keeps_its_tables(self) -> None:
        head = "from typing import Literal\n\nX: list[Literal[1]] = "
        assert type_skeleton(head + "[1, 2]\n") != type_skeleton(head + "[1]\n")


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

    def test_a_longer_table_costs_no_mypy_run(self, tmp_path: Path) -> None:
        head = "X: list[tuple[int, float]] = "
        assert check_sources({"m": head + "[(1, 0.5)]\n"}, tmp_path) == ["m"]
        assert check_sources({"m": head + "[(1, 0.5), (2, -1.0)]\n"}, tmp_path) == []

    def test_a_changed_sibling_checks_its_importer_again(self, tmp_path: Path) -> None:
        user = "from . import lib\n\n\ndef f() -> int:\n    return lib.g()\n"
        lib = "def g() -> int:\n    return 1\n"
        assert check_sources({"user": user, "lib": lib}, tmp_path) == ["lib", "user"]
        changed = lib.replace("-> int:\n    return 1", "-> str:\n    return 'x'")
        with pytest.raises(CheckError, match=r"^mypy: user.py:5: error: Incompatible return"):
            check_sources({"user": user, "lib": changed}, tmp_path)


class TestSiblings:
    def test_an_import_of_a_missing_sibling_is_refused(self, tmp_path: Path) -> None:
        user = "from . import opcodes\n\nX: int = opcodes.F_MOVE\n"
        with pytest.raises(
            CheckError,
            match=r"^user.py:1: generated code imports 'opcodes', which is not a module of "
            r"this build \(a template or static module is missing from the template dir\)$",
        ):
            guard_sources({"user": user}, tmp_path)

    def test_an_unparsable_sibling_is_the_guard_s_one_line(self, tmp_path: Path) -> None:
        user = "from . import lib\n\nX: int = lib.Y\n"
        with pytest.raises(CheckError, match=r"^lib.py:1: does not parse"):
            guard_sources({"user": user, "lib": "def broken(:\n"}, tmp_path)
