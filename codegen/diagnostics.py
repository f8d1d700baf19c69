"""Map a line of generated source back to the template line and the state field behind it.

A compiler or checker reports ``scoring.py:12``; the user edits ``rsi_state.json`` and the
template author edits ``scoring.py.j2``. On a failure (never on the fast path) the module is
rendered again by a loader that appends a marker ``#@rsi:<template>:<line>@`` to every line
of template text, so each output line carries the template line it came from (macros and
imports included). The failing line is found in that render by content (black may have
moved it), and the ``{{ ... }}`` expressions of its template line are resolved through the
template's ``for``/``set`` tags to state paths, made concrete by the values on the line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jinja2

from codegen import render
from codegen.errors import RSIError
from codegen.plan import plan
from codegen.state import BenchmarkSummary, RSIState

__all__ = [
    "CompilerDiagnostic",
    "Origin",
    "c_line_origin",
    "locate",
    "origin_of_message",
    "parse_compiler_message",
    "with_origin",
]

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=RSIError)

_MARK = re.compile(r"\s*#@rsi:([^:@]+):(\d+)@$")
_EXPR = re.compile(r"\{\{-?\s*([A-Za-z_][\w.]*(?:\[\d+\][\w.]*)*)")
_FOR = re.compile(
    r"\{%-?\s*for\s+(\w+)(?:\s*,\s*(\w+))?\s+in\s+([A-Za-z_][\w.]*?)"
    r"(\.items\(\)|\.values\(\)|\.keys\(\))?(\s*\|\s*dictsort)?\s"
)
_SET = re.compile(r"\{%-?\s*set\s+(\w+)\s*=\s*([A-Za-z_][\w.]*)")
#: ``name.py:LINE`` in a checker or compiler message, or black's ``Cannot parse ...: L:C:``.
_GENERATED_LINE = re.compile(r"\b([A-Za-z_]\w*)\.py:(\d+)\b")
_RAW_LINE = re.compile(r"^([A-Za-z_]\w*)\.py\.j2: rendered source is not valid Python: .*?: (\d+):")


@dataclass(frozen=True)
class CompilerDiagnostic:
    """What a compiler's message says went wrong, as far as the next attempt cares.

    ``kind``: ``flag`` (the C compiler rejects a command-line flag: ``-march=`` values,
    unknown options), ``c`` (an error in the C source, which other flags may avoid: a
    ``-Werror`` or a target attribute), ``cython`` / ``nuitka`` (the source itself: no flag
    changes it), ``unknown``.
    """

    kind: str
    file: str
    line: int
    message: str

    @property
    def flags_may_help(self) -> bool:
        """Whether retrying with other C flags can succeed."""
        return self.kind in ("flag", "c")


def parse_compiler_message(message: str) -> CompilerDiagnostic:
    """Classify one compile failure message (``codegen.compile`` words them as
    ``cython: <file>: <file>:L:C: msg``, ``<cc> <file>.c failed: <gcc line>``, ``nuitka
    <file> failed: ...``)."""
    if message.startswith("cython:"):
        where = _CYTHON_AT.search(message)
        file, line = (where.group(1), int(where.group(2))) if where else ("", 0)
        return CompilerDiagnostic("cython", file, line, message)
    if message.startswith("nuitka"):
        return CompilerDiagnostic("nuitka", "", 0, message)
    if _CC_FLAG.search(message):
        return CompilerDiagnostic("flag", "", 0, message)
    where = _CC_AT.search(message)
    if where:
        return CompilerDiagnostic("c", where.group(1), int(where.group(2)), message)
    return CompilerDiagnostic("unknown", "", 0, message)


def c_line_origin(message: str, c_file: Path) -> str:
    """``name.py:L`` for the C line a gcc message names, from the ``/* "name.py":L``
    comments Cython writes above the C it generates for each source line; ``""`` if none."""
    where = _CC_AT.search(message)
    if where is None or not c_file.exists():
        return ""
    found = ""
    with c_file.open() as fh:
        for number, text in enumerate(fh, start=1):
            if number > int(where.group(2)):
                break
            mark = _C_MARK.match(text)
            if mark:
                found = f"{mark.group(1)}:{mark.group(2)}"
    return found


_CYTHON_AT = re.compile(r"\b([A-Za-z_]\w*\.py):(\d+):\d+: ")
_CC_AT = re.compile(r"\b([A-Za-z_]\w*\.c):(\d+):(?:\d+:)? (?:fatal )?error:")
_CC_FLAG = re.compile(
    r"unrecognized command[- ]line option|bad value .* for \W?-m|invalid argument .* to \W?-m"
    r"|unknown (?:architecture|target CPU)|switch '?-m\w+=.*' is not supported"
)
_C_MARK = re.compile(r'^\s*/\* "([A-Za-z_]\w*\.py)":(\d+)\s*$')


