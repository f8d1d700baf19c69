"""Golden before/after pairs for the specializer, one behaviour each (LibCST CodemodTest),
and its refusals, each naming the line."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from libcst.codemod import CodemodTest

from codegen.specialize import (
    SpecializeError,
    SpecializeFunction,
    first_user_line,
    module_name_for,
    name_user_lines,
    specialize_source,
    specialize_target,
    state_fingerprint,
    target_digest,
)
from codegen.state import parse_state

STATE = parse_state(
    json.dumps(
        {
            "version": 3,
            "experts": {
                "tracker": {"kind": "tracking", "weight": 1.25},
                "embedder": {"kind": "embedding", "weight": 0.5},
            },
            "scoring": {"rag": 5.0, "attention": 2.0, "temperature": 0.5},
            "routing": [
                {"when_all": ["where", "is"], "boosts": {"tracker": 0.5}},
                {"when_all": ["how"], "boosts": {"embedder": -1.0}},
            ],
        }
    ).encode()
)
HEADER = "from __future__ import annotations\n"
DECORATOR = '@rsi_optimized(target=("experts", "routing", "scoring"))\n'


def _before(body: str, params: str = "x: float") -> str:
    return f"{DECORATOR}def f(state: RSIState, {params}) -> float:\n{textwrap.indent(body, '    ')}"


def _after(body: str, params: str = "x: float", imports: str = "") -> str:
    signature = f"def f(state: object, {params}) -> float:\n"
    return f"{HEADER}{imports}{signature}{textwrap.indent(body, '    ')}"


class TestSpecializeFunction(CodemodTest):
    TRANSFORM = SpecializeFunction

    def check(self, before: str, after: str) -> None:
        self.assertCodemod(before, after, "f", STATE, python_version="3.11")

    def test_inlines_a_state_field(self) -> None:
        self.check(_before("return state.scoring.rag * x\n"), _after("return 5.0 * x\n"))

    def test_inlines_len_of_a_collection(self) -> None:
        self.check(_before("return len(state.experts) * x\n"), _after("return 2 * x\n"))

    def test_unrolls_a_loop_over_expert_items(self) -> None:
        before = (
            "total = 0.0\n"
            "for name, expert in state.experts.items():\n"
            "    total += expert.weight * x\n"
            "return total\n"
        )
        after = "total = 0.0\ntotal += 1.25 * x\ntotal += 0.5 * x\nreturn total\n"
        self.check(_before(before), _after(after))

    def test_unrolls_nested_loops_over_rules_and_words(self) -> None:
        before = (
            "n = 0.0\n"
            "for rule in state.routing:\n"
            "    for word in rule.when_all:\n"
            "        n += len(word) * x\n"
            "return n\n"
        )
        after = "n = 0.0\nn += 5 * x\nn += 2 * x\nn += 3 * x\nreturn n\n"
        self.check(_before(before), _after(after))

    def test_folds_branches_on_the_expert_kind(self) -> None:
        before = (
            "total = 0.0\n"
            "for expert in state.experts.values():\n"
            '    if expert.kind == "embedding":\n'
            "        total += state.scoring.rag\n"
            '    elif expert.kind == "counting":\n'
            "        total -= 1.0\n"
            "    else:\n"
            "        total += x\n"
            "return total\n"
        )
        after = "total = 0.0\ntotal += x\ntotal += 5.0\nreturn total\n"
        self.check(_before(before), _after(after))

    def test_folds_a_conditional_expression(self) -> None:
        before = "return x if state.scoring.temperature > 1.0 else -x\n"
        self.check(_before(before), _after("return -x\n"))

    def test_folds_membership_in_a_state_dict(self) -> None:
        before = (
            "w = 0.0\n"
            "for rule in state.routing:\n"
            '    if "tracker" in rule.boosts and x > 0:\n'
            '        w += rule.boosts["tracker"]\n'
            "return w\n"
        )
        after = "w = 0.0\nif x > 0:\n    w += 0.5\nreturn w\n"
        self.check(_before(before), _after(after))

    def test_folds_arithmetic_on_two_constants(self) -> None:
        before = "return state.scoring.rag * state.scoring.attention * x\n"
        self.check(_before(before), _after("return 10.0 * x\n"))

    def test_keeps_comments_in_unrolled_bodies(self) -> None:
        before = (
            "t = x\nfor e in state.experts.values():\n    # one expert\n    t += e.weight\n"
            "return t\n"
        )
        after = "t = x\n# one expert\nt += 1.25\n# one expert\nt += 0.5\nreturn t\n"
        self.check(_before(before), _after(after))

    def test_an_empty_collection_leaves_pass(self) -> None:
        state = STATE.model_copy(update={"routing": ()})
        before = _before("if x > 0:\n    for rule in state.routing:\n        x += 1.0\nreturn x\n")
        source = specialize_source(before, "f", state).source
        assert source == _after("if x > 0:\n    pass\nreturn x\n")

    def test_the_else_block_of_an_unrolled_loop_follows_it(self) -> None:
        before = (
            "for e in state.experts.values():\n    x += e.weight\nelse:\n    x *= 2.0\nreturn x\n"
        )
        after = "x += 1.25\nx += 0.5\nx *= 2.0\nreturn x\n"
        self.check(_before(before), _after(after))

    def test_enumerate_binds_literal_indexes(self) -> None:
        before = "for i, e in enumerate(state.experts.values()):\n    x += i * e.weight\nreturn x\n"
        after = "x += 0.0\nx += 0.5\nreturn x\n"
        self.check(_before(before), _after(after))

    def test_runtime_code_stays_as_written(self) -> None:
        body = "# untouched\nfor i in range(3):\n    x = max(x, float(i))  # keep\nreturn x\n"
        self.check(_before(body), _after(body))

    def test_copies_helpers_constants_and_math(self) -> None:
        module = (
            "import math\n\nfrom codegen.state import RSIState\n\nSCALE = 2.0\n\n\n"
            "def _helper(v: float) -> float:\n    return math.sqrt(v) * SCALE\n\n\n"
            + _before("return _helper(x) + state.scoring.rag\n")
        )
        after = (
            "SCALE = 2.0\n\n\ndef _helper(v: float) -> float:\n"
            "    return math.sqrt(v) * SCALE\n\n\n"
            "def f(state: object, x: float) -> float:\n    return _helper(x) + 5.0\n"
        )
        done = specialize_source(module, "f", STATE)
        assert done.source == f"{HEADER}import math\n\n{after}"
        assert done.sections == ("experts", "routing", "scoring")

    def test_unrolls_all_over_each_rules_words(self) -> None:
        params = "x: float, words: frozenset[str]"
        before = (
            "for rule in state.routing:\n"
            "    if all(w in words for w in rule.when_all):\n"
            "        x += 1.0\n"
            "return x\n"
        )
        after = (
            "if ('where' in words and 'is' in words):\n    x += 1.0\n"
            "if ('how' in words):\n    x += 1.0\nreturn x\n"
        )
        self.check(_before(before, params), _after(after, params))

    def test_unrolls_any_and_keeps_its_bool_result(self) -> None:
        before = 'return float(any(x > len(w) for w in ("a", "bc")))\n'
        self.check(_before(before), _after("return float((bool(x > 1) or bool(x > 2)))\n"))

    def test_all_over_an_empty_tuple_is_true(self) -> None:
        before = "if all(w > x for w in ()):\n    x += 1.0\nreturn x\n"
        self.check(_before(before), _after("x += 1.0\nreturn x\n"))

    def test_propagates_a_local_counter_into_the_reads_that_follow(self) -> None:
        params = "x: float, s: list[float]"
        before = "row = 0\nx += s[row]\nrow += 2\nx += s[row + 1]\nreturn x\n"
        self.check(_before(before, params), _after("x += s[0]\nx += s[3]\nreturn x\n", params))

    def test_puts_a_propagated_local_back_before_it_is_rebound(self) -> None:
        before = "n = 1\nx += n\nfor i in range(3):\n    n = n * 2\nreturn x + n\n"
        after = "x += 1\nn = 1\nfor i in range(3):\n    n = n * 2\nreturn x + n\n"
        self.check(_before(before), _after(after))

    def test_puts_a_propagated_local_back_at_the_end_of_a_loop_body(self) -> None:
        before = "for i in range(3):\n    k = 2\n    x *= k\n    k += 1\nreturn x\n"
        after = "for i in range(3):\n    x *= 2\n    k = 3\nreturn x\n"
        self.check(_before(before), _after(after))

    def test_puts_a_propagated_local_back_before_a_break(self) -> None:
        before = "for i in range(3):\n    k = 2\n    if x > k:\n        break\nreturn x\n"
        self.check(_before(before), _after(before))

    def test_keeps_the_comments_of_a_dropped_assignment(self) -> None:
        before = "# start at one\nk = 1\nreturn x + k\n"
        self.check(_before(before), _after("# start at one\nreturn x + 1\n"))

    def test_propagates_nothing_a_c_int_cannot_hold(self) -> None:
        before = "k: cython.int\nk = 3000000000\nreturn x + k\n"
        self.check(_before(before), _after(before, imports="import cython\n"))

    def test_propagates_nothing_a_handler_could_read(self) -> None:
        before = "k = 1\ntry:\n    x += k\nexcept ValueError:\n    x = k\nreturn x\n"
        self.check(_before(before), _after(before))

    def test_folds_a_helper_call_on_constants(self) -> None:
        helper = "def _clamp(w: float) -> float:\n    return w if w > 0.0 else 0.0\n\n\n"
        body = "return x * _clamp(state.experts['tracker'].weight) + _clamp(x)\n"
        before = helper + _before(body)
        after = helper + "def f(state: object, x: float) -> float:\n"
        after += "    return x * 1.25 + _clamp(x)\n"
        self.check(before, HEADER + after)

    def test_folds_no_helper_call_its_annotation_would_convert(self) -> None:
        helper = "def _half(w: float) -> float:\n    return w / 2\n\n\n"
        before = helper + _before("return x + _half(len(state.experts))\n")
        after = helper + "def f(state: object, x: float) -> float:\n    return x + _half(2)\n"
        self.check(before, HEADER + after)

    def test_scalarizes_a_local_dict_of_literal_keys(self) -> None:
        before = (
            "w: dict[str, float] = {}\n"
            "for name, e in state.experts.items():\n"
            "    w[name] = e.weight * x\n"
            "return w['tracker'] - w['embedder']\n"
        )
        after = "w__tracker = 1.25 * x\nw__embedder = 0.5 * x\nreturn w__tracker - w__embedder\n"
        self.check(_before(before), _after(after))

    def test_keeps_a_dict_read_before_it_is_written(self) -> None:
        before = "w = {}\nif x > 0:\n    w['a'] = x\nreturn w['a']\n"
        self.check(_before(before), _after(before))

    def test_keeps_a_dict_used_whole(self) -> None:
        before = "w = {}\nw['a'] = x\nreturn len(w) * w['a']\n"
        self.check(_before(before), _after(before))


def test_the_line_map_names_each_statements_original_line() -> None:
    before = (
        "total = 0.0\n"
        "for e in state.experts.values():\n"
        "    # one expert\n"
        "    total += e.weight * x\n"
        "return total\n"
    )
    done = specialize_source(_before(before), "f", STATE)
    assert done.source == _after(
        "total = 0.0\n# one expert\ntotal += 1.25 * x\n# one expert\ntotal += 0.5 * x\n"
        "return total\n"
    )
    # the __future__ import, def, total = 0.0, comment, +=, comment, +=, return
    assert done.lines == (0, 2, 3, 0, 6, 0, 6, 7)


def test_a_copy_line_in_a_message_names_the_users_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rsi_user_lines.py").write_text(
        "from codegen.state import RSIState\n"
        "from runtime.optimized import rsi_optimized\n\n\n"
        + _before("y = x * state.scoring.rag\nreturn y\n")
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    copy = specialize_target("rsi_user_lines:f", STATE)
    line = copy.source.splitlines().index("    y = x * 5.0") + 1
    message = f"cython: opt_rsi_user_lines__f.py:{line}:13: bad; other.py:{line}: kept"
    assert name_user_lines(message, [copy]) == (
        f"cython: opt_rsi_user_lines__f.py:{line}:13 (from {tmp_path}/rsi_user_lines.py:7): "
        f"bad; other.py:{line}: kept"
    )
    assert first_user_line(message, [copy]) == f"{tmp_path}/rsi_user_lines.py:7"


def _refusal(body: str, line: int, problem: str, *, prefix: str = "") -> None:
    source = prefix + _before(body)
    expected = f"mod.py:{line}: {problem}"
    with pytest.raises(SpecializeError, match=f"^{re.escape(expected)}$"):
        specialize_source(source, "f", STATE, filename="mod.py")


class TestRefusals:
    def test_a_state_attribute_assigned(self) -> None:
        _refusal(
            "state.scoring.rag = x\nreturn x\n",
            3,
            "assigns to the state attribute `state.scoring.rag`",
        )

    def test_a_collection_mutated_inside_the_loop(self) -> None:
        _refusal(
            "for rule in state.routing:\n    rule.when_all.append('x')\nreturn x\n",
            4,
            "mutates the state collection `rule.when_all` (.append)",
        )

    def test_a_non_literal_unroll(self) -> None:
        _refusal(
            "for t in state.scoring.temperature:\n    x += t\nreturn x\n",
            3,
            "cannot unroll `for ... in state.scoring.temperature`: not a literal state collection",
        )

    def test_a_non_literal_index(self) -> None:
        _refusal(
            "for name in ('tracker',):\n    x += state.experts[name].weight\nreturn x\n",
            4,
            "`state.experts[name]` indexes the state with a non-literal",
        )

    def test_break_in_an_unrolled_loop(self) -> None:
        _refusal(
            "for e in state.experts.values():\n    if x > e.weight:\n        break\nreturn x\n",
            5,
            "`break`/`continue` in a loop over the state cannot be unrolled",
        )

    def test_rebinding_a_loop_variable(self) -> None:
        _refusal(
            "for e in state.experts.values():\n    e = x\nreturn x\n",
            4,
            "assigns to `e`, a name bound to the state",
        )

    def test_the_state_passed_on(self) -> None:
        _refusal(
            "return g(state)\n",
            3,
            "`state` is the state: a specialized function may read scalar fields, loop over "
            "collections, take len() and test membership",
        )

    def test_a_read_outside_the_target(self) -> None:
        _refusal(
            "return x + state.architecture.heads\n",
            3,
            "reads state.architecture, which is not in target=(experts, routing, scoring)",
        )

    def test_the_version(self) -> None:
        _refusal(
            "return x + state.version\n",
            3,
            "`version` is not a state section a specialized copy may read",
        )

    def test_a_name_imported_from_elsewhere(self) -> None:
        _refusal(
            "return float(np.sqrt(x)) + state.scoring.rag\n",
            5,
            "uses `np` from numpy; a specialized copy may import only cython, math, typing",
            prefix="import numpy as np\n\n",
        )

    def test_a_comprehension_over_models(self) -> None:
        _refusal(
            "return sum(e.weight for e in state.experts.values())\n",
            3,
            "`state.experts.values()` can only be a for loop's iterable (it is unrolled there)",
        )

    def test_a_missing_decorator(self) -> None:
        with pytest.raises(
            SpecializeError,
            match=r"^mod.py:1: `f` is not decorated with @rsi_optimized\(target=...\)$",
        ):
            specialize_source(
                "def f(state: RSIState) -> None:\n    pass\n", "f", STATE, filename="mod.py"
            )


def test_the_shipped_example_specializes_and_records_its_state() -> None:
    copy = specialize_target("runtime.babi.route_score:route_score", STATE)
    assert (
        copy.module == module_name_for(copy.target) == "opt_runtime_babi_route_score__route_score"
    )
    assert copy.state_hash == state_fingerprint(STATE, ("experts", "routing", "scoring"))
    assert "state." not in copy.source.split('"""', 2)[2]
    assert copy.state_hash in copy.source  # another state gives another module, another build


def test_a_bad_target_names_the_fix() -> None:
    with pytest.raises(
        SpecializeError, match=r"^specialize target 'nocolon' is not module:function"
    ):
        specialize_target("nocolon", STATE)


def test_two_targets_with_one_module_name_are_refused() -> None:
    """``pkg.mod:f`` and ``pkg_mod:f`` are both opt_pkg_mod__f: one would run the other's
    code (red team)."""
    with pytest.raises(SpecializeError) as caught:
        target_digest(["pkg.mod:f", "pkg_mod:f"])
    assert str(caught.value) == (
        "specialize targets 'pkg.mod:f' and 'pkg_mod:f' would both be opt_pkg_mod__f; "
        "specialize one of them, or rename a module"
    )


def test_a_source_that_is_not_utf8_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rsi_user_latin1.py").write_bytes(b"def f(state):\n    return '\xff'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SpecializeError) as caught:
        specialize_target("rsi_user_latin1:f", STATE)
    assert str(caught.value) == (
        f"{tmp_path}/rsi_user_latin1.py: not UTF-8 (byte 26); save it as UTF-8"
    )
