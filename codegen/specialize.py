"""Specialize a user's ``@rsi_optimized`` function against a state: the build-time half.

The function's first parameter is the state (:class:`~codegen.state.RSIState`); the
decorator's ``target`` names the state sections it may read. :func:`specialize_source`
writes a copy of the function in which

- reads of state fields become constants (:class:`InlineStateConstants`),
- loops over state collections (experts, routing rules, their words and boosts) are
  unrolled, the loop variable replaced by the element (:class:`UnrollStateLoops`),
- branches, ``x if c else y`` and ``and``/``or`` whose conditions became constants are
  folded, and so is arithmetic on two constants (:class:`FoldStateBranches`,
  :class:`FoldConstantArithmetic`),
- what unrolling leaves is cleaned up: helper calls on constants folded
  (:class:`FoldConstantHelperCalls`), ``all``/``any`` over literal tuples unrolled
  (:class:`UnrollAllAnyOverLiterals`), locals assigned numbers propagated
  (:class:`PropagateLocalConstants`), local dicts of literal keys made locals
  (:class:`ScalarizeLocalDicts`),

and everything else stays as written, comments included. Each statement keeps its original
line through all of this (``Specialized.lines``): messages about the copy name the user's
line (:func:`name_user_lines`). The copy keeps the signature (the
state parameter is kept, typed ``object`` and unused) and carries the module-level helper
functions and literal constants it calls; it may import only ``cython`` (pure-Python mode
annotations), ``math`` and ``typing``, so it passes the build's import guard. Before any
rewriting, :class:`_Refusals` walks the original function once per loop element and refuses,
naming the line, whatever it cannot prove safe:
an assignment to the state or to a loop variable, a mutation of a state collection, a loop
over a state expression that is not a literal collection, ``break``/``continue`` in an
unrolled loop, a state value used other than as a constant, a loop, ``len()`` or a
membership test, a read outside ``target``, a name imported from another module.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib.util
import logging
import math
import operator
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar, cast

import libcst as cst
from libcst.codemod import Codemod, CodemodContext
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider
from pydantic import BaseModel

from codegen.errors import RSIError
from codegen.state import RSIState
from codegen.toolchain import content_key

__all__ = [
    "ALLOWED_IMPORTS",
    "SpecializeError",
    "Specialized",
    "SpecializedSource",
    "SpecializeFunction",
    "InlineStateConstants",
    "UnrollStateLoops",
    "FoldStateBranches",
    "FoldConstantArithmetic",
    "FoldConstantHelperCalls",
    "ScalarizeLocalDicts",
    "UnrollAllAnyOverLiterals",
    "PropagateLocalConstants",
    "module_name_for",
    "source_sha256",
    "specialize_source",
    "specialize_target",
    "state_fingerprint",
    "target_digest",
    "first_user_line",
    "name_user_lines",
    "with_user_lines",
]

logger = logging.getLogger(__name__)

#: Modules a specialized copy may import (the build's guard allows them in generated code).
ALLOWED_IMPORTS = frozenset({"__future__", "cython", "math", "typing"})
#: Sections no specialized copy may read: they never change behaviour (see README).
_UNSPECIALIZABLE = frozenset({"version", "benchmark", "schema_version"})
_MUTATORS = frozenset(
    "append extend insert pop remove clear update setdefault add discard sort reverse popitem"
    " difference_update intersection_update symmetric_difference_update __setitem__".split()
)
_VIEWS = ("items", "keys", "values")
_MAX_PASSES = 32
_DECORATOR = "rsi_optimized"
#: The comment that carries a statement's original line through the transformers.
_MARK = "# rsi-specialize-line "
_MARK_LINE = re.compile(rf"^[ \t]*{re.escape(_MARK)}(\d+)\n?$")
_COPY_LINE = re.compile(r"\b(opt_\w+)\.py:(\d+)(?::\d+)?")

E = TypeVar("E", bound=Exception)


class SpecializeError(RSIError):
    """A decorated function cannot be specialized; the message names the file and line."""


@dataclass(frozen=True)
class SpecializedSource:
    """A specialized module's text, the state sections it read, and the user's line behind
    each of its lines (``lines[i]`` for line ``i + 1``; 0 for a line of no user statement)."""

    source: str
    sections: tuple[str, ...]
    lines: tuple[int, ...]


@dataclass(frozen=True)
class Specialized:
    """One specialized copy: the generated module's name and source, what it depends on, and
    the user's file and line behind each of its lines (``lines``, as in SpecializedSource)."""

    target: str
    module: str
    function: str
    sections: tuple[str, ...]
    state_hash: str
    source: str
    source_file: str
    lines: tuple[int, ...]
    source_sha256: str  # of the user's file the copy was made from

    def user_line(self, line: int) -> str | None:
        """``file.py:N`` of the user's line behind ``line`` of the copy, if any."""
        origin = self.lines[line - 1] if 0 < line <= len(self.lines) else 0
        return f"{self.source_file}:{origin}" if origin else None


def state_fingerprint(state: RSIState, sections: Sequence[str]) -> str:
    """Hash of the state sections a specialized copy baked in (its validity condition)."""
    return content_key(state.model_dump(mode="json", include=set(sections)))


def module_name_for(target: str) -> str:
    """Generated module name of ``module:function``: ``opt_<module>__<function>``."""
    module, _, function = target.partition(":")
    return f"opt_{module.replace('.', '_')}__{function}"


def target_digest(targets: Sequence[str]) -> dict[str, str]:
    """``target -> sha256`` of the source file each one lives in (part of the render key).

    Refuses two targets whose copies would share a module name (``pkg.mod:f`` and
    ``pkg_mod:f`` are both ``opt_pkg_mod__f``): one would silently run the other's code.
    """
    by_module: dict[str, str] = {}
    for target in targets:
        other = by_module.setdefault(module_name_for(target), target)
        if other != target:
            raise SpecializeError(
                f"specialize targets {other!r} and {target!r} would both be "
                f"{module_name_for(target)}; specialize one of them, or rename a module"
            )
    return {target: source_sha256(_target_file(target)[1]) for target in targets}


def source_sha256(path: Path) -> str:
    """sha256 of a user's source file: a copy made from other bytes is stale."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def specialize_target(target: str, state: RSIState) -> Specialized:
    """Specialize ``module:function`` (found on ``sys.path``) against ``state``."""
    _, path = _target_file(target)
    function = target.partition(":")[2]
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecializeError(f"{path}: not UTF-8 (byte {exc.start}); save it as UTF-8") from None
    done = specialize_source(text, function, state, filename=str(path))
    state_hash = state_fingerprint(state, done.sections)
    header = (
        f'"""Specialized copy of {target} for state sections {", ".join(done.sections)}.\n\n'
        f"Generated by rsi from {path.name}; do not edit. State hash {state_hash}.\n"
        '"""\n\n'
    )
    lines = (0,) * header.count("\n") + done.lines
    return Specialized(
        target,
        module_name_for(target),
        function,
        done.sections,
        state_hash,
        header + done.source,
        str(path),
        lines,
        hashlib.sha256(raw).hexdigest(),
    )


def with_user_lines(exc: E, copies: Sequence[Specialized]) -> E:
    """``exc`` with the user's line after each line of a specialized copy it names."""
    message = name_user_lines(str(exc), copies)
    return exc if message == str(exc) else type(exc)(message)


def name_user_lines(message: str, copies: Sequence[Specialized]) -> str:
    """``message`` with ``opt_m__f.py:12`` → ``opt_m__f.py:12 (from /src/m.py:40)``: the
    user's line behind each line of a specialized copy it names."""

    def named(match: re.Match[str]) -> str:
        where = _user_line(match, copies)
        return f"{match.group(0)} (from {where})" if where else match.group(0)

    return _COPY_LINE.sub(named, message)


def first_user_line(message: str, copies: Sequence[Specialized]) -> str | None:
    """``/src/m.py:40``: the user's line behind the first copy line ``message`` names."""
    found = (_user_line(m, copies) for m in _COPY_LINE.finditer(message))
    return next((where for where in found if where), None)