@dataclass(frozen=True)
class Origin:
    """Where a generated line came from."""

    module: str
    line: int
    template: str
    template_line: int
    template_text: str
    fields: tuple[str, ...]

    def describe(self) -> str:
        """One line: ``template.py.j2:31 `text`, state field a.b``."""
        text = self.template_text.strip()
        text = text if len(text) <= 80 else text[:77] + "..."
        where = f"from {self.template}:{self.template_line} `{text}`"
        if not self.fields:
            return f"{where}, no state field on that line"
        label = "state field" if len(self.fields) == 1 else "state fields"
        return f"{where}, {label} {', '.join(self.fields)}"


def with_origin(
    exc: E, state: RSIState, template_dir: Path | None, sources: Mapping[str, str] | None
) -> E:
    """``exc`` with the origin of the generated line it names appended, when traceable."""
    origin = origin_of_message(str(exc), state, template_dir, sources)
    if origin is None:
        return exc
    return type(exc)(f"{exc} [{origin.describe()}]")


def origin_of_message(
    message: str,
    state: RSIState,
    template_dir: Path | None = None,
    sources: Mapping[str, str] | None = None,
) -> Origin | None:
    """The origin of the first generated line a diagnostic names, if it can be found.

    ``sources`` are the formatted modules (line numbers of checkers and compilers); a
    black failure names a line of the raw render instead, which needs no sources.
    """
    raw = _RAW_LINE.search(message)
    if raw:
        return locate(raw.group(1), int(raw.group(2)), state, template_dir, source=None)
    for match in _GENERATED_LINE.finditer(message):
        name, line = match.group(1), int(match.group(2))
        if sources is not None and name in sources:
            return locate(name, line, state, template_dir, source=sources[name])
    return None


def locate(
    module: str,
    line: int,
    state: RSIState,
    template_dir: Path | None = None,
    *,
    source: str | None,
) -> Origin | None:
    """Origin of ``line`` (1-based) of ``module``'s formatted ``source``, or of its raw
    render when ``source`` is None; None when the line cannot be traced."""
    try:
        marked = _marked_render(module, state, template_dir)
    except (jinja2.TemplateError, OSError, ValueError, TypeError) as exc:
        logger.debug("no line map for %s: %s", module, exc)
        return None
    index = line - 1 if source is None else _find(source, line, marked)
    if index is None or not 0 <= index < len(marked):
        return None
    _, template, template_line = marked[index]
    if not template:
        return None
    root = template_dir or render.TEMPLATE_DIR
    template_source = (root / template).read_text()
    text = template_source.splitlines()[template_line - 1]
    same = [i for i, (_, t, n) in enumerate(marked) if (t, n) == (template, template_line)]
    # The nth of ``len(same)`` lines this template line produced: its loop's nth iteration.
    position = (same.index(index), len(same))
    before = "\n".join(template_source.splitlines()[:template_line])
    # Values are looked for on the line as compiled (black may have split a long one).
    shown = marked[index][0] if source is None else source.splitlines()[line - 1]
    fields = _fields(before, text, _neutral(state), shown, position)
    return Origin(module, line, template, template_line, text, fields)


def _neutral(state: RSIState) -> RSIState:
    # Templates see this (as in render_sources), so values on generated lines match it.
    return state.model_copy(update={"version": 1, "benchmark": BenchmarkSummary()})


def _marked_render(
    module: str, state: RSIState, template_dir: Path | None
) -> list[tuple[str, str, int]]:
    """``(code, template, template line)`` per output line of the raw render."""
    root = template_dir or render.TEMPLATE_DIR
    env = render._environment(str(root)).overlay(loader=_MarkingLoader(str(root)), cache_size=0)
    neutral = _neutral(state)
    template = env.get_template(f"{module}.py.j2")
    raw = template.render(state=neutral, plan=plan(neutral), module=module)
    out: list[tuple[str, str, int]] = []
    for text in raw.split("\n"):
        match = _MARK.search(text)
        if match:
            out.append((text[: match.start()], match.group(1), int(match.group(2))))
        else:
            out.append((text, "", 0))
    return out


class _MarkingLoader(jinja2.FileSystemLoader):
    """Appends ``#@rsi:<template>:<line>@`` to every template line that ends in text."""

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        ends: set[int] = set()
        for lineno, kind, value in environment.lex(source, template):
            if kind == "data":
                ends.update(lineno + i for i in range(value.count("\n")))
        lines = source.split("\n")
        marked = [
            f"{text}#@rsi:{template}:{n}@" if n in ends else text
            for n, text in enumerate(lines, start=1)
        ]
        return "\n".join(marked), filename, uptodate


def _squash(text: str) -> str:
    # What black changes: whitespace, quote style, magic trailing commas, literal case.
    flat = "".join(text.split()).replace("'", '"').lower()
    return re.sub(r",([)\]}])", r"\1", flat).strip(",")


def _find(source: str, line: int, marked: list[tuple[str, str, int]]) -> int | None:
    """Index in ``marked`` of formatted ``source``'s ``line``, matched by content."""
    lines = source.splitlines()
    if not 1 <= line <= len(lines):
        return None
    target = _squash(lines[line - 1])
    if not target:
        return None
    nth = sum(1 for text in lines[: line - 1] if _squash(text) == target)
    exact = [i for i, (code, _, _) in enumerate(marked) if _squash(code) == target]
    if exact:
        return exact[min(nth, len(exact) - 1)]
    # black split or joined the line: the nearest raw line containing it, or contained in it.
    loose = [
        i
        for i, (code, _, _) in enumerate(marked)
        if _squash(code) and (target in _squash(code) or _squash(code) in target)
    ]
    return loose[min(nth, len(loose) - 1)] if loose else None


