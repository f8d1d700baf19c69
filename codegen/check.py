"""Static checks on generated sources before anything is compiled or imported.

Three layers, cheapest first: libcst parses each module; the guard, an allowlist over the
parsed tree (defense in depth behind the schema's validation, and the fence around what a
template may do): exact imports and cimports, each imported module's attributes, builtin
names; no dunder names or attributes, no dynamic lookups (``getattr``, ``vars``, frames,
``str.format`` fields), no ``eval``/``exec``/``open``/``__import__``; then mypy.
mypy costs about a second, so a module's result is cached under the hash of its *type
skeleton*: the source with float and string literals blanked (their types kept). Changing a
coefficient changes a literal, not a type, so it costs no mypy run. Integers are kept: they
index tuples and size ranges, where mypy can tell one value from another; only in a table
(a list display of literals) do they blank too, and the table keeps one row.
"""

from __future__ import annotations

import ast
import builtins
import functools
import hashlib
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from codegen.errors import CheckError
from codegen.fsutil import process_alive

if TYPE_CHECKING:
    import libcst as cst

__all__ = [
    "ALLOWED_BUILTINS",
    "ALLOWED_IMPORTS",
    "FORBIDDEN_NAMES",
    "FROM_IMPORTS",
    "MODULE_ATTRIBUTES",
    "guard",
    "guard_sources",
    "import_closure",
    "MYPY_FLAGS",
    "parse_checked",
    "type_skeleton",
    "type_check",
    "check_sources",
    "remove_stale_mypy_dirs",
    "MYPY_TMP_PREFIX",
    "lint_sources",
    "LINT_RULES",
]

logger = logging.getLogger(__name__)

#: ``import X`` (or ``import X as Y``): modules generated code may import whole. Each one's
#: attributes are allowlisted too (:data:`MODULE_ATTRIBUTES`): numpy alone can load pickles,
#: map files and call C through ``ctypes``.
PLAIN_IMPORTS = frozenset({"cython", "math", "numpy"})
#: ``from M import N``: the exact names each module may give. ``cython.cimports.libc.stdlib``
#: has ``system``; only allocation is allowed from it.
FROM_IMPORTS: Mapping[str, frozenset[str]] = {
    "__future__": frozenset({"annotations"}),
    "cython.cimports.libc.math": frozenset(
        "exp expf log logf sqrt sqrtf tanh tanhf fabs fabsf sin cos pow floor ceil fmax "
        "fmin INFINITY HUGE_VAL".split()
    ),
    "cython.cimports.libc.stdlib": frozenset({"malloc", "calloc", "free"}),
    "cython.cimports.libc.string": frozenset({"memcpy", "memset"}),
    "typing": frozenset({"Any", "Final", "Literal", "TypeAlias", "cast"}),
}
ALLOWED_IMPORTS = PLAIN_IMPORTS | frozenset(FROM_IMPORTS)
MODULE_ATTRIBUTES: Mapping[str, frozenset[str]] = {
    "cython": frozenset(
        "Py_ssize_t bint boundscheck cast cdivision cfunc ccall compiled const declare "
        "double exceptval float initializedcheck int long longlong nogil locals returns "
        "size_t uchar uint ulong void wraparound char short p_double p_float p_int "
        "inline".split()
    ),
    "math": frozenset(
        "exp log log1p expm1 sqrt tanh sin cos pi e inf isfinite isnan fabs floor ceil "
        "fsum pow erf hypot".split()
    ),
    "numpy": frozenset(
        "arange array ascontiguousarray bool_ cos dtype empty empty_like exp float32 "
        "float64 int8 int16 int32 int64 intc intp log maximum minimum ndarray ones sin "
        "sqrt tanh uint8 uint16 uint32 zeros zeros_like where full dot matmul einsum "
        "sum abs clip argmax argsort inf pi".split()
    ),
}
#: Module attributes allowed only as a bare decorator: ``cython.inline("code")`` compiles
#: and runs a string, ``@cython.inline`` marks a function inline.
DECORATOR_ONLY = frozenset({("cython", "inline")})
#: Builtins generated code may name. Anything else in :mod:`builtins` (``getattr``,
#: ``vars``, ``open``, ``__import__``, ...) is refused wherever it appears.
ALLOWED_BUILTINS = frozenset(
    "abs all any bool dict divmod enumerate float frozenset int isinstance len list "
    "map max min object pow range reversed round set sorted str sum tuple zip "
    "classmethod staticmethod property Exception ArithmeticError AssertionError "
    "IndexError KeyError LookupError StopIteration "
    "NotImplementedError OverflowError RuntimeError TypeError ValueError "
    "ZeroDivisionError type".split()
)
#: Named here for the reader and the fuzzer; :data:`ALLOWED_BUILTINS` already excludes them.
FORBIDDEN_NAMES = frozenset(
    "eval exec compile __import__ open globals locals breakpoint input getattr "
    "setattr delattr hasattr vars dir importlib".split()
)
#: Dunder names generated code may use, by where they appear.
ALLOWED_DUNDERS = frozenset({("Name", "__all__"), ("FunctionDef", "__init__")})
#: Attributes refused on any object: frames, code and globals reached through objects,
#: str.format's attribute lookups, numpy's C pointer and pickle writers.
FORBIDDEN_ATTRIBUTES = frozenset(
    "gi_frame gi_code cr_frame cr_code ag_frame ag_code f_globals f_locals "
    "f_builtins f_back f_code tb_frame tb_next co_code func_globals mro format "
    "format_map ctypes tofile dump dumps load loads".split()
)
MYPY_FLAGS: tuple[str, ...] = (
    "--python-version=3.11",
    "--ignore-missing-imports",
    "--follow-imports=silent",
    "--disallow-untyped-defs",
    "--disallow-incomplete-defs",
    "--check-untyped-defs",
    "--no-implicit-optional",
    "--warn-unused-ignores",
    "--no-error-summary",
    "--hide-error-context",
    "--no-color-output",
    "--config-file=/dev/null",  # the project's own mypy config is not for generated code
)