def specialize_source(
    source: str, function: str, state: RSIState, *, filename: str = "<source>"
) -> SpecializedSource:
    """The specialized module text for ``function`` of ``source``, the sections it read and
    its line map (each statement carries its original line through the transformers as a
    marker comment, removed from the text at the end)."""
    try:
        wrapper = MetadataWrapper(cst.parse_module(source))
    except cst.ParserSyntaxError as exc:
        raise SpecializeError(f"{filename}:{exc.raw_line}: does not parse: {exc.message}") from None
    module = wrapper.module
    defs = _module_defs(module)
    target = defs.get(function)
    if not isinstance(target, cst.FunctionDef):
        raise SpecializeError(f"{filename}: no module-level function {function!r} to specialize")
    where = _Where(filename, wrapper.resolve(PositionProvider))
    scope = _scope(target, state, where)
    target.body.visit(_Refusals(scope))
    imported = _imports(module)
    needed = _needed_definitions(target, defs, imported, where)
    helpers = {node.name.value: node for node in needed if isinstance(node, cst.FunctionDef)}
    marks = _MarkLines(where)
    specialized = _specialize(cast(cst.FunctionDef, target.visit(marks)), scope, helpers)
    # Only what the copy still uses (a helper call may have folded to a number).
    kept = _needed_definitions(specialized, defs, imported, where)
    body = [*(cast(cst.BaseStatement, node.visit(marks)) for node in kept), specialized]
    imports = "from __future__ import annotations\n"
    used = set().union(*(_names(node) for node in body))
    imports += "".join(f"import {name}\n" for name in ("cython", "math") if name in used)
    out = cst.parse_module(imports).with_changes(body=[*cst.parse_module(imports).body, *body])
    text, lines = _unmarked(out.code)
    return SpecializedSource(text, scope.sections, lines)


# -- the transformers ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """The user's file and the original line of each of its nodes, for refusals."""

    filename: str
    lines: Mapping[cst.CSTNode, CodeRange]

    def refuse(self, node: cst.CSTNode, problem: str) -> SpecializeError:
        position = self.lines.get(node)
        line = position.start.line if position is not None else 0
        return SpecializeError(f"{self.filename}:{line}: {problem}")


@dataclass(frozen=True)
class _Scope:
    """What the transformers need: the state, its parameter name, the sections allowed."""

    state: RSIState
    root: str
    sections: tuple[str, ...]
    where: _Where

    def refuse(self, node: cst.CSTNode, problem: str) -> SpecializeError:
        return self.where.refuse(node, problem)


class InlineStateConstants(cst.CSTTransformer):
    """``state.scoring.rag`` → ``5.0``; ``len(state.experts)`` → ``6``; ``x in
    state.routing[0].boosts`` tests the literal tuple of keys. Loop iterables are left for
    :class:`UnrollStateLoops`."""

    def __init__(self, scope: _Scope) -> None:
        super().__init__()
        self.scope = scope
        self.done: dict[int, cst.BaseExpression] = {}
        self.loops: set[int] = set()

    def visit_For(self, node: cst.For) -> None:
        self.loops.add(id(node.iter))

    def visit_Call(self, node: cst.Call) -> bool:
        if _is_call(node, "len"):
            value = self._value(node.args[0].value)
            if value is _NOT:  # a literal a loop variable became: len("where")
                value = _constant(node.args[0].value)[1]
            if isinstance(value, tuple | Mapping | str):
                self.done[id(node)] = _literal(len(value))
                return False
        return self._inline(node)

    def visit_ComparisonTarget(self, node: cst.ComparisonTarget) -> bool:
        value = self._value(node.comparator)
        if isinstance(node.operator, cst.In | cst.NotIn) and isinstance(value, Mapping):
            self.done[id(node.comparator)] = _literal(tuple(value))
        return True

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        return self._inline(node)

    def visit_Subscript(self, node: cst.Subscript) -> bool:
        return self._inline(node)

    def visit_Name(self, node: cst.Name) -> bool:
        return self._inline(node)

    def _inline(self, node: cst.BaseExpression) -> bool:
        if id(node) in self.loops or id(node) in self.done:
            return False
        value = self._value(node)
        if value is _NOT or (isinstance(node, cst.Name) and value is self.scope.state):
            return True
        literal = _literal_or_none(value)
        if literal is not None:
            self.done[id(node)] = literal
        return False

    def _value(self, node: cst.BaseExpression) -> object:
        # A read that resolves nowhere sits in a branch folded away in this same pass
        # (_Refusals proved every read on a live path).
        try:
            return _state_value(node, self.scope)
        except _UnresolvedError:
            return _NOT

    def leave_Attribute(
        self, original_node: cst.Attribute, updated_node: cst.Attribute
    ) -> cst.BaseExpression:
        return self.done.get(id(original_node), updated_node)

    def leave_Subscript(
        self, original_node: cst.Subscript, updated_node: cst.Subscript
    ) -> cst.BaseExpression:
        return self.done.get(id(original_node), updated_node)

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.BaseExpression:
        return self.done.get(id(original_node), updated_node)

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        return self.done.get(id(original_node), updated_node)


class UnrollStateLoops(cst.CSTTransformer):
    """``for rule in state.routing: BODY`` → ``BODY[rule := state.routing[0]]`` ... once per
    element (``.items()``, ``.keys()``, ``.values()`` and ``enumerate`` of them too); a loop's
    ``else`` block follows the unrolled bodies (an unrolled loop has no ``break``)."""

    def __init__(self, scope: _Scope) -> None:
        super().__init__()
        self.scope = scope

    def leave_For(
        self, original_node: cst.For, updated_node: cst.For
    ) -> cst.BaseStatement | cst.FlattenSentinel[cst.BaseStatement] | cst.RemovalSentinel:
        try:
            value = _state_value(updated_node.iter, self.scope)
        except _UnresolvedError:  # in a branch folded away in this pass
            return updated_node
        if value is _NOT:
            return updated_node
        out: list[cst.BaseStatement] = []
        for element in _elements(updated_node.iter, value):
            names = _bind(updated_node.target, element)
            out.extend(s.visit(_SubstituteNames(names)) for s in updated_node.body.body)  # type: ignore[misc]
        if isinstance(updated_node.orelse, cst.Else):
            out.extend(updated_node.orelse.body.body)  # type: ignore[arg-type]
        if not out:
            return cst.RemovalSentinel.REMOVE
        first = out[0]
        if isinstance(first, cst.SimpleStatementLine | cst.BaseCompoundStatement):
            lines = [*updated_node.leading_lines, *first.leading_lines]
            out[0] = first.with_changes(leading_lines=lines)
        return cst.FlattenSentinel(out)


class FoldStateBranches(cst.CSTTransformer):
    """``if True: A else: B`` → ``A`` (``elif`` chains too), ``x if False else y`` → ``y``,
    constant comparisons and ``not`` → ``True``/``False``, ``True and x`` → ``x``."""

    def __init__(self) -> None:
        super().__init__()
        self.elifs: set[int] = set()

    def visit_If(self, node: cst.If) -> None:
        if isinstance(node.orelse, cst.If):
            self.elifs.add(id(node.orelse))

    def leave_If(
        self, original_node: cst.If, updated_node: cst.If
    ) -> cst.BaseStatement | cst.FlattenSentinel[cst.BaseStatement] | cst.RemovalSentinel:
        node = updated_node.with_changes(orelse=_fold_elif(updated_node.orelse))
        known, value = _constant(node.test)
        if id(original_node) in self.elifs or not known:
            return node
        block = node.body if value else node.orelse
        if block is None:
            return cst.RemovalSentinel.REMOVE
        if isinstance(block, cst.If):  # an ``elif`` becomes the ``if``; its comments stay
            return block.with_changes(leading_lines=[*node.leading_lines, *block.leading_lines])
        suite = block.body if isinstance(block, cst.Else) else block
        return cst.FlattenSentinel(cast(Sequence[cst.BaseStatement], suite.body))

    def leave_IfExp(self, original_node: cst.IfExp, updated_node: cst.IfExp) -> cst.BaseExpression:
        known, value = _constant(updated_node.test)
        if not known:
            return updated_node
        return _in_place_of(updated_node, updated_node.body if value else updated_node.orelse)

    def leave_Comparison(
        self, original_node: cst.Comparison, updated_node: cst.Comparison
    ) -> cst.BaseExpression:
        known, value = _constant(updated_node)
        return _literal(bool(value)) if known else updated_node

    def leave_UnaryOperation(
        self, original_node: cst.UnaryOperation, updated_node: cst.UnaryOperation
    ) -> cst.BaseExpression:
        known, value = _constant(updated_node)
        if known and isinstance(updated_node.operator, cst.Not):
            return _literal(bool(value))
        return updated_node

    def leave_BooleanOperation(
        self, original_node: cst.BooleanOperation, updated_node: cst.BooleanOperation
    ) -> cst.BaseExpression:
        known, value = _constant(updated_node.left)
        if not known:
            return updated_node
        # Python's own rule: ``a and b`` is ``a`` when ``a`` is falsy, else ``b``.
        keep_left = not value if isinstance(updated_node.operator, cst.And) else bool(value)
        return _in_place_of(updated_node, updated_node.left if keep_left else updated_node.right)


