"""Static checks on generated sources before anything is compiled or imported.

Three layers, cheapest first: libcst parses each module; an allowlist of imports and a
denylist of dynamic-code builtins (defense in depth behind the schema's validation); mypy.
mypy costs about a second, so a module's result is cached under the hash of its *type
skeleton*: the source with float and string literals blanked (their types kept). Changing a
coefficient changes a literal, not a type, so it costs no mypy run. Integers are kept: they
index tuples and size ranges, where mypy can tell one value from another.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

import libcst as cst
from mypy import api as mypy_api

from codegen.errors import CheckError

__all__ = [
    "ALLOWED_IMPORTS",
    "FORBIDDEN_NAMES",
    "MYPY_FLAGS",
    "parse_checked",
    "type_skeleton",
    "type_check",
    "check_sources",
]

logger = logging.getLogger(__name__)

ALLOWED_IMPORTS = frozenset(
    {
        "__future__",
        "cython",
        "cython.cimports.libc.math",
        "cython.cimports.libc.stdlib",
        "cython.cimports.libc.string",
        "math",
        "numpy",
        "typing",
    }
)
FORBIDDEN_NAMES = frozenset(
    {"eval", "exec", "compile", "__import__", "open", "globals", "locals", "breakpoint", "input"}
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
    """Parse ``source`` and enforce the import allowlist and the builtin denylist."""
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        raise CheckError(f"{name}.py:{exc.raw_line}: does not parse: {exc.message}") from None
    guard = _ImportAndNameGuard()
    module.visit(guard)
    if guard.problem:
        raise CheckError(f"{name}.py: {guard.problem}")
    return module


def type_skeleton(module: cst.Module) -> str:
    """The module's source with float and string literals blanked, their types kept."""
    return module.visit(_BlankLiterals()).code


def check_sources(sources: Mapping[str, str], ok_dir: Path) -> list[str]:
    """Run every check on modules not already known good; return the names mypy checked.

    ``ok_dir`` keeps empty marker files: ``src-<hash>`` for a source that passed everything,
    ``<hash>`` for a type skeleton that passed mypy.
    """
    fresh = {
        name: source
        for name, source in sources.items()
        if not (ok_dir / f"src-{_sha(source)}").exists()
    }
    checked = type_check(fresh, ok_dir)
    for source in fresh.values():
        (ok_dir / f"src-{_sha(source)}").touch()
    return checked


def type_check(sources: Mapping[str, str], ok_dir: Path) -> list[str]:
    """Parse-check all ``sources`` and mypy those whose skeleton is not known good."""
    ok_dir.mkdir(parents=True, exist_ok=True)
    pending: dict[str, str] = {}
    for name, source in sources.items():
        skeleton = type_skeleton(parse_checked(name, source))
        digest = hashlib.sha256(skeleton.encode()).hexdigest()
        if not (ok_dir / digest).exists():
            pending[name] = digest
    if not pending:
        return []
    with tempfile.TemporaryDirectory(prefix="rsi-mypy-") as tmp:
        paths = []
        for name in pending:
            path = Path(tmp) / f"{name}.py"
            path.write_text(sources[name])
            paths.append(str(path))
        cache = ok_dir.parent / "mypy_cache"
        stdout, stderr, status = mypy_api.run([*MYPY_FLAGS, f"--cache-dir={cache}", *paths])
    if status != 0:
        first = (stdout.strip() or stderr.strip()).splitlines()[0]
        raise CheckError(f"mypy: {first.replace(tmp + '/', '')}")
    for digest in pending.values():
        (ok_dir / digest).touch()
    logger.debug("mypy checked %s", sorted(pending))
    return sorted(pending)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class _ImportAndNameGuard(cst.CSTVisitor):
    def __init__(self) -> None:
        self.problem = ""

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            self._check_module(_dotted(alias.name))

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.relative or node.module is None:
            self.problem = self.problem or "relative imports are not allowed in generated code"
            return
        self._check_module(_dotted(node.module))

    def visit_Name(self, node: cst.Name) -> None:
        if node.value in FORBIDDEN_NAMES and not self.problem:
            self.problem = f"generated code uses forbidden name {node.value!r}"

    def _check_module(self, module: str) -> None:
        if module not in ALLOWED_IMPORTS and not self.problem:
            self.problem = f"generated code imports {module!r}, which is not allowed"


class _BlankLiterals(cst.CSTTransformer):
    def leave_Float(self, original: cst.Float, updated: cst.Float) -> cst.Float:
        return updated.with_changes(value="0.0")

    def leave_SimpleString(
        self, original: cst.SimpleString, updated: cst.SimpleString
    ) -> cst.SimpleString:
        return updated.with_changes(value='""')


def _dotted(node: cst.BaseExpression) -> str:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    return "?"
