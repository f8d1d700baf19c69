"""Render a validated state into Python sources: jinja2 → black.

Values reach templates only through validated :class:`RSIState` fields and the filters below,
which refuse anything that could become code: ``num`` emits finite number literals (``nums`` a
list of them), ``pyrepr``
emits ``repr()`` of plain strings/ints/bools, ``ident`` re-checks identifiers. A template that
produces something black cannot parse is reported with the rendered line.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import threading
from pathlib import Path
from typing import Any

import jinja2

from codegen.errors import RenderError
from codegen.fsutil import atomic_write
from codegen.plan import COMPOSITE_WIDTH, FACT_OPS, MAX_COMPOSITE, QUESTION_OPS, plan
from codegen.state import BenchmarkSummary, RSIState

__all__ = [
    "TEMPLATE_DIR",
    "MECHANISM_FAMILY",
    "build_modules",
    "module_names",
    "render_sources",
    "render_module",
    "render_raw",
    "static_sources",
    "templates_digest",
    "warm_up",
]

TEMPLATE_DIR = Path(__file__).with_name("templates")


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_BLACK_LINE_LENGTH = 100
_BLACK_IMPORT = threading.Lock()


def render_sources(
    state: RSIState, template_dir: Path | None = None, memo_dir: Path | None = None
) -> dict[str, str]:
    """Render every module of the template dir; return ``{module name: formatted source}``.

    Templates see the state with ``version`` and ``benchmark`` blanked: generated code must
    depend only on what changes behaviour, so bumping the version recompiles nothing.
    ``memo_dir`` caches black's output by the raw render's hash (black is the slow step).
    """
    neutral = state.model_copy(update={"version": 1, "benchmark": BenchmarkSummary()})
    names = build_modules(state, template_dir)
    return {name: render_module(name, neutral, template_dir, memo_dir) for name in names}


#: Templates ``attention_<mechanism>.py.j2`` form one family: a build carries only the
#: mechanism its state selects (``architecture.attention``); the kernel tooling
#: (:mod:`runtime.kernels`) renders the others on demand. Eight unused kernels would
#: otherwise triple the cold build for code no caller runs.
MECHANISM_FAMILY = "attention_"


def build_modules(state: RSIState, template_dir: Path | None = None) -> tuple[str, ...]:
    """The modules a build of ``state`` contains (see :data:`MECHANISM_FAMILY`)."""
    selected = f"{MECHANISM_FAMILY}{state.architecture.attention.value}"
    return tuple(
        name
        for name in module_names(template_dir)
        if not name.startswith(MECHANISM_FAMILY) or name == selected
    )


def module_names(template_dir: Path | None = None) -> tuple[str, ...]:
    """A build's modules: one per ``<name>.py.j2`` and per static ``<name>.py``, sorted.

    Files starting with ``_`` are includes, macros and the package marker, not modules.
    """
    root = template_dir or TEMPLATE_DIR
    templates = sorted(p.name.removesuffix(".py.j2") for p in root.glob("*.py.j2"))
    found = tuple(n for n in templates if not n.startswith("_"))
    if not found:
        raise RenderError(f"{root}: no templates (*.py.j2)")
    return tuple(sorted((*found, *static_sources(template_dir))))


def static_sources(template_dir: Path | None = None) -> dict[str, str]:
    """The template dir's static modules (``<name>.py``): ``{module name: source}``.

    Ordinary Python that no state value changes: every build carries it verbatim, and its
    compiled artifact comes from the compile cache after the first build with a toolchain.
    """
    root = template_dir or TEMPLATE_DIR
    return {
        path.name.removesuffix(".py"): path.read_text()
        for path in sorted(root.glob("*.py"))
        if not path.name.startswith("_")
    }


def templates_digest(template_dir: Path | None = None) -> str:
    """Hash of every template and static module: part of the key of a cached render."""
    root = template_dir or TEMPLATE_DIR
    digest = hashlib.sha256()
    for path in sorted([*root.rglob("*.j2"), *root.glob("*.py")]):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def render_module(
    name: str, state: RSIState, template_dir: Path | None = None, memo_dir: Path | None = None
) -> str:
    """Render and black-format one module; a static module's source is its file."""
    static = (template_dir or TEMPLATE_DIR) / f"{name}.py"
    if not name.startswith("_") and static.is_file():
        return static.read_text()
    raw = render_raw(name, state, template_dir)
    memo = memo_dir / hashlib.sha256(raw.encode()).hexdigest() if memo_dir else None
    if memo is not None and memo.exists():
        return memo.read_text()
    formatted = _black(raw, f"{name}.py.j2")
    if memo is not None:
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(memo, formatted.encode())
    return formatted