class FoldConstantArithmetic(cst.CSTTransformer):
    """``1.25 * 0.2`` → ``0.25`` when both sides are numbers (Python computes the same
    IEEE result at build time as it would on every call)."""

    def leave_BinaryOperation(
        self, original_node: cst.BinaryOperation, updated_node: cst.BinaryOperation
    ) -> cst.BaseExpression:
        known_left, left = _constant(updated_node.left)
        known_right, right = _constant(updated_node.right)
        fold = _ARITHMETIC.get(type(updated_node.operator))
        if not (known_left and known_right and fold and _is_number(left) and _is_number(right)):
            return updated_node
        try:
            result = fold(cast(float, left), cast(float, right))
        except (ZeroDivisionError, OverflowError):
            return updated_node
        if not math.isfinite(result):
            return updated_node
        literal = _literal(result)
        # A negative literal is a unary minus: keep it grouped (``(-0.5) ** 2``).
        literal = _parenthesized(literal) if result < 0 else literal
        return _in_place_of(updated_node, literal)


class UnrollAllAnyOverLiterals(cst.CSTTransformer):
    """``all(w in words for w in ("where", "is"))`` → ``('where' in words and 'is' in
    words)``; ``any`` → ``or``; an empty tuple → ``True``/``False``. Only a single ``for``
    over a literal tuple, without ``if``; a term that is not surely a ``bool`` (``in``,
    ``is``, ``not``) is wrapped in ``bool()``, so the result is what ``all``/``any`` return."""

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        if not (_is_call(updated_node, "all") or _is_call(updated_node, "any")):
            return updated_node
        generator = updated_node.args[0].value
        if not isinstance(generator, cst.GeneratorExp):
            return updated_node
        loop = generator.for_in
        known, items = _constant(loop.iter)
        if (
            loop.inner_for_in is not None
            or loop.ifs
            or loop.asynchronous is not None
            or not isinstance(loop.target, cst.Name)
            or not known
            or not isinstance(items, tuple)
            or _binds_or_suspends(generator.elt)
        ):
            return updated_node
        is_all = cast(cst.Name, updated_node.func).value == "all"
        terms = [
            _as_bool(
                cast(
                    cst.BaseExpression,
                    generator.elt.visit(_SubstituteNames({loop.target.value: _literal(item)})),
                )
            )
            for item in items
        ]
        if not terms:
            return _literal(is_all)
        operator_: cst.BaseBooleanOp = cst.And() if is_all else cst.Or()
        result = terms[0]
        for term in terms[1:]:
            result = cst.BooleanOperation(result, operator_, term)
        return _parenthesized(result)


class FoldConstantHelperCalls(cst.CSTTransformer):
    """``_clamp(1.25)`` → ``1.25`` when the copied helper is ``return <expression>`` and,
    with its parameters replaced by the (numeric) arguments, the expression folds to a
    number: branches and arithmetic only, nothing is called. Arguments and result must suit
    the helper's annotations (a compiled helper converts a ``float`` parameter to a C
    double), and the expression may read no name the calling function binds."""

    def __init__(self, helpers: Mapping[str, cst.FunctionDef]) -> None:
        super().__init__()
        self.helpers = helpers
        self.bound: set[str] | None = set()  # None: a ``match`` may bind any name

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        bound = _bound_names(node.body)
        params = {p.name.value for p in node.params.params}
        self.bound = None if bound is None else bound | params

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        func = updated_node.func
        helper = self.helpers.get(func.value) if isinstance(func, cst.Name) else None
        expression = _returned(helper) if helper is not None else None
        if helper is None or expression is None:
            return updated_node
        params = helper.params
        free = _names(expression) - {p.name.value for p in params.params}
        if (
            params.posonly_params
            or params.kwonly_params
            or not isinstance(params.star_arg, cst.MaybeSentinel)
            or params.star_kwarg is not None
            or len(params.params) != len(updated_node.args)
            or any(a.keyword is not None or a.star for a in updated_node.args)
            or (free if self.bound is None else free & self.bound)
        ):
            return updated_node
        values: dict[str, cst.BaseExpression] = {}
        for param, arg in zip(params.params, updated_node.args, strict=True):
            known, value = _constant(arg.value)
            if param.default is not None or not known or not _suits(value, param.annotation):
                return updated_node
            values[param.name.value] = _literal_operand(value)
        folded = cast(cst.BaseExpression, expression.visit(_SubstituteNames(values)))
        for fold in (FoldStateBranches(), FoldConstantArithmetic()):
            folded = cast(cst.BaseExpression, folded.visit(fold))
        known, result = _constant(folded)
        if not known or not _suits(result, helper.returns):
            return updated_node
        return _literal_operand(result)


class ScalarizeLocalDicts(cst.CSTTransformer):
    """``weights = {}; weights["a"] = w; ... weights["a"]`` → ``weights__a = w; ...
    weights__a``: a local dict used only through literal string keys, each written by a
    statement of the function's own body (not inside a branch or loop) before any other use
    of its key, and never passed, iterated, sized, deleted from or rebound."""

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[str, frozenset[str]] = {}

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.names = _scalar_dicts(node)

    def leave_Subscript(
        self, original_node: cst.Subscript, updated_node: cst.Subscript
    ) -> cst.BaseExpression:
        found = _dict_key(updated_node, self.names)
        return cst.Name(f"{found[0]}__{found[1]}") if found else updated_node

    def leave_SimpleStatementLine(
        self, original_node: cst.SimpleStatementLine, updated_node: cst.SimpleStatementLine
    ) -> cst.SimpleStatementLine | cst.RemovalSentinel:
        created = _created_dict(updated_node)
        return cst.RemovalSentinel.REMOVE if created in self.names else updated_node


