"""State → build directory: render, check, compile, assemble, publish atomically.

A build directory ``generated/<build id>/`` holds every module's rendered source, its
artifact (for compiled tiers, a private copy: a loaded shared object must never be replaced or
shared by inode with another build) and ``manifest.json``. The build id hashes the backend and
every module's content key, so equal inputs give the same id and a rebuild is a lookup.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from codegen.check import parse_checked, type_check
from codegen.compile import CompiledModule, compile_modules, module_key, shared_utility
from codegen.compile import _staging as staging
from codegen.render import render_sources
from codegen.state import RSIState, state_sha256
from codegen.toolchain import CompileSettings, content_key, toolchain_fingerprint

__all__ = ["BuildResult", "MANIFEST", "CACHE_DIR", "build_state", "read_manifest", "plan_build_id"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CACHE_DIR = ".cache"


@dataclass(frozen=True)
class BuildResult:
    """What a build produced and what it cost."""

    build_id: str
    path: Path
    tier: str
    seconds: float
    compiled: tuple[str, ...]
    cache_hits: int
    modules: int
    type_checked: tuple[str, ...]


def read_manifest(build_dir: Path) -> dict[str, object]:
    """The manifest of a published build directory."""
    data: dict[str, object] = json.loads((build_dir / MANIFEST).read_text())
    return data


def plan_build_id(sources: dict[str, str], settings: CompileSettings) -> str:
    """The id a build of ``sources`` with ``settings`` gets, computed without compiling."""
    keys = {name: module_key(name, src, settings) for name, src in sorted(sources.items())}
    return content_key({"backend": settings.backend, "modules": keys})[:16]


def build_state(
    state: RSIState,
    state_bytes: bytes,
    settings: CompileSettings,
    generated_dir: Path,
    template_dir: Path | None = None,
) -> BuildResult:
    """Build ``state`` into ``generated_dir``; an existing build with the same id is reused."""
    start = time.perf_counter()
    sources = render_sources(state, template_dir)
    for name, source in sources.items():
        parse_checked(name, source)
    checked = type_check(sources, generated_dir / CACHE_DIR / "mypy-ok")
    build_id = plan_build_id(sources, settings)
    final = generated_dir / build_id
    if (final / MANIFEST).exists():
        return BuildResult(
            build_id, final, settings.backend, time.perf_counter() - start, (), len(sources),
            len(sources), tuple(checked),
        )
    compiled = compile_modules(sources, settings, generated_dir / CACHE_DIR)
    manifest = {
        "build_id": build_id,
        "tier": settings.backend,
        "state_version": state.version,
        "state_sha256": state_sha256(state_bytes),
        "settings": {"cflags": list(settings.cflags), "cc": settings.cc},
        "toolchain": toolchain_fingerprint(settings),
        "shared_module": _shared_name(settings),
        "created_at": time.time(),
    }
    modules: dict[str, object] = {}
    with staging(generated_dir) as work:
        for name, source in sources.items():
            (work / f"{name}.py").write_text(source)
            modules[name] = _install(compiled[name], source, work)
        manifest["modules"] = modules
        if manifest["shared_module"]:
            lib = shared_utility(settings, generated_dir / CACHE_DIR)
            shutil.copyfile(lib, work / lib.name)
        manifest["seconds"] = round(time.perf_counter() - start, 4)
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _fsync_tree(work)
        try:
            os.rename(work, final)
        except OSError:
            logger.info("build %s was published concurrently; reusing it", build_id)
    built = tuple(m.name for m in compiled.values() if not m.cache_hit)
    return BuildResult(
        build_id, final, settings.backend, time.perf_counter() - start, built,
        len(sources) - len(built), len(sources), tuple(checked),
    )


def _shared_name(settings: CompileSettings) -> str | None:
    if settings.backend == "cython" and settings.shared_utility:
        return settings.shared_module_name
    return None


def _install(module: CompiledModule, source: str, work: Path) -> dict[str, object]:
    artifact = work / module.artifact.name
    if module.artifact.suffix != ".py":
        shutil.copyfile(module.artifact, artifact)  # a private inode per build, never a link
    return {
        "key": module.key,
        "artifact": artifact.name,
        "artifact_sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "seconds": round(module.seconds, 4),
        "cache_hit": module.cache_hit,
    }


def _fsync_tree(path: Path) -> None:
    for item in path.iterdir():
        fd = os.open(item, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