def parse_checked(name: str, source: str) -> cst.Module:
    """Parse ``source`` with libcst and run the :func:`guard` on it."""
    import libcst as cst  # libcst and mypy: imported on first use, not for known-good code

    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        raise CheckError(f"{name}.py:{exc.raw_line}: does not parse: {exc.message}") from None
    guard(name, source)
    return module


def guard(name: str, source: str) -> None:
    """Refuse ``source`` unless everything it names is allowlisted; see the module doc.

    The message is one line, ``<name>.py:<line>: generated code ...``, so that
    :func:`codegen.diagnostics.with_origin` can add the template line behind it. The guard
    walks Python's own ``ast`` (C-speed), not the libcst tree.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise CheckError(f"{name}.py:{exc.lineno}: does not parse: {exc.msg}") from None
    problem = _Guard(tree).first_problem()
    if problem is not None:
        line, text = problem
        raise CheckError(f"{name}.py:{line}: generated code {text}")


def guard_sources(sources: Mapping[str, str], ok_dir: Path) -> None:
    """:func:`guard` every module not already known good (see :func:`check_sources`).

    A build runs this before compiling anything, so a refused module never reaches a
    compiler; a known-good source costs one ``stat``.
    """
    for name, source in sources.items():
        if not (ok_dir / f"src-{_closure_sha(name, sources)}").exists():
            guard(name, source)
            _siblings_present(name, source, sources)


def type_skeleton(source: str) -> str:
    """The module's syntax tree with float and string literals blanked, their types kept.

    A list display of plain literals (numbers, strings, tuples or lists of them) whose
    elements are alike once blanked (integers too; inner lengths kept) keeps one element:
    mypy gives it one element type whatever its length and values, so a baked table can
    grow or shrink without a mypy run. Not in a module that names ``Literal``, where a value
    can be a type. Line numbers and formatting do not enter it: only what mypy can see.
    """
    tree = ast.parse(source)
    names_literal = any(
        isinstance(node, ast.Name | ast.Attribute | ast.alias) and _named(node) == "Literal"
        for node in ast.walk(tree)
    )
    return ast.dump(_BlankLiterals(collapse_tables=not names_literal).visit(tree))


def check_sources(sources: Mapping[str, str], ok_dir: Path) -> list[str]:
    """Run every check on modules not already known good; return the names mypy checked.

    ``ok_dir`` keeps empty marker files: ``src-<hash>`` for a source that passed everything,
    ``<hash>`` for a type skeleton that passed mypy. Both hash the module with every sibling
    it imports (``from . import x``, transitively): a changed sibling checks it again.
    """
    markers = {name: ok_dir / f"src-{_closure_sha(name, sources)}" for name in sources}
    fresh = {name: source for name, source in sources.items() if not markers[name].exists()}
    checked = type_check(fresh, ok_dir, siblings=sources)
    for name in fresh:
        markers[name].touch()
    return checked


def type_check(
    sources: Mapping[str, str], ok_dir: Path, siblings: Mapping[str, str] | None = None
) -> list[str]:
    """Guard all ``sources`` (:func:`guard`) and mypy those whose skeleton is not known good.

    ``siblings`` are the other modules of the same build: mypy reads them (for
    ``from . import x``) without reporting on them.
    """
    ok_dir.mkdir(parents=True, exist_ok=True)
    build = {**(siblings or {}), **sources}
    pending: dict[str, str] = {}
    for name, source in sources.items():
        guard(name, source)  # ast-based; libcst is for codemods, not needed to check
        seen = "\0".join(type_skeleton(build[n]) for n in import_closure(name, build))
        digest = hashlib.sha256(seen.encode()).hexdigest()
        if not (ok_dir / digest).exists():
            pending[name] = digest
    if not pending:
        return []
    # The pid in the name lets a later command remove a dir this process leaves if killed.
    with tempfile.TemporaryDirectory(prefix=f"{MYPY_TMP_PREFIX}{os.getpid()}-") as tmp:
        # Every module sits in one package, as in a build, so that ``from . import x``
        # resolves; mypy reports on the pending ones and reads the others.
        package = Path(tmp) / "build"
        package.mkdir()
        (package / "__init__.py").write_text("")
        for name, source in build.items():
            (package / f"{name}.py").write_text(source)
        paths = [str(package / f"{name}.py") for name in pending]
        cache = ok_dir.parent / "mypy_cache"
        from mypy import api as mypy_api

        stdout, stderr, status = mypy_api.run([*MYPY_FLAGS, f"--cache-dir={cache}", *paths])
    if status != 0:
        first = (stdout.strip() or stderr.strip()).splitlines()[0]
        raise CheckError(f"mypy: {first.replace(str(package) + '/', '')}")
    for digest in pending.values():
        (ok_dir / digest).touch()
    logger.debug("mypy checked %s", sorted(pending))
    return sorted(pending)


def remove_stale_mypy_dirs() -> list[Path]:
    """Delete ``rsi-mypy-<pid>-*`` temp dirs of processes that are gone; return them.

    Only this user's dirs are touched, and never one whose process is alive (it may be
    type-checking right now).
    """
    removed: list[Path] = []
    tmp_root = Path(tempfile.gettempdir())
    for path in tmp_root.glob(f"{MYPY_TMP_PREFIX}*"):
        match = _MYPY_TMP_NAME.fullmatch(path.name)
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if not match or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        if process_alive(int(match.group(1))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        logger.info("removed %d mypy temp dirs left by killed processes", len(removed))
    return removed


MYPY_TMP_PREFIX = "rsi-mypy-"
_MYPY_TMP_NAME = re.compile(rf"{MYPY_TMP_PREFIX}(\d+)-[A-Za-z0-9_]+")


#: ruff rules every rendered module must pass: ruff's defaults (E4, E7, E9: imports at the
#: top, statements, syntax) and pyflakes (unused imports and names, undefined names,
#: shadowing). Generated code should read like code written by hand.
LINT_RULES = "E4,E7,E9,F"


def lint_sources(sources: Mapping[str, str], ok_dir: Path) -> None:
    """Run ruff's :data:`LINT_RULES` on modules not already known clean; CheckError on a finding.

    ``ok_dir`` keeps a ``lint-<hash>`` marker per clean source, so a rebuild lints only what
    changed (one ruff process for all of them, about 20 ms).
    """
    fresh = {
        name: source
        for name, source in sources.items()
        if not (ok_dir / f"lint-{_sha(source)}").exists()
    }
    if not fresh:
        return
    from ruff.__main__ import find_ruff_bin  # type: ignore[import-untyped]

    with tempfile.TemporaryDirectory(prefix="rsi-lint-") as tmp:
        for name, source in fresh.items():
            (Path(tmp) / f"{name}.py").write_text(source)
        cmd = [find_ruff_bin(), "check", "--isolated", "--no-cache", "--select", LINT_RULES]
        proc = subprocess.run(
            [*cmd, "--output-format", "concise", "--quiet", tmp],
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        first = (proc.stdout.strip() or proc.stderr.strip() or "ruff failed").splitlines()[0]
        raise CheckError(f"ruff: {first.replace(tmp + '/', '')}")
    ok_dir.mkdir(parents=True, exist_ok=True)
    for source in fresh.values():
        (ok_dir / f"lint-{_sha(source)}").touch()


def _siblings_present(name: str, source: str, sources: Mapping[str, str]) -> None:
    """Refuse ``from . import x`` of a module the build does not have (a static module
    deleted from a template dir would fail only when the build is imported)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None:
            for alias in node.names:
                if alias.name not in sources:
                    raise CheckError(
                        f"{name}.py:{node.lineno}: generated code imports {alias.name!r}, "
                        "which is not a module of this build (a template or static module "
                        "is missing from the template dir)"
                    )


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _closure_sha(name: str, sources: Mapping[str, str]) -> str:
    return _sha("\0".join(f"{n}\0{sources[n]}" for n in import_closure(name, sources)))