class PropagateLocalConstants(cst.CSTTransformer):
    """``row = 0; a = s[row]; row += 2; b = s[row + 1]`` → ``a = s[0]; b = s[2 + 1]; row =
    2``: within one block, a local assigned a number is replaced by that number in the
    statements that follow, its assignments dropped, until a statement rebinds it (or the
    block ends), where one assignment of its value is put back. Not in a function with
    ``try``/``with`` (a handler could read a dropped value) or ``locals()``/``vars()``/
    ``eval``/``exec``; a local annotated with a C type keeps values of that type only."""

    def __init__(self) -> None:
        super().__init__()
        self.annotations: dict[str, str] = {}
        self.enabled = False

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        finder = _Escapes()
        node.visit(finder)
        self.enabled = not finder.found
        self.annotations = finder.annotations

    def leave_IndentedBlock(
        self, original_node: cst.IndentedBlock, updated_node: cst.IndentedBlock
    ) -> cst.IndentedBlock:
        if not self.enabled:
            return updated_node
        known: dict[str, tuple[object, cst.SimpleStatementLine]] = {}
        carried: list[cst.EmptyLine] = []  # leading lines (comments) of dropped statements
        out: list[cst.BaseStatement] = []

        def put_back(names: Iterable[str]) -> None:
            for name in [n for n in known if n in names]:
                value, last = known.pop(name)
                assign = cst.Assign([cst.AssignTarget(cst.Name(name))], _literal(value))
                small = last.body[0]
                if isinstance(small, cst.Assign):
                    assign = small.with_changes(value=_literal(value))
                # The dropped comments, then its own line's mark (the last mark wins).
                lines = [*carried]
                mark = next((e for e in reversed(last.leading_lines) if _is_mark(e)), None)
                if mark is not None and not (lines and lines[-1].deep_equals(mark)):
                    lines.append(mark)
                out.append(last.with_changes(body=[assign], leading_lines=lines))
                carried.clear()

        for statement in cast(Sequence[_Statement], updated_node.body):
            number = self._number(statement, known)
            if number is not None:
                name, value = number
                known[name] = (value, cast(cst.SimpleStatementLine, statement))
                carried.extend(statement.leading_lines)
                continue
            bound = _bound_names(statement)
            # ``break``/``continue``: the code after the loop or the next turn may read them.
            put_back(known if bound is None or _loop_exits(statement) else bound)
            reads = {n: _literal_operand(v) for n, (v, _) in known.items()}
            statement = cast(_Statement, statement.visit(_SubstituteNames(reads)))
            if carried:
                statement = statement.with_changes(
                    leading_lines=[*carried, *statement.leading_lines]
                )
                carried.clear()
            out.append(statement)
        last = out[-1] if out else None
        if not (isinstance(last, cst.SimpleStatementLine) and _exits(last)):
            put_back(known)  # after a ``return`` or ``raise``, the function has no locals
        return updated_node.with_changes(body=out)

    def _number(
        self, statement: cst.BaseStatement, known: Mapping[str, tuple[object, object]]
    ) -> tuple[str, object] | None:
        """``(name, value)`` when ``statement`` is ``name = N`` or ``name op= N`` of a known
        name, N a number literal, and the value suits the name's annotation."""
        if not isinstance(statement, cst.SimpleStatementLine) or len(statement.body) != 1:
            return None
        small = statement.body[0]
        fold: Callable[[Any, Any], object] | None = None
        if isinstance(small, cst.Assign) and len(small.targets) == 1:
            target, value = small.targets[0].target, small.value
        elif isinstance(small, cst.AugAssign) and type(small.operator) in _AUGMENTED:
            target, value = small.target, small.value
            fold = _AUGMENTED[type(small.operator)]
        else:
            return None
        literal, number = _constant(value)
        if not isinstance(target, cst.Name) or not literal or not _is_number(number):
            return None
        if fold is not None:
            if target.value not in known:
                return None
            number = fold(known[target.value][0], number)
        if not _fits(number, self.annotations.get(target.value)):
            return None
        return target.value, number


class SpecializeFunction(Codemod):
    """The specializer as a LibCST codemod: the module becomes ``function``'s specialized
    copy for ``state`` (``python -m libcst.tool codemod`` style, and ``CodemodTest``)."""

    DESCRIPTION = "Specialize an @rsi_optimized function against a state."

    def __init__(self, context: CodemodContext, function: str, state: RSIState) -> None:
        super().__init__(context)
        self.function = function
        self.state = state

    def transform_module_impl(self, tree: cst.Module) -> cst.Module:
        filename = self.context.filename or "<source>"
        done = specialize_source(tree.code, self.function, self.state, filename=filename)
        return cst.parse_module(done.source)


# -- the passes ---------------------------------------------------------------------------


def _specialize(
    function: cst.FunctionDef, scope: _Scope, helpers: Mapping[str, cst.FunctionDef]
) -> cst.FunctionDef:
    """Run the transformers to a fixed point; then drop the decorator, type the state
    parameter ``object`` and give every emptied block a ``pass``."""
    node = function
    for _ in range(_MAX_PASSES):
        before = node
        for transformer in (
            UnrollStateLoops(scope),
            InlineStateConstants(scope),
            FoldStateBranches(),
            FoldConstantArithmetic(),
            FoldConstantHelperCalls(helpers),
            UnrollAllAnyOverLiterals(),
            ScalarizeLocalDicts(),
            PropagateLocalConstants(),
        ):
            node = node.visit(transformer)  # type: ignore[assignment]
        if node.deep_equals(before):
            break
    left = _Names()
    node.body.visit(left)
    if scope.root in left.found:  # _Refusals guarantees this never happens
        raise scope.refuse(function, f"a read of `{scope.root}` survived specialization")
    params = node.params.params
    state_param = params[0].with_changes(annotation=cst.Annotation(cst.Name("object")))
    node = node.with_changes(
        decorators=[d for d in node.decorators if _decorator_name(d) != _DECORATOR],
        params=node.params.with_changes(params=[state_param, *params[1:]]),
    )
    return node.visit(_FillEmptyBlocks())  # type: ignore[return-value]


class _Refusals(cst.CSTVisitor):
    """Walks the original function once per element of each state loop; raises on the first
    construct the transformers could not rewrite to code that behaves the same."""

    def __init__(self, scope: _Scope) -> None:
        super().__init__()
        self.scope = scope
        self.aliases: dict[str, object] = {}
        self.skip: set[int] = set()

    def visit_For(self, node: cst.For) -> bool:
        value = self._value(node.iter)
        if value is _NOT:
            for name in _target_names(node.target):
                if name in self.aliases or name == self.scope.root:
                    raise self.scope.refuse(node, f"a loop rebinds `{name}`")
            return True
        if not isinstance(value, tuple | Mapping | _View | _Enumerated):
            raise self.scope.refuse(
                node,
                f"cannot unroll `for ... in {_code(node.iter)}`: not a literal state collection",
            )
        stray = _loop_exits(node.body)
        if stray is not None:
            raise self.scope.refuse(
                stray, "`break`/`continue` in a loop over the state cannot be unrolled"
            )
        saved = dict(self.aliases)
        for element in _iterate(value):
            self.aliases.update(_bind_values(node.target, element, self.scope))
            node.body.visit(self)
        self.aliases = saved
        if node.orelse is not None:
            node.orelse.visit(self)
        return False

    def visit_If(self, node: cst.If) -> bool:
        return self._branch(node.test, node.body, node.orelse)

    def visit_IfExp(self, node: cst.IfExp) -> bool:
        return self._branch(node.test, node.body, node.orelse)

    def visit_BooleanOperation(self, node: cst.BooleanOperation) -> bool:
        known, left = self._constant(node.left)
        if not known:
            return True
        short = not left if isinstance(node.operator, cst.And) else bool(left)
        if not short:
            node.right.visit(self)
        return False

    def _branch(
        self, test: cst.BaseExpression, body: cst.CSTNode, orelse: cst.CSTNode | None
    ) -> bool:
        """Only the branch a state-only condition takes is checked (the other is folded away)."""
        known, value = self._constant(test)
        if not known:
            return True
        taken = body if value else orelse
        if taken is not None:
            taken.visit(self)
        return False

    def _constant(self, node: cst.BaseExpression) -> tuple[bool, object]:
        try:
            return _constant(node, self.scope, self.aliases)
        except _UnresolvedError as exc:
            raise self.scope.refuse(node, str(exc)) from None

    def visit_CompFor(self, node: cst.CompFor) -> None:
        for name in _target_names(node.target):
            if name in self.aliases or name == self.scope.root:
                raise self.scope.refuse(node, f"a comprehension rebinds `{name}`")

    def visit_Call(self, node: cst.Call) -> bool:
        func = node.func
        if isinstance(func, cst.Attribute) and self._value(func.value) is not _NOT:
            if func.attr.value in _MUTATORS:
                raise self.scope.refuse(
                    node, f"mutates the state collection `{_code(func.value)}` (.{func.attr.value})"
                )
            if func.attr.value not in _VIEWS:
                raise self.scope.refuse(node, f"calls `{_code(func)}` on a state value")
        if _is_call(node, "len") and self._value(node.args[0].value) is not _NOT:
            if not isinstance(self._value(node.args[0].value), tuple | Mapping | str):
                raise self.scope.refuse(node, f"`{_code(node)}` takes len() of a state scalar")
            return False
        if self._value(node) is not _NOT:
            raise self.scope.refuse(
                node, f"`{_code(node)}` can only be a for loop's iterable (it is unrolled there)"
            )
        return True

    def visit_ComparisonTarget(self, node: cst.ComparisonTarget) -> bool:
        value = self._value(node.comparator)
        is_member = isinstance(node.operator, cst.In | cst.NotIn)
        return not (is_member and isinstance(value, Mapping))

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        self.skip.add(id(node.attr))
        return self._read(node)

    def visit_Subscript(self, node: cst.Subscript) -> bool:
        return self._read(node)

    def visit_Name(self, node: cst.Name) -> bool:
        return id(node) in self.skip or self._read(node)

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None:
            self.skip.add(id(node.keyword))

    def visit_Param(self, node: cst.Param) -> bool:
        return False

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        raise self.scope.refuse(
            node, "a nested function cannot be specialized; make it a module-level helper"
        )

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        raise self.scope.refuse(
            node, "a lambda cannot be specialized; make it a module-level helper"
        )

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        self._assigned(node.target, node)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._assigned(node.target, node)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._assigned(node.target, node)

    def visit_Del(self, node: cst.Del) -> None:
        self._assigned(node.target, node)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._assigned(node.target, node)

    def visit_Global(self, node: cst.Global) -> bool:
        raise self.scope.refuse(node, "`global` cannot be specialized")

    def _assigned(self, target: cst.BaseExpression, node: cst.CSTNode) -> None:
        for part in _target_parts(target):
            if isinstance(part, cst.Name) and (
                part.value in self.aliases or part.value == self.scope.root
            ):
                raise self.scope.refuse(
                    node, f"assigns to `{part.value}`, a name bound to the state"
                )
            if isinstance(part, cst.Attribute | cst.Subscript) and self._rooted(part):
                raise self.scope.refuse(node, f"assigns to the state attribute `{_code(part)}`")
            if isinstance(part, cst.Name):
                self.skip.add(id(part))

    def _rooted(self, node: cst.BaseExpression) -> bool:
        while isinstance(node, cst.Attribute | cst.Subscript):
            node = node.value
        return isinstance(node, cst.Name) and (
            node.value == self.scope.root or node.value in self.aliases
        )

    def _read(self, node: cst.BaseExpression) -> bool:
        value = self._value(node)
        if value is _NOT:
            return True
        if _literal_or_none(value) is None:
            kind = "the state" if value is self.scope.state else f"a {type(value).__name__}"
            raise self.scope.refuse(
                node,
                f"`{_code(node)}` is {kind}: a specialized function may read scalar fields, loop "
                "over collections, take len() and test membership",
            )
        return False

    def _value(self, node: cst.BaseExpression) -> object:
        try:
            return _state_value(node, self.scope, self.aliases)
        except _UnresolvedError as exc:
            raise self.scope.refuse(node, str(exc)) from None


