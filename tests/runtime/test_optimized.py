"""``@rsi_optimized``: the specialized copy agrees with the generic function (hypothesis,
both tiers), and the decorated name picks the right one."""

from __future__ import annotations

import importlib
import json
import logging
import random
import re
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegen.compile import compile_modules
from codegen.errors import CheckError
from codegen.specialize import specialize_target
from codegen.state import RSIState, load_state, parse_state
from codegen.toolchain import CompileSettings
from runtime.babi.route_score import evidence_rows, route_score, sample_call
from runtime.loader import LoadedBuild, exec_artifact
from runtime.optimized import activate
from runtime.project import Project

TARGET = "runtime.babi.route_score:route_score"
KINDS = ("tracking", "deduction", "spatial", "counting", "motivation", "embedding")
WORDS = ("where", "is", "how", "many", "why", "did", "go")


def _state(seed: int) -> RSIState:
    """A state of the shipped model's shape: 3 to 6 experts, 0 to 6 routing rules."""
    rng = random.Random(seed)
    names = rng.sample(
        ["tracker", "deducer", "spatial", "counter", "motive", "embedder"],
        rng.randint(3, 6),
    )
    experts = {n: {"kind": rng.choice(KINDS), "weight": round(rng.uniform(0, 3), 3)} for n in names}
    rules = [
        {
            "when_all": rng.sample(WORDS, rng.randint(1, 2)),
            "boosts": {
                n: round(rng.uniform(-2, 2), 3) for n in rng.sample(names, rng.randint(1, 2))
            },
        }
        for _ in range(rng.randint(0, 6))
    ]
    doc: dict[str, Any] = {"version": 1, "experts": experts, "routing": rules}
    doc["scoring"] = {
        "attention": rng.uniform(0, 5),
        "temperature": rng.uniform(0.1, 3),
    }
    return parse_state(json.dumps(doc).encode())


STATES = tuple(_state(seed) for seed in range(6))
SPECIALIZED = tuple(specialize_target(TARGET, s) for s in STATES)


def _pure(index: int) -> Callable[..., tuple[int, float]]:
    namespace: dict[str, Any] = {}
    exec(compile(SPECIALIZED[index].source, SPECIALIZED[index].module, "exec"), namespace)
    return namespace["route_score"]  # type: ignore[no-any-return]


PURE = tuple(_pure(i) for i in range(len(STATES)))


Call = tuple[int, memoryview, int, frozenset[str]]


@st.composite
def calls(draw: st.DrawFn, states: int = len(STATES)) -> Call:
    index = draw(st.integers(0, states - 1))
    n_cand = draw(st.integers(0, 6))
    rows = evidence_rows(STATES[index])
    value = st.floats(-1e3, 1e3, allow_nan=False)
    flat = draw(st.lists(value, min_size=rows * n_cand, max_size=rows * n_cand))
    scores = np.array(flat, dtype=np.float64).reshape(rows, n_cand)
    words = frozenset(draw(st.lists(st.sampled_from(WORDS), max_size=4)))
    return index, memoryview(scores), n_cand, words


@settings(max_examples=1000, deadline=None)
@given(calls())
def test_pure_specialized_copy_agrees_with_the_generic_function(call: Call) -> None:
    index, scores, n_cand, words = call
    state = STATES[index]
    expected = route_score.generic(state, scores, n_cand, words)
    assert PURE[index](state, scores, n_cand, words) == expected


@pytest.fixture(scope="module")
def compiled(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Callable[..., tuple[int, float]], ...]:
    cache = tmp_path_factory.mktemp("specialized-cache")
    options = CompileSettings(backend="cython", shared_utility=False, jobs=2)
    sources = {f"{c.module}_{i}": c.source for i, c in enumerate(SPECIALIZED[:COMPILED])}
    done = compile_modules(sources, options, cache)
    assert all(m.tier == "cython" for m in done.values())
    return tuple(exec_artifact(name, m.artifact).route_score for name, m in done.items())


COMPILED = 3  # states whose copy is compiled (Cython, one module each)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None)
@given(calls(COMPILED))
def test_compiled_specialized_copy_agrees_with_the_generic_function(
    compiled: tuple[Callable[..., tuple[int, float]], ...], call: Call
) -> None:
    index, scores, n_cand, words = call
    state = STATES[index]
    expected = route_score.generic(state, scores, n_cand, words)
    assert compiled[index](state, scores, n_cand, words) == expected


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedBuild, RSIState]:
    """A pure-Python build of a tiny template set with the example specialized in."""
    root = tmp_path_factory.mktemp("optimized")
    state = STATES[1]
    (root / "rsi_state.json").write_text(state.model_dump_json())
    project = Project(
        root / "rsi_state.json",
        template_dir=Path(__file__).parents[1] / "fixtures" / "templates",
    )
    project.build(CompileSettings(backend="python", specialize=(TARGET,)))
    return project.load_active(), state


def test_no_active_build_calls_the_generic_function(
    served: tuple[LoadedBuild, RSIState],
) -> None:
    activate(None)
    assert route_score.specialized(None, served[1]) is None


