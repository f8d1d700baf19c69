"""Models built once per session from the shipped (tuned) state."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from codegen.state import RSIState, load_state
from runtime.babi.builds import BuiltModel, build_model
from runtime.babi.tune import state_from_data

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def babi_generated(tmp_path_factory: pytest.TempPathFactory, module_cache: Path) -> Path:
    """A generated/ directory shared by this package's builds.

    Its module cache is the session's: the shipped state's compiled tier, which the evidence,
    sandbox and gate tests compile too, is compiled once per session, not once more here.
    """
    root = tmp_path_factory.mktemp("babi-generated")
    (root / ".cache").symlink_to(module_cache)
    return root


@pytest.fixture(scope="session")
def tuned_state() -> RSIState:
    """The shipped state."""
    return load_state(REPO / "rsi_state.json")


@pytest.fixture(scope="session")
def uniform_state() -> RSIState:
    """The uniform starting state."""
    return load_state(REPO / "states" / "uniform.json")


@pytest.fixture(scope="session")
def python_model(tuned_state: RSIState, babi_generated: Path) -> BuiltModel:
    """The interpreted tier of the shipped state."""
    return build_model(tuned_state, babi_generated, "python")


@pytest.fixture(scope="session")
def compiled_model(tuned_state: RSIState, babi_generated: Path) -> BuiltModel:
    """The compiled tier of the shipped state (skipped without a C compiler)."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the compiled tier cannot be built")
    return build_model(tuned_state, babi_generated, "cython")


@pytest.fixture(scope="session")
def routed_state(uniform_state: RSIState) -> RSIState:
    """The uniform state with the embedder weighted and routing rules (every code path on)."""
    data = uniform_state.model_dump(mode="json")
    data["experts"]["embedder"]["weight"] = 0.3
    data["scoring"]["rag"] = 0.7
    data["routing"] = [
        {"when_all": ["where"], "boosts": {"tracker": 1.5, "embedder": -0.2}},
        {"when_all": ["is", "in"], "boosts": {"counter": 2.0}},
        {"when_all": ["afraid"], "boosts": {"embedder": -5.0}},
    ]
    return state_from_data(data)