# -- resolving state expressions ------------------------------------------------------------


class _UnresolvedError(Exception):
    """A state expression names no field, key or index of the state."""


class _NotState:
    """Sentinel: the expression does not read the state."""


_NOT = _NotState()


@dataclass(frozen=True)
class _View:
    """``mapping.items()`` / ``.keys()`` / ``.values()`` of a state dict."""

    mapping: Mapping[str, object]
    kind: str


@dataclass(frozen=True)
class _Enumerated:
    """``enumerate(<state collection>)``."""

    inner: object


@dataclass(frozen=True)
class _Method:
    """``mapping.items`` before it is called."""

    mapping: Mapping[str, object]
    kind: str


def _state_value(
    node: cst.BaseExpression, scope: _Scope, aliases: Mapping[str, object] | None = None
) -> object:
    """The state value ``node`` reads, or ``_NOT`` when it is not a state expression."""
    if isinstance(node, cst.Name):
        if node.value == scope.root:
            return scope.state
        return aliases[node.value] if aliases and node.value in aliases else _NOT
    if isinstance(node, cst.Attribute):
        base = _state_value(node.value, scope, aliases)
        return _NOT if base is _NOT else _attribute(base, node.attr.value, scope)
    if isinstance(node, cst.Subscript):
        base = _state_value(node.value, scope, aliases)
        return _NOT if base is _NOT else _item(base, node, scope, aliases)
    if isinstance(node, cst.Call) and not node.args:
        method = _state_value(node.func, scope, aliases)
        return _View(method.mapping, method.kind) if isinstance(method, _Method) else _NOT
    if _is_call(node, "enumerate"):
        inner = _state_value(node.args[0].value, scope, aliases)  # type: ignore[attr-defined]
        return _NOT if inner is _NOT else _Enumerated(inner)
    return _NOT


def _attribute(base: object, attr: str, scope: _Scope) -> object:
    if base is scope.state:
        if attr in _UNSPECIALIZABLE or attr not in RSIState.model_fields:
            raise _UnresolvedError(f"`{attr}` is not a state section a specialized copy may read")
        if attr not in scope.sections:
            raise _UnresolvedError(
                f"reads state.{attr}, which is not in target=({', '.join(scope.sections)})"
            )
    if isinstance(base, BaseModel) and attr in type(base).model_fields:
        return getattr(base, attr)
    if isinstance(base, Mapping) and attr in _VIEWS:
        return _Method(base, attr)
    raise _UnresolvedError(f"`{attr}` is not a field of {type(base).__name__}")


def _item(
    base: object, node: cst.Subscript, scope: _Scope, aliases: Mapping[str, object] | None
) -> object:
    if len(node.slice) != 1 or not isinstance(node.slice[0].slice, cst.Index):
        raise _UnresolvedError(f"`{_code(node)}`: only a single literal index is specialized")
    known, key = _constant(node.slice[0].slice.value, scope, aliases)
    if not known:
        raise _UnresolvedError(f"`{_code(node)}` indexes the state with a non-literal")
    try:
        return base[key]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        raise _UnresolvedError(f"`{_code(node)}`: the state has no item {key!r}") from None


def _iterate(value: object) -> Iterator[object]:
    """Elements of a state collection as the loop would see them (values, not nodes)."""
    if isinstance(value, _Enumerated):
        yield from enumerate(_iterate(value.inner))
    elif isinstance(value, _View):
        yield from getattr(value.mapping, value.kind)()
    elif isinstance(value, Mapping | tuple):
        yield from value


def _elements(iterable: cst.BaseExpression, value: object) -> Iterator[object]:
    """Elements of a state collection as expressions: literals for keys and scalars,
    ``iterable[key]`` paths for models (the inliner then reads their fields)."""
    if isinstance(value, _Enumerated):
        inner = iterable.args[0].value  # type: ignore[attr-defined]
        for index, element in enumerate(_elements(inner, value.inner)):
            yield (_literal(index), element)
        return
    if isinstance(value, _View):
        mapping = iterable.func.value  # type: ignore[attr-defined]
        for key in value.mapping:
            path = _index(mapping, _literal(key))
            yield {"keys": _literal(key), "values": path, "items": (_literal(key), path)}[
                value.kind
            ]
        return
    if isinstance(value, Mapping):
        yield from (_literal(key) for key in value)
        return
    items: Sequence[object] = value  # type: ignore[assignment]
    for index, item in enumerate(items):
        literal = _literal_or_none(item)
        yield literal if literal is not None else _index(iterable, _literal(index))


def _index(base: cst.BaseExpression, key: cst.BaseExpression) -> cst.Subscript:
    return cst.Subscript(base, [cst.SubscriptElement(cst.Index(key))])


def _bind(target: cst.BaseAssignTargetExpression, element: object) -> dict[str, cst.BaseExpression]:
    if isinstance(target, cst.Name):
        return {target.value: element}  # type: ignore[dict-item]
    parts = [e.value for e in target.elements]  # type: ignore[attr-defined]
    names: dict[str, cst.BaseExpression] = {}
    for part, item in zip(parts, element, strict=True):  # type: ignore[call-overload]
        names.update(_bind(part, item))
    return names


def _bind_values(target: cst.BaseExpression, element: object, scope: _Scope) -> dict[str, object]:
    if isinstance(target, cst.Name):
        return {target.value: element}
    parts = [e.value for e in target.elements] if isinstance(target, cst.Tuple | cst.List) else []
    if not parts or not isinstance(element, tuple) or len(parts) != len(element):
        raise scope.refuse(target, f"cannot bind `{_code(target)}` to each element of the loop")
    names: dict[str, object] = {}
    for part, item in zip(parts, element, strict=True):
        names.update(_bind_values(part, item, scope))
    return names


# -- literals and constants -----------------------------------------------------------------


def _literal_or_none(value: object) -> cst.BaseExpression | None:
    """``value`` as a Python literal, if it is a scalar or a tuple of literals."""
    if isinstance(value, Enum):
        value = value.value
    if value is None or isinstance(value, bool | int | float | str):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return cst.parse_expression(repr(value))
    if isinstance(value, tuple):
        items = [_literal_or_none(v) for v in value]
        if any(i is None for i in items):
            return None
        elements = [cst.Element(i) for i in items if i is not None]
        if len(elements) == 1:
            elements = [elements[0].with_changes(comma=cst.Comma())]
        return cst.Tuple(elements)
    return None


