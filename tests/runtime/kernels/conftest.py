"""Generated attention modules, compiled once per test session per test architecture."""

from __future__ import annotations

from pathlib import Path

import pytest

from codegen.state import AttentionMechanism
from codegen.toolchain import CompileSettings
from runtime.kernels.build import KernelModule, kernel_modules
from tests.runtime.kernels.cases import make_state

Built = dict[AttentionMechanism, KernelModule]
_built: dict[tuple[str, str], Built] = {}


def built(name: str, backend: str, cache: Path) -> Built:
    """Every mechanism's module for test architecture ``name`` (memoized per session)."""
    key = (name, backend)
    if key not in _built:
        settings = CompileSettings(backend=backend)  # type: ignore[arg-type]
        _built[key] = kernel_modules(make_state(name), list(AttentionMechanism), settings, cache)
    return _built[key]


@pytest.fixture(scope="session")
def kernel_cache(module_cache: Path) -> Path:
    """The session's module cache (shared with the other build tests)."""
    return module_cache