def _fields(
    before: str, text: str, state: RSIState, generated: str, position: tuple[int, int]
) -> tuple[str, ...]:
    """State paths the ``{{ ... }}`` expressions of template line ``text`` read.

    ``before`` is the template up to that line: the last binding of a name wins, which is
    the innermost enclosing loop for well-scoped templates.
    """
    bindings = _bindings(before)
    data = state.model_dump(mode="json")
    found: list[str] = []
    for match in _EXPR.finditer(text):
        expr = match.group(1)
        if text[match.end() : match.end() + 1] == "(":  # a method call: its object is read
            expr = expr.rpartition(".")[0]
        pattern = _resolve(expr, bindings, depth=0)
        if pattern is None:
            continue
        path = _concrete(pattern, data, generated, position)
        if path not in found:
            found.append(path)
    return tuple(found)


def _bindings(template_source: str) -> dict[str, str]:
    """Loop and ``set`` variables → the state expression they range over or copy."""
    found: list[tuple[int, str, str]] = []  # (position in the template, name, expression)
    for match in _FOR.finditer(template_source):
        first, second, collection, method, dictsort = match.groups()
        order = "s" if dictsort else ""  # |dictsort iterates by sorted key
        if second:  # for key, value in <dict>.items() / |dictsort
            found.append((match.start(), first, f"{collection}.#key{order}"))
            found.append((match.start(), second, f"{collection}.*{order}"))
        elif method == ".values()":
            found.append((match.start(), first, f"{collection}.*"))
        elif method == ".keys()" or dictsort:
            found.append((match.start(), first, f"{collection}.#key{order}"))
        else:
            found.append((match.start(), first, f"{collection}.#item"))
    for match in _SET.finditer(template_source):
        found.append((match.start(), match.group(1), match.group(2)))
    return {name: expr for _, name, expr in sorted(found)}


def _resolve(expr: str, bindings: dict[str, str], depth: int) -> str | None:
    head, _, rest = expr.partition(".")
    if head == "state":
        return rest or None
    if head in bindings and depth < 8:
        base = _resolve(bindings[head], bindings, depth + 1)
        if base is None:
            return None
        return f"{base}.{rest}" if rest else base
    return None


def _concrete(pattern: str, data: Any, generated: str, position: tuple[int, int]) -> str:
    """The instance of ``pattern`` on the generated line: the one whose value is shown
    there, or else the nth when the template line ran once per instance."""
    matches = list(_expand(pattern.replace("[", ".[").split("."), data, ""))
    if not matches:
        return _pretty(pattern)
    on_line = [path for path, value in matches if _shown(value, generated)]
    if len(on_line) == 1:
        return on_line[0]
    if len(matches) == 1:
        return matches[0][0]
    nth, runs = position
    if runs == len(matches) and (not on_line or matches[nth][0] in on_line):
        return matches[nth][0]
    return _pretty(pattern)


def _expand(parts: list[str], value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if not parts:
        yield prefix, value
        return
    part, rest = parts[0], parts[1:]
    if part.startswith("[") and isinstance(value, list):  # a literal index: [3]
        index = int(part[1:-1])
        if index < len(value):
            yield from _expand(rest, value[index], f"{prefix}{part}")
        return
    if part == "#item" and isinstance(value, dict):
        part = "#key"  # iterating a mapping yields its keys
    if part in ("*", "*s", "#item"):
        items = (
            [(f"[{i}]", v) for i, v in enumerate(value)]
            if isinstance(value, list)
            else [(f".{k}", v) for k, v in _ordered(value, part)]
            if isinstance(value, dict)
            else []
        )
        for suffix, item in items:
            yield from _expand(rest, item, prefix + suffix)
    elif part in ("#key", "#keys") and isinstance(value, dict):
        for key, _ in _ordered(value, part):
            yield from _expand(rest, key, f"{prefix}.{key} (key)")
    elif isinstance(value, dict) and part in value:
        yield from _expand(rest, value[part], f"{prefix}.{part}" if prefix else part)


def _ordered(mapping: dict[str, Any], part: str) -> list[tuple[str, Any]]:
    return sorted(mapping.items()) if part.endswith("s") else list(mapping.items())


def _shown(value: Any, generated: str) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, str):
        return re.search(rf"\b{re.escape(value)}\b", generated) is not None
    if isinstance(value, int | float):
        return re.search(rf"(?<![\w.]){re.escape(repr(value))}(?![\w.])", generated) is not None
    return False


def _pretty(pattern: str) -> str:
    for marker, shown in (
        (".#keys", " (key)"),
        (".#key", " (key)"),
        (".#item", "[*]"),
        (".*s", ".<key>"),
        (".*", ".<key>"),
    ):
        pattern = pattern.replace(marker, shown)
    return pattern
