"""Build a state and wrap the loaded build as a :class:`BabiModel`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from codegen.build import build_state
from codegen.plan import plan
from codegen.state import RSIState, dump_state
from codegen.toolchain import Backend, CompileSettings
from runtime.babi.model import BabiModel
from runtime.loader import LoadedBuild, load_build

__all__ = ["BuiltModel", "build_model", "model_of"]


@dataclass(frozen=True)
class BuiltModel:
    """A model and the build it runs."""

    model: BabiModel
    build: LoadedBuild


def build_model(
    state: RSIState,
    generated_dir: Path,
    backend: Backend = "cython",
    *,
    full_evidence: bool = False,
) -> BuiltModel:
    """Build ``state`` with ``backend`` into ``generated_dir`` (cached) and load it."""
    result = build_state(state, dump_state(state), CompileSettings(backend=backend), generated_dir)
    build = load_build(result.path)
    return BuiltModel(model_of(build, full_evidence=full_evidence), build)


def model_of(build: LoadedBuild, *, full_evidence: bool = False) -> BabiModel:
    """The model over a loaded build's modules, planned from the state it was built from."""
    return BabiModel(
        build.modules, plan=plan(build.state), tier=build.tier, full_evidence=full_evidence
    )
