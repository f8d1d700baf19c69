"""Render, compile and import one attention module outside a full build.

Tests, the kernel benchmark and the autotuner need a single mechanism's module for some
state, often several variants of it side by side in one process. This renders just that
template, compiles it through the same content-addressed cache as a full build and imports
it under a package name unique to its content key (an extension cannot be re-imported under
a name already used, see :mod:`runtime.loader`).
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from codegen.compile import CompiledModule, compile_modules, shared_utility
from codegen.render import render_module
from codegen.state import AttentionMechanism, RSIState
from codegen.toolchain import CompileSettings
from runtime.loader import Artifact, exec_artifact, import_package

__all__ = [
    "CHECKS",
    "MODULES",
    "ENTRY_POINTS",
    "KernelModule",
    "kernel_module",
    "kernel_modules",
    "module_source",
]

#: Generated module of each mechanism (``attention`` is scaled dot-product: the model uses it).
MODULES: dict[AttentionMechanism, str] = {
    AttentionMechanism.sdpa: "attention",
    **{m: f"attention_{m.value}" for m in AttentionMechanism if m is not AttentionMechanism.sdpa},
}
#: The static module every kernel imports (``from . import kernel_checks``).
CHECKS = "kernel_checks"
#: Public kernel function of each mechanism's module.
ENTRY_POINTS: dict[AttentionMechanism, str] = {m: m.value for m in AttentionMechanism}

_loaded: dict[str, types.ModuleType] = {}
_guard = threading.Lock()


@dataclass(frozen=True)
class KernelModule:
    """An imported attention module and where it came from."""

    mechanism: AttentionMechanism
    module: types.ModuleType
    key: str
    tier: str
    seconds: float  # compile time (0 on a cache hit)

    @property
    def kernel(self) -> types.FunctionType:
        """The mechanism's public kernel function."""
        fn: types.FunctionType = getattr(self.module, ENTRY_POINTS[self.mechanism])
        return fn


def module_source(state: RSIState, mechanism: AttentionMechanism) -> str:
    """The rendered, formatted source of ``mechanism``'s module for ``state``."""
    return render_module(MODULES[mechanism], state)


def kernel_module(
    state: RSIState,
    mechanism: AttentionMechanism,
    settings: CompileSettings,
    cache_dir: Path,
) -> KernelModule:
    """Render, compile (cached) and import ``mechanism``'s module for ``state``."""
    return kernel_modules(state, (mechanism,), settings, cache_dir)[mechanism]


def kernel_modules(
    state: RSIState,
    mechanisms: Iterable[AttentionMechanism],
    settings: CompileSettings,
    cache_dir: Path,
) -> dict[AttentionMechanism, KernelModule]:
    """Several mechanisms' modules for ``state``, compiled in parallel (``settings.jobs``)."""
    wanted = list(mechanisms)
    sources = {MODULES[m]: module_source(state, m) for m in wanted}
    sources[CHECKS] = render_module(CHECKS, state)
    compiled = compile_modules(sources, settings, cache_dir)
    checks = compiled[CHECKS]
    out: dict[AttentionMechanism, KernelModule] = {}
    for mechanism in wanted:
        name = MODULES[mechanism]
        done = compiled[name]
        with _guard:
            module = _loaded.get(done.key)
            if module is None:
                module = _import(done, checks, settings, cache_dir)
                _loaded[done.key] = module
        out[mechanism] = KernelModule(mechanism, module, done.key, settings.backend, done.seconds)
    return out


def _import(
    done: CompiledModule, checks: CompiledModule, settings: CompileSettings, cache_dir: Path
) -> types.ModuleType:
    """Import a kernel module in a package of its own, with the static module it imports."""
    if settings.backend == "cython" and settings.shared_utility:
        shared = settings.shared_module_name
        if shared not in sys.modules:
            exec_artifact(shared, shared_utility(settings, cache_dir))
    artifacts = {
        done.name: Artifact(done.artifact, done.sha256, (checks.name,)),
        checks.name: Artifact(checks.artifact, checks.sha256),
    }
    return import_package(f"rsi_kernel_{done.key[:16]}", artifacts)[done.name]