def _literal(value: object) -> cst.BaseExpression:
    literal = _literal_or_none(value)
    if literal is None:
        raise TypeError(f"{value!r} has no literal form")
    return literal


_COMPARE: dict[type[cst.BaseCompOp], Callable[[Any, Any], object]] = {
    cst.Equal: operator.eq,
    cst.NotEqual: operator.ne,
    cst.LessThan: operator.lt,
    cst.LessThanEqual: operator.le,
    cst.GreaterThan: operator.gt,
    cst.GreaterThanEqual: operator.ge,
    cst.In: lambda a, b: a in b,
    cst.NotIn: lambda a, b: a not in b,
    cst.Is: operator.is_,
    cst.IsNot: operator.is_not,
}
_ARITHMETIC: dict[type[cst.BaseBinaryOp], Callable[[float, float], float]] = {
    cst.Add: operator.add,
    cst.Subtract: operator.sub,
    cst.Multiply: operator.mul,
    cst.Divide: operator.truediv,
}


def _constant(
    node: cst.BaseExpression,
    scope: _Scope | None = None,
    aliases: Mapping[str, object] | None = None,
) -> tuple[bool, object]:
    """``(True, value)`` when ``node`` is a literal, a literal state read (with ``scope``), or
    a comparison, ``and``/``or``, ``not`` or ``-`` of those; ``(False, None)`` otherwise.
    Nothing is executed; ``and``/``or`` short-circuit as Python's do."""
    if scope is not None:
        value = _state_value(node, scope, aliases)
        if value is not _NOT:
            literal = _literal_or_none(value)
            return (True, _plain(value)) if literal is not None else (False, None)
    if isinstance(node, cst.Integer | cst.Float | cst.SimpleString):
        return True, node.evaluated_value
    if isinstance(node, cst.Name) and node.value in ("True", "False", "None"):
        return True, {"True": True, "False": False, "None": None}[node.value]
    if isinstance(node, cst.Tuple):
        parts = [_constant(e.value, scope, aliases) for e in node.elements]
        if all(known for known, _ in parts):
            return True, tuple(v for _, v in parts)
    if isinstance(node, cst.UnaryOperation):
        known, value = _constant(node.expression, scope, aliases)
        if known and isinstance(node.operator, cst.Not):
            return True, not value
        if known and isinstance(node.operator, cst.Minus) and _is_number(value):
            return True, -value  # type: ignore[operator]
    if isinstance(node, cst.BooleanOperation):
        known, left = _constant(node.left, scope, aliases)
        if known and (not left if isinstance(node.operator, cst.And) else left):
            return True, left
        return _constant(node.right, scope, aliases) if known else (False, None)
    if isinstance(node, cst.Comparison):
        return _compare(node, scope, aliases)
    return False, None


def _compare(
    node: cst.Comparison, scope: _Scope | None, aliases: Mapping[str, object] | None
) -> tuple[bool, object]:
    known, left = _constant(node.left, scope, aliases)
    if not known:
        return False, None
    for target in node.comparisons:
        right: object = _NOT
        if scope is not None and isinstance(target.operator, cst.In | cst.NotIn):
            mapping = _state_value(target.comparator, scope, aliases)
            right = tuple(mapping) if isinstance(mapping, Mapping) else _NOT
        if right is _NOT:
            known, right = _constant(target.comparator, scope, aliases)
            if not known:
                return False, None
        try:
            if not _COMPARE[type(target.operator)](left, right):
                return True, False
        except TypeError:
            return False, None
        left = right
    return True, True


def _plain(value: object) -> object:
    return value.value if isinstance(value, Enum) else value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parenthesized(node: cst.BaseExpression) -> cst.BaseExpression:
    return node if node.lpar else node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def _in_place_of(old: cst.BaseExpression, new: cst.BaseExpression) -> cst.BaseExpression:
    """``new`` where ``old`` stood. An operand binds tighter than the ``and``/``or``/``if``
    or operator it came from, so it needs only the parentheses ``old`` had."""
    if old.lpar and not new.lpar:
        return new.with_changes(lpar=old.lpar, rpar=old.rpar)
    return new


def _fold_elif(orelse: cst.If | cst.Else | None) -> cst.If | cst.Else | None:
    """An ``elif`` chain with its constant tests resolved (the first true one wins)."""
    while isinstance(orelse, cst.If):
        known, value = _constant(orelse.test)
        if not known:
            return orelse
        if value:
            return cst.Else(body=orelse.body)
        orelse = orelse.orelse
    return orelse


# -- module-level context: helpers, constants, imports --------------------------------------


def _scope(function: cst.FunctionDef, state: RSIState, where: _Where) -> _Scope:
    probe = where
    decorator = next((d for d in function.decorators if _decorator_name(d) == _DECORATOR), None)
    if decorator is None or not isinstance(decorator.decorator, cst.Call):
        raise probe.refuse(
            function, f"`{function.name.value}` is not decorated with @{_DECORATOR}(target=...)"
        )
    target = next(
        (a.value for a in decorator.decorator.args if a.keyword and a.keyword.value == "target"),
        None,
    )
    known, value = _constant(target) if target is not None else (False, None)
    sections = (value,) if isinstance(value, str) else value
    if (
        not known
        or not isinstance(sections, tuple)
        or not all(isinstance(s, str) for s in sections)
    ):
        raise probe.refuse(decorator, "target= must be a literal section name or tuple of names")
    for section in sections:
        if section in _UNSPECIALIZABLE or section not in RSIState.model_fields:
            raise probe.refuse(
                decorator, f"target names {section!r}, which is not a state section a copy may read"
            )
    params = function.params.params
    if not params:
        raise probe.refuse(function, "the first parameter must be the state")
    return _Scope(state, params[0].name.value, tuple(sorted(set(sections))), where)


def _module_defs(module: cst.Module) -> dict[str, cst.FunctionDef | cst.SimpleStatementLine]:
    defs: dict[str, cst.FunctionDef | cst.SimpleStatementLine] = {}
    for statement in module.body:
        if isinstance(statement, cst.FunctionDef):
            defs[statement.name.value] = statement
        elif isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1:
            small = statement.body[0]
            target = (
                small.target
                if isinstance(small, cst.AnnAssign)
                else (
                    small.targets[0].target
                    if isinstance(small, cst.Assign) and len(small.targets) == 1
                    else None
                )
            )
            value = getattr(small, "value", None)
            if isinstance(target, cst.Name) and value is not None and _constant(value)[0]:
                defs[target.value] = statement
    return defs


def _imports(module: cst.Module) -> dict[str, tuple[str, cst.CSTNode]]:
    """Name bound by a module-level import → (module it comes from, the import statement)."""
    found: dict[str, tuple[str, cst.CSTNode]] = {}
    for statement in module.body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if isinstance(small, cst.Import):
                for alias in small.names:
                    source = _code(alias.name)
                    bound = alias.asname.name if alias.asname else alias.name
                    found[_code(bound).split(".")[0]] = (source, statement)
            elif isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar):
                source = "." * len(small.relative) + (_code(small.module) if small.module else "")
                for alias in small.names:
                    bound = alias.asname.name if alias.asname else alias.name
                    found[_code(bound)] = (source, statement)
    return found


def _needed_definitions(
    function: cst.FunctionDef,
    defs: Mapping[str, cst.FunctionDef | cst.SimpleStatementLine],
    imports: Mapping[str, tuple[str, cst.CSTNode]],
    where: _Where,
) -> list[cst.BaseStatement]:
    """Helpers and constants ``function`` uses (transitively), in module order; refuse a
    name imported from a module a specialized copy may not import."""
    needed: dict[str, cst.FunctionDef | cst.SimpleStatementLine] = {}
    todo: list[cst.CSTNode] = [function]
    while todo:
        node = todo.pop()
        finder = _Names()
        (node.body if isinstance(node, cst.FunctionDef) else node).visit(finder)
        for name, use in finder.found.items():
            if name in imports and imports[name][0] not in ALLOWED_IMPORTS:
                raise where.refuse(
                    use,
                    f"uses `{name}` from {imports[name][0]}; a specialized copy may import only "
                    f"{', '.join(sorted(ALLOWED_IMPORTS - {'__future__'}))}",
                )
            if name in defs and name not in needed and defs[name] is not function:
                needed[name] = defs[name]
                todo.append(defs[name])
    return [node for name, node in defs.items() if name in needed]