def import_closure(name: str, sources: Mapping[str, str]) -> list[str]:
    """``name``, then the siblings in ``sources`` it imports (``from . import x``),
    transitively, sorted: what a module's behaviour and types depend on."""
    found: set[str] = set()
    todo = [name]
    while todo:
        new = {n for n in _sibling_imports(sources[todo.pop()]) if n in sources}
        new -= found | {name}
        found |= new
        todo.extend(new)
    return [name, *sorted(found)]


@functools.lru_cache(maxsize=256)
def _sibling_imports(source: str) -> frozenset[str]:
    """Names ``source`` imports with ``from . import``; none if it does not parse (the
    guard names that line)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return frozenset()
    return frozenset(
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None
        for alias in node.names
    )


_DUNDER = re.compile(r"__\w*__")


class _Guard:
    """One walk over a module's tree; the first problem found, by line.

    The walk is breadth-first, so a node is seen before its children: an ``Attribute`` or
    ``Call`` marks the ``Name`` it legitimately consumes (``np`` in ``np.zeros``, ``type``
    in ``type(x)``) before that name is visited. Uses of an imported module are checked at
    the end, when every import (wherever it is) is known.
    """

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.aliases: dict[str, str] = {}  # local name -> whole module imported under it
        self.consumed: set[int] = set()  # ids of Name nodes read as allowed
        self.decorators: set[int] = set()  # ids of decorator expressions
        self.problems: list[tuple[int, int, str]] = []  # (line, column, what)

    def first_problem(self) -> tuple[int, str] | None:
        module_reads: list[ast.Attribute] = []
        bare: list[ast.Name] = []
        for node in ast.walk(self.tree):
            text = self._import(node) or self._identifiers(node) or self._usage(node)
            if text is not None:
                self._flag(node, text)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                module_reads.append(node)
            elif isinstance(node, ast.Name) and id(node) not in self.consumed:
                bare.append(node)
        for attr in module_reads:
            self._module_attribute(attr)
        for name in bare:
            if name.id in self.aliases:
                self._flag(name, f"uses the module {name.id!r} other than to read an attribute")
        if not self.problems:
            return None
        line, _, text = min(self.problems)
        return line, text

    def _flag(self, node: ast.AST, text: str) -> None:
        where = (int(getattr(node, "lineno", 1)), int(getattr(node, "col_offset", 0)))
        self.problems.append((*where, text))

    def _import(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name not in PLAIN_IMPORTS:
                    return f"imports {alias.name!r}, which is not allowed"
                self.aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module is None:
                # ``from . import reasoning``: a sibling module of the same build (a build is
                # imported as a package whose only path is its own verified directory).
                return None
            if node.level or node.module is None:
                return "uses a relative import other than 'from . import <module>'"
            allowed = FROM_IMPORTS.get(node.module)
            if allowed is None:
                return f"imports {node.module!r}, which is not allowed"
            for alias in node.names:
                if alias.name not in allowed:
                    return f"imports {alias.name!r} from {node.module!r}, which is not allowed"
        return None

    def _identifiers(self, node: ast.AST) -> str | None:
        """The identifiers a node holds: dunders and forbidden names are refused, and so is
        a name read that is a builtin not in :data:`ALLOWED_BUILTINS`."""
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str | bytes) and _DUNDER.search(str(node.value)):
                return "spells a dunder name in a string literal, which is not allowed"
            return None
        fields = _IDENTIFIER_FIELDS.get(type(node))
        if fields is None:
            return None
        kind = type(node).__name__
        for field in fields:
            value = getattr(node, field)
            for ident in value if isinstance(value, list) else [value]:
                if not isinstance(ident, str):
                    continue
                if _DUNDER.fullmatch(ident) and (kind, ident) not in ALLOWED_DUNDERS:
                    if not (ident == "__name__" and self._type_name(node)):
                        return f"uses the dunder name {ident!r}, which is not allowed"
                if ident in FORBIDDEN_NAMES:
                    return f"uses the name {ident!r}, which is not allowed"
        if isinstance(node, ast.Name) and node.id in _BUILTINS:
            if node.id not in ALLOWED_BUILTINS:
                return f"uses the builtin {node.id!r}, which is not allowed"
        return None

    def _usage(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            self.decorators.update(id(d) for d in node.decorator_list)
        elif isinstance(node, ast.Call) and _is_type_call(node):
            self.consumed.add(id(node.func))
        elif isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and isinstance(node.ctx, ast.Load):
                self.consumed.add(id(node.value))
            if node.attr.startswith("_") and not self._type_name(node):
                return f"reads the private attribute {node.attr!r}, which is not allowed"
            if node.attr in FORBIDDEN_ATTRIBUTES:
                return f"uses the attribute {node.attr!r}, which is not allowed"
        elif isinstance(node, ast.Name) and node.id == "type" and id(node) not in self.consumed:
            return "uses 'type' other than as type(x) of one argument"
        return None

    def _module_attribute(self, node: ast.Attribute) -> None:
        """``np.zeros``: the attribute must be allowlisted for the module read."""
        assert isinstance(node.value, ast.Name)
        module = self.aliases.get(node.value.id)
        if module is None:
            return
        if not isinstance(node.ctx, ast.Load):
            self._flag(node, f"assigns to {module}.{node.attr}, which is not allowed")
        elif node.attr not in MODULE_ATTRIBUTES[module]:
            self._flag(node, f"uses {module}.{node.attr}, which is not allowed")
        elif (module, node.attr) in DECORATOR_ONLY and id(node) not in self.decorators:
            self._flag(node, f"uses {module}.{node.attr} other than as a decorator")

    @staticmethod
    def _type_name(node: ast.AST) -> bool:
        """``type(x).__name__``: the one dunder read the templates need (error messages)."""
        return isinstance(node, ast.Attribute) and _is_type_call(node.value)


def _is_type_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "type"
        and len(node.args) == 1
        and not node.keywords
        and not isinstance(node.args[0], ast.Starred)
    )


#: Where each kind of node holds identifiers (names bound, read or looked up).
_IDENTIFIER_FIELDS: dict[type[ast.AST], tuple[str, ...]] = {
    ast.Name: ("id",),
    ast.Attribute: ("attr",),
    ast.FunctionDef: ("name",),
    ast.AsyncFunctionDef: ("name",),
    ast.ClassDef: ("name",),
    ast.arg: ("arg",),
    ast.keyword: ("arg",),
    ast.alias: ("name", "asname"),
    ast.Global: ("names",),
    ast.Nonlocal: ("names",),
    ast.ExceptHandler: ("name",),
    ast.MatchAs: ("name",),
    ast.MatchStar: ("name",),
    ast.MatchMapping: ("rest",),
    ast.MatchClass: ("kwd_attrs",),
}
_BUILTINS = frozenset(dir(builtins))


class _BlankLiterals(ast.NodeTransformer):
    def __init__(self, *, collapse_tables: bool) -> None:
        self.collapse_tables = collapse_tables

    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        if isinstance(node.value, float):
            return ast.Constant(0.0)
        if isinstance(node.value, str):
            return ast.Constant("")
        return node

    def visit_List(self, node: ast.List) -> ast.AST:
        if self.collapse_tables and node.elts and all(map(_plain_literal, node.elts)):
            shapes = {ast.dump(_BlankNumbers().visit(e)) for e in node.elts}
            if len(shapes) == 1:
                return ast.List(elts=[_BlankNumbers().visit(node.elts[0])], ctx=node.ctx)
        return self.generic_visit(node)


class _BlankNumbers(_BlankLiterals):
    """Integers blanked too: inside a collapsed table, where no value can be a type."""

    def __init__(self) -> None:
        super().__init__(collapse_tables=False)

    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        if type(node.value) is int:
            return ast.Constant(0)
        return super().visit_Constant(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        """``-2.5`` is a float as ``2.5`` is: signs do not enter a table's shape."""
        operand = node.operand
        if isinstance(operand, ast.Constant) and type(operand.value) in (int, float):
            return self.visit_Constant(operand)
        return self.generic_visit(node)


def _plain_literal(node: ast.expr) -> bool:
    """A number, string, bytes or None, a negated number, or a tuple or list of those."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        return isinstance(node.operand, ast.Constant)
    return isinstance(node, ast.Tuple | ast.List) and all(map(_plain_literal, node.elts))


def _named(node: ast.Name | ast.Attribute | ast.alias) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.asname or node.name