def test_the_active_build_serves_its_copy_for_its_state(
    served: tuple[LoadedBuild, RSIState],
) -> None:
    build, state = served
    copy = build.module("opt_runtime_babi_route_score__route_score").route_score
    assert route_score.specialized(build, state) is copy
    activate(build)
    try:
        args = sample_call(state)
        assert route_score(state, *args) == copy(state, *args) == route_score.generic(state, *args)
        assert route_score._memo[2] is copy
        other = STATES[2]
        route_score(other, *sample_call(other))
        assert route_score._memo[2] is route_score.generic  # another state: generic
    finally:
        activate(None)


def test_a_build_without_the_copy_falls_back_and_says_so_once(
    served: tuple[LoadedBuild, RSIState], caplog: pytest.LogCaptureFixture
) -> None:
    build, state = served
    bare = replace(
        build,
        build_id="nocopy",
        manifest=build.manifest.model_copy(update={"specialized": {}}),
    )
    with caplog.at_level(logging.WARNING, logger="runtime.optimized"):
        assert route_score.specialized(bare, state) is None
        assert route_score.specialized(bare, state) is None
    assert [r.getMessage() for r in caplog.records] == [
        "build nocopy carries no specialized copy (build with --specialize) for "
        f"{TARGET}; calling the generic function"
    ]


def test_a_build_missing_the_module_falls_back(
    served: tuple[LoadedBuild, RSIState], caplog: pytest.LogCaptureFixture
) -> None:
    build, state = served
    broken = replace(build, build_id="nomodule", modules=MappingProxyType({}))
    with caplog.at_level(logging.WARNING, logger="runtime.optimized"):
        assert route_score.specialized(broken, state) is None
    assert (
        caplog.records[0]
        .getMessage()
        .startswith(
            "build nomodule lacks module opt_runtime_babi_route_score__route_score or its "
            "route_score"
        )
    )


USER_MODULE = '''\
"""User functions whose specialized copies fail: one at type check, one at call."""

from __future__ import annotations

from codegen.state import RSIState
from runtime.optimized import rsi_optimized


@rsi_optimized(target="scoring")
def shout(state: RSIState, x: float) -> float:
    y = x * state.scoring.rag
    return y.upper()


@rsi_optimized(target="scoring")
def ratio(state: RSIState, x: float) -> float:
    # The spread is zero in a state whose rag is 5.0.
    spread = state.scoring.rag - 5.0
    return x / spread
'''


@pytest.fixture
def failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Project, Path]:
    """A project whose state makes ``ratio``'s copy divide by zero, and the user's module."""
    user = tmp_path / "src" / "rsi_user_failing.py"
    user.parent.mkdir()
    user.write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(user.parent))
    monkeypatch.delitem(sys.modules, "rsi_user_failing", raising=False)  # each test's own
    state = {"version": 1, "experts": {"t": {"kind": "tracking", "weight": 1.0}}}
    (tmp_path / "rsi_state.json").write_text(json.dumps({**state, "scoring": {"rag": 5.0}}))
    templates = Path(__file__).parents[1] / "fixtures" / "templates"
    return Project(tmp_path / "rsi_state.json", template_dir=templates), user


def test_a_copy_failing_its_type_check_names_the_users_line(
    failing: tuple[Project, Path],
) -> None:
    project, user = failing
    settings = CompileSettings(backend="python", specialize=("rsi_user_failing:shout",))
    expected = (
        f"mypy: opt_rsi_user_failing__shout.py:11 (from {user}:12): error: "
        '"float" has no attribute "upper" [attr-defined]'
    )
    with pytest.raises(CheckError, match=f"^{re.escape(expected)}$"):
        project.build(settings)


def test_a_copy_raising_at_call_names_the_users_line(failing: tuple[Project, Path]) -> None:
    project, user = failing
    project.build(CompileSettings(backend="python", specialize=("rsi_user_failing:ratio",)))
    build = project.load_active()
    user_module = importlib.import_module("rsi_user_failing")
    activate(build)
    try:
        with pytest.raises(ZeroDivisionError) as raised:
            user_module.ratio(load_state(project.state_path), 1.0)
    finally:
        activate(None)
    assert raised.value.__notes__ == [
        f"raised in rsi_user_failing:ratio's specialized copy, build {build.build_id}: "
        f"opt_rsi_user_failing__ratio.py:11 (from {user}:19)"
    ]


def test_a_copy_of_an_edited_source_is_stale_and_the_generic_runs(
    failing: tuple[Project, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The copy is valid for the state *and* the source it was made from (red team: an edited
    function kept running its old copy, with notes pointing at the wrong lines)."""
    project, user = failing
    project.build(CompileSettings(backend="python", specialize=("rsi_user_failing:ratio",)))
    build = project.load_active()
    user_module = importlib.import_module("rsi_user_failing")
    user.write_text("# edited after the build\n" + USER_MODULE)
    activate(build)
    try:
        with caplog.at_level(logging.WARNING, logger="runtime.optimized"):
            with pytest.raises(ZeroDivisionError) as raised:
                user_module.ratio(load_state(project.state_path), 1.0)
    finally:
        activate(None)
    assert not getattr(raised.value, "__notes__", [])  # the generic function raised it
    assert [r.getMessage() for r in caplog.records] == [
        f"build {build.build_id} has a copy made from another version of {user} (rebuild to "
        "specialize the current one) for rsi_user_failing:ratio; calling the generic function"
    ]