class _SkipsNonReads:
    """Marks the names that are not reads: attributes' names and keyword arguments' names."""

    skip: set[int]

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self.skip.add(id(node.attr))

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None:
            self.skip.add(id(node.keyword))


class _Names(_SkipsNonReads, cst.CSTVisitor):
    """Every name read (first node of each), attributes' and keywords' names excluded."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, cst.Name] = {}
        self.skip = set()

    def visit_Name(self, node: cst.Name) -> None:
        if id(node) not in self.skip:
            self.found.setdefault(node.value, node)


def _names(node: cst.CSTNode) -> set[str]:
    finder = _Names()
    node.visit(finder)
    return set(finder.found)


class _SubstituteNames(_SkipsNonReads, cst.CSTTransformer):
    """Replace reads of loop variables by their element's expression."""

    def __init__(self, names: Mapping[str, cst.BaseExpression]) -> None:
        super().__init__()
        self.names = names
        self.skip = set()

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.BaseExpression:
        if id(original_node) in self.skip or original_node.value not in self.names:
            return updated_node
        return self.names[original_node.value]

    def leave_Attribute(
        self, original_node: cst.Attribute, updated_node: cst.Attribute
    ) -> cst.Attribute:
        # ``(0).real``: an integer literal cannot take an attribute ungrouped (``0.real``).
        if isinstance(updated_node.value, cst.Integer):
            return updated_node.with_changes(value=_parenthesized(updated_node.value))
        return updated_node


_AUGMENTED: dict[type[cst.BaseAugOp], Callable[[Any, Any], object]] = {
    cst.AddAssign: operator.add,
    cst.SubtractAssign: operator.sub,
    cst.MultiplyAssign: operator.mul,
}
#: Annotations of locals PropagateLocalConstants may replace by a number: Python's own
#: types, and C types whose values it can hold exactly (a C ``int`` within 32 bits).
_INT_ANNOTATIONS = frozenset({"int", "cython.int", "cython.long", "cython.Py_ssize_t"})
_FLOAT_ANNOTATIONS = frozenset({"float", "cython.double"})
_BOOL_OPERATORS = (cst.In, cst.NotIn, cst.Is, cst.IsNot)
_Statement = cst.SimpleStatementLine | cst.BaseCompoundStatement


def _fits(number: object, annotation: str | None) -> bool:
    if isinstance(number, float) and not math.isfinite(number):
        return False
    if annotation is None:
        return True
    if annotation in _INT_ANNOTATIONS:
        return isinstance(number, int) and (annotation == "int" or -(2**31) <= number < 2**31)
    return annotation in _FLOAT_ANNOTATIONS and isinstance(number, float)


def _suits(value: object, annotation: cst.Annotation | None) -> bool:
    """Whether a helper's parameter or result annotated ``annotation`` holds ``value`` as is."""
    code = _code(annotation.annotation) if annotation is not None else None
    return _is_number(value) and _fits(value, code)


def _returned(helper: cst.FunctionDef) -> cst.BaseExpression | None:
    """The expression of a helper whose body is only ``return <expression>`` (and a
    docstring), or None."""
    if not isinstance(helper.body, cst.IndentedBlock):
        return None
    body = list(helper.body.body)
    if body and _is_docstring(body[0]):
        body = body[1:]
    if len(body) != 1 or not isinstance(body[0], cst.SimpleStatementLine):
        return None
    small = body[0].body
    if len(small) != 1 or not isinstance(small[0], cst.Return):
        return None
    return small[0].value


def _is_docstring(statement: cst.BaseStatement) -> bool:
    return (
        isinstance(statement, cst.SimpleStatementLine)
        and isinstance(statement.body[0], cst.Expr)
        and isinstance(statement.body[0].value, cst.SimpleString | cst.ConcatenatedString)
    )


def _created_dict(statement: cst.BaseStatement) -> str | None:
    """``NAME`` of a statement ``NAME = {}`` (or ``NAME: T = {}``), else None."""
    if not isinstance(statement, cst.SimpleStatementLine) or len(statement.body) != 1:
        return None
    small = statement.body[0]
    target: cst.BaseExpression | None = None
    if isinstance(small, cst.Assign) and len(small.targets) == 1:
        target = small.targets[0].target
    elif isinstance(small, cst.AnnAssign):
        target = small.target
    value = getattr(small, "value", None)
    if isinstance(target, cst.Name) and isinstance(value, cst.Dict) and not value.elements:
        return target.value
    return None


def _dict_key(node: cst.Subscript, names: Collection[str]) -> tuple[str, str] | None:
    """``(NAME, key)`` of ``NAME["key"]``, NAME in ``names`` and key an identifier."""
    if not isinstance(node.value, cst.Name) or node.value.value not in names:
        return None
    if len(node.slice) != 1 or not isinstance(node.slice[0].slice, cst.Index):
        return None
    key = node.slice[0].slice.value
    if not isinstance(key, cst.SimpleString) or not str(key.evaluated_value).isidentifier():
        return None
    return node.value.value, str(key.evaluated_value)


@dataclass(frozen=True)
class _DictUse:
    name: str
    key: str | None  # None: a use other than a literal key (the dict must stay)
    statement: int  # index of the function body's statement it is in
    write: bool  # ``NAME["key"] = ...`` as a statement of the function's own body


class _DictUses(_SkipsNonReads, cst.CSTVisitor):
    def __init__(self, names: Collection[str]) -> None:
        super().__init__()
        self.names = names
        self.skip = set()
        self.uses: list[_DictUse] = []
        self.statement = 0
        self.write: int | None = None

    def visit_Subscript(self, node: cst.Subscript) -> None:
        found = _dict_key(node, self.names)
        if found:
            self.skip.add(id(node.value))
            use = _DictUse(found[0], found[1], self.statement, id(node) == self.write)
            self.uses.append(use)

    def visit_Del(self, node: cst.Del) -> None:
        for name in _names(node) & set(self.names):
            self.uses.append(_DictUse(name, None, self.statement, False))

    def visit_Name(self, node: cst.Name) -> None:
        if node.value in self.names and id(node) not in self.skip:
            self.uses.append(_DictUse(node.value, None, self.statement, False))


def _scalar_dicts(function: cst.FunctionDef) -> dict[str, frozenset[str]]:
    """The local dicts ScalarizeLocalDicts may replace, with their keys."""
    if not isinstance(function.body, cst.IndentedBlock):
        return {}
    body = list(function.body.body)
    created: dict[str, int] = {}
    for index, statement in enumerate(body):
        name = _created_dict(statement)
        if name is not None:
            created.setdefault(name, index)
    finder = _DictUses(created)
    for index, statement in enumerate(body):
        finder.statement, finder.write = index, None
        small = statement.body[0] if isinstance(statement, cst.SimpleStatementLine) else None
        if isinstance(small, cst.Assign) and len(small.targets) == 1:
            finder.write = id(small.targets[0].target)
        if index == created.get(_created_dict(statement) or ""):
            continue  # the dict's own ``NAME = {}``
        statement.visit(finder)
    taken = _names(function)
    found: dict[str, frozenset[str]] = {}
    for name, start in created.items():
        uses = [u for u in finder.uses if u.name == name]
        written: dict[str, int] = {}
        for use in uses:
            if use.write and use.key is not None:
                written.setdefault(use.key, use.statement)
        keys = {use.key for use in uses}
        if (
            None not in keys
            and all(start < written.get(u.key or "", -1) <= u.statement for u in uses)
            and all(u.write or written[u.key or ""] < u.statement for u in uses)
            and not {f"{name}__{key}" for key in written} & taken
        ):
            found[name] = frozenset(written)
    return found


def _literal_operand(value: object) -> cst.BaseExpression:
    """``value``'s literal, grouped when negative (``x ** (-1)``, not ``x ** -1``)."""
    literal = _literal(value)
    return _parenthesized(literal) if _is_number(value) and value < 0 else literal  # type: ignore[operator]