def warm_up(template_dir: Path | None = None) -> None:
    """Pay a process's first-render costs now: black's import and first format, and the
    compilation of every template in ``template_dir`` (the build server, before its first
    request). Jinja reloads a template whose file changes later."""
    env = _environment(str(template_dir or TEMPLATE_DIR))
    for name in env.list_templates(extensions=["j2"]):
        env.get_template(name)
    _black("WARM = 1\n", "warm-up")


def render_raw(name: str, state: RSIState, template_dir: Path | None = None) -> str:
    """Template ``name`` rendered for ``state``, before black.

    A template that writes what black would write costs black one pass, not two (black
    formats a changed result again), which is most of a one-module re-render.
    """
    env = _environment(str(template_dir or TEMPLATE_DIR))
    template_name = f"{name}.py.j2"
    try:
        return env.get_template(template_name).render(state=state, plan=plan(state), module=name)
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"{template_name}:{exc.lineno}: template syntax error: {exc}") from None
    except jinja2.TemplateNotFound:
        raise RenderError(f"{template_name}: template not found in {template_dir}") from None
    except _RENDER_ERRORS as exc:
        where = _template_line(exc, template_name)
        raise RenderError(f"{template_name}{where}: {type(exc).__name__}: {exc}") from None


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"num filter expects a number, got {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"num filter refuses non-finite {value!r}")
        return repr(value)
    return str(int(value))


def _pyrepr(value: Any) -> str:
    if isinstance(value, str):
        text = repr(value)
        # black's quotes, so already-formatted output needs one black pass, not two.
        # Safe: a value without '"' needs no escape between double quotes.
        return f'"{text[1:-1]}"' if text[0] == "'" and '"' not in value else text
    if value is None or isinstance(value, bool | int):
        return repr(value)
    if isinstance(value, float):
        return _num(value)
    raise ValueError(f"pyrepr filter refuses {type(value).__name__}")


def _nums(values: Any) -> str:
    """A list display of numbers: ``(1, 0.5)`` gives ``[1, 0.5]``."""
    return "[" + ", ".join(_num(v) for v in values) + "]"


def _terms(values: Any, paren: bool = False) -> str:
    """An index sum without its zero terms: ``(0, "c", 2)`` gives ``c + 2`` (``0`` if none).

    ``paren`` wraps a sum of several terms in parentheses (for ``(...) * stride``).
    """
    kept = [str(v) for v in values if str(v) != "0"]
    text = " + ".join(kept) or "0"
    return f"({text})" if paren and len(kept) > 1 else text


def _ident(value: Any) -> str:
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise ValueError(f"ident filter refuses {value!r}")
    return value


@functools.lru_cache(maxsize=8)
def _environment(template_dir: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - we emit Python, not HTML; filters guard values
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, nums=_nums, pyrepr=_pyrepr, ident=_ident, terms=_terms)
    # State-independent layout every template formats the same way (one table, not two).
    env.globals.update(
        FACT_OPS=FACT_OPS,
        QUESTION_OPS=QUESTION_OPS,
        OPS=dict(FACT_OPS + QUESTION_OPS),
        MAX_COMPOSITE=MAX_COMPOSITE,
        COMPOSITE_WIDTH=COMPOSITE_WIDTH,
    )
    return env


def _black(raw: str, template_name: str) -> str:
    with _BLACK_IMPORT:  # watch mode renders in two threads; black's import is not safe so
        import black  # imported on first use: a rendering seen before is memoized

    try:
        return black.format_str(raw, mode=black.Mode(line_length=_BLACK_LINE_LENGTH))
    except black.parsing.InvalidInput as exc:
        raise RenderError(f"{template_name}: rendered source is not valid Python: {exc}") from None


#: What a template's expressions may raise on a state they do not fit (``{{ 1 // 0 }}``,
#: an undefined name, a missing key): one line naming the template line, not a traceback.
_RENDER_ERRORS = (
    jinja2.UndefinedError,
    ArithmeticError,
    AttributeError,
    LookupError,
    TypeError,
    ValueError,
)


def _template_line(exc: BaseException, template_name: str) -> str:
    """``:<line>`` of the innermost frame of ``template_name`` in ``exc``'s traceback (jinja2
    maps template frames to template lines), or ``""``."""
    line = ""
    tb = exc.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).name == template_name:
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    return line
