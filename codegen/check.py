"""Static checks on generated sources before anything is compiled or imported.

Three layers, cheapest first: libcst parses each module; an allowlist of imports and a
denylist of dynamic-code builtins (defense in depth behind the schema's validation); mypy.
mypy costs about a second, so a module's result is cached under the hash of its *type
skeleton*: the source with float and string literals blanked (their types kept). Changing a
coefficient changes a literal, not a type, so it costs no mypy run. Integers are kept: they
index tuples and size ranges, where mypy can tell one value from another.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import subprocess
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
    "lint_sources",
    "LINT_RULES",
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
    """Parse ``source`` with libcst; enforce the import allowlist and the builtin denylist.

    The guard walks Python's own ``ast`` (C-speed) rather than the libcst tree: the same
    names, a tenth of the time, on the path of every coefficient change.
    """
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        raise CheckError(f"{name}.py:{exc.raw_line}: does not parse: {exc.message}") from None
    problem = _guard_problem(ast.parse(source))
    if problem:
        raise CheckError(f"{name}.py: {problem}")
    return module


def type_skeleton(source: str) -> str:
    """The module's syntax tree with float and string literals blanked, their types kept.

    Line numbers and formatting do not enter it: only what mypy can see.
    """
    return ast.dump(_BlankLiterals().visit(ast.parse(source)))


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
        parse_checked(name, source)
        skeleton = type_skeleton(source)
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


#: ruff rules every rendered module must pass: pyflakes (unused imports and names, undefined
#: names, shadowing). Generated code should read like code written by hand.
LINT_RULES = "F"


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


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


#: Fields of ``ast`` nodes that hold a name the code binds or reads.
_NAME_FIELDS = ("id", "attr", "name", "arg", "asname")


def _guard_problem(tree: ast.Module) -> str:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level or node.module is None:
                return "relative imports are not allowed in generated code"
            modules = [node.module]
        else:
            modules = []
        for module in modules:
            if module not in ALLOWED_IMPORTS:
                return f"generated code imports {module!r}, which is not allowed"
        for field in _NAME_FIELDS:
            value = getattr(node, field, None)
            if isinstance(value, str) and value in FORBIDDEN_NAMES:
                return f"generated code uses forbidden name {value!r}"
    return ""


class _BlankLiterals(ast.NodeTransformer):
    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        if isinstance(node.value, float):
            return ast.Constant(0.0)
        if isinstance(node.value, str):
            return ast.Constant("")
        return node