def _as_bool(term: cst.BaseExpression) -> cst.BaseExpression:
    """``term`` if it is surely a ``bool`` (``in``, ``is``, ``not``), else ``bool(term)``."""
    if isinstance(term, cst.UnaryOperation) and isinstance(term.operator, cst.Not):
        return term
    if isinstance(term, cst.Comparison) and all(
        isinstance(t.operator, _BOOL_OPERATORS) for t in term.comparisons
    ):
        return term
    return cst.Call(cst.Name("bool"), [cst.Arg(term)])


class _Escapes(cst.CSTVisitor):
    """Whether a dropped local's value could still be seen (``found``): a ``try`` or
    ``with`` (a handler runs after a statement raised), ``locals()`` and kin; and the
    annotation of each local and parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.found = False
        self.annotations: dict[str, str] = {}

    def visit_Try(self, node: cst.Try) -> None:
        self.found = True

    def visit_TryStar(self, node: cst.TryStar) -> None:
        self.found = True

    def visit_With(self, node: cst.With) -> None:
        self.found = True

    def visit_Name(self, node: cst.Name) -> None:
        self.found = self.found or node.value in ("locals", "vars", "eval", "exec")

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if isinstance(node.target, cst.Name):
            self.annotations[node.target.value] = _code(node.annotation.annotation)

    def visit_Param(self, node: cst.Param) -> None:
        if node.annotation is not None:
            self.annotations[node.name.value] = _code(node.annotation.annotation)


class _Bindings(cst.CSTVisitor):
    """Names a statement binds anywhere in it; ``everything`` for a ``match`` (captures)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.everything = False

    def _bind(self, target: cst.BaseExpression | None) -> None:
        if target is not None:
            self.names.update(_target_names(target))

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        self._bind(node.target)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._bind(node.target)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._bind(node.target)

    def visit_For(self, node: cst.For) -> None:
        self._bind(node.target)

    def visit_CompFor(self, node: cst.CompFor) -> None:
        self._bind(node.target)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._bind(node.target)

    def visit_Del(self, node: cst.Del) -> None:
        self._bind(node.target)

    def visit_AsName(self, node: cst.AsName) -> None:
        self._bind(cast(cst.BaseExpression, node.name))

    def visit_ImportAlias(self, node: cst.ImportAlias) -> None:
        self.names.add(_code(node.name).split(".")[0])

    def visit_Global(self, node: cst.Global) -> None:
        self.names.update(n.name.value for n in node.names)

    def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
        self.names.update(n.name.value for n in node.names)

    def visit_Match(self, node: cst.Match) -> None:
        self.everything = True


def _bound_names(statement: cst.CSTNode) -> set[str] | None:
    """Names ``statement`` binds, or None when it cannot tell (a ``match``)."""
    finder = _Bindings()
    statement.visit(finder)
    return None if finder.everything else finder.names


class _SuspendsOrBinds(cst.CSTVisitor):
    found = False

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self.found = True

    def visit_Yield(self, node: cst.Yield) -> None:
        self.found = True

    def visit_Await(self, node: cst.Await) -> None:
        self.found = True

    def visit_Lambda(self, node: cst.Lambda) -> None:
        self.found = True

    def visit_CompFor(self, node: cst.CompFor) -> None:
        self.found = True


def _binds_or_suspends(node: cst.CSTNode) -> bool:
    """Whether ``node`` binds a name, suspends, or opens a scope of its own."""
    finder = _SuspendsOrBinds()
    node.visit(finder)
    return finder.found


class _MarkLines(cst.CSTTransformer):
    """Each statement's original line as the last of its leading lines (see ``_unmarked``)."""

    def __init__(self, where: _Where) -> None:
        super().__init__()
        self.where = where

    def on_leave(
        self, original_node: cst.CSTNodeT, updated_node: cst.CSTNodeT
    ) -> cst.CSTNodeT | cst.RemovalSentinel | cst.FlattenSentinel[cst.CSTNodeT]:
        if not isinstance(updated_node, cst.SimpleStatementLine | cst.BaseCompoundStatement):
            return updated_node
        anchor = original_node.name if isinstance(original_node, cst.FunctionDef) else original_node
        position = self.where.lines.get(anchor)
        if position is None:
            return updated_node
        mark = cst.EmptyLine(comment=cst.Comment(f"{_MARK}{position.start.line}"))
        lines = [*updated_node.leading_lines, mark]
        return cast(cst.CSTNodeT, updated_node.with_changes(leading_lines=lines))


def _user_line(match: re.Match[str], copies: Sequence[Specialized]) -> str | None:
    copy = next((c for c in copies if c.module == match.group(1)), None)
    return copy.user_line(int(match.group(2))) if copy is not None else None


def _is_mark(line: cst.EmptyLine) -> bool:
    return line.comment is not None and line.comment.value.startswith(_MARK)


def _unmarked(code: str) -> tuple[str, tuple[int, ...]]:
    """``code`` without its line marks, and the original line of each remaining line: a
    statement's lines follow its mark's line; a blank or comment line, or a line before any
    mark, has none (0)."""
    kept: list[str] = []
    lines: list[int] = []
    origin = 0
    for text in code.splitlines(keepends=True):
        mark = _MARK_LINE.match(text)
        if mark:
            origin = int(mark.group(1))
            continue
        kept.append(text)
        code_line = text.strip() and not text.lstrip().startswith("#")
        lines.append(origin if code_line else 0)
        origin += 1 if origin else 0
    return "".join(kept), tuple(lines)


class _FillEmptyBlocks(cst.CSTTransformer):
    """A block whose statements all folded away gets ``pass``."""

    def leave_IndentedBlock(
        self, original_node: cst.IndentedBlock, updated_node: cst.IndentedBlock
    ) -> cst.IndentedBlock:
        if updated_node.body:
            return updated_node
        return updated_node.with_changes(body=[cst.SimpleStatementLine([cst.Pass()])])


def _loop_exits(block: cst.CSTNode) -> cst.CSTNode | None:
    """The first ``break``/``continue`` that belongs to this loop (not to a nested one)."""

    class Finder(cst.CSTVisitor):
        found: cst.CSTNode | None = None

        def visit_For(self, node: cst.For) -> bool:
            return False

        def visit_While(self, node: cst.While) -> bool:
            return False

        def visit_Break(self, node: cst.Break) -> None:
            self.found = self.found or node

        def visit_Continue(self, node: cst.Continue) -> None:
            self.found = self.found or node

    finder = Finder()
    block.visit(finder)
    return finder.found


def _exits(line: cst.SimpleStatementLine) -> bool:
    return any(isinstance(small, cst.Return | cst.Raise) for small in line.body)


def _target_parts(target: cst.BaseExpression) -> Iterator[cst.BaseExpression]:
    if isinstance(target, cst.Tuple | cst.List):
        for element in target.elements:
            yield from _target_parts(element.value)
    elif isinstance(target, cst.StarredElement):
        yield from _target_parts(target.value)
    else:
        yield target


def _target_names(target: cst.BaseExpression) -> list[str]:
    return [p.value for p in _target_parts(target) if isinstance(p, cst.Name)]


def _decorator_name(decorator: cst.Decorator) -> str:
    node = decorator.decorator
    node = node.func if isinstance(node, cst.Call) else node
    return node.attr.value if isinstance(node, cst.Attribute) else getattr(node, "value", "")


def _is_call(node: cst.BaseExpression, name: str) -> bool:
    return (
        isinstance(node, cst.Call)
        and isinstance(node.func, cst.Name)
        and node.func.value == name
        and len(node.args) == 1
        and node.args[0].star == ""
        and node.args[0].keyword is None
        and name in vars(builtins)
    )


def _code(node: cst.CSTNode) -> str:
    return cst.Module(body=[]).code_for_node(node)


def _target_file(target: str) -> tuple[str, Path]:
    module, sep, function = target.partition(":")
    if not sep or not module or not function.isidentifier():
        raise SpecializeError(
            f"specialize target {target!r} is not module:function "
            "(e.g. runtime.babi.route_score:route_score)"
        )
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise SpecializeError(
            f"specialize target {target!r}: no Python source for module {module!r} on sys.path"
        )
    return module, Path(spec.origin)
