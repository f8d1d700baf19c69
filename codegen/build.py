"""State → build directory: render, check, compile, assemble, publish atomically.

A build directory ``generated/<build id>/`` holds every module's rendered source, its
artifact (for compiled tiers, a private copy: a loaded shared object must never be replaced or
shared by inode with another build) and ``manifest.json``. The build id hashes the backend and
every module's content key, so equal inputs give the same id and a rebuild is a lookup.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from codegen.compile import (
    CompiledModule,
    compile_modules,
    module_key,
    shared_utility,
    start_shared_utility,
)
from codegen.errors import CheckError, CompileError, RenderError, StorageError
from codegen.fsutil import atomic_write, staging
from codegen.state import RSIState, state_sha256
from codegen.toolchain import CompileSettings, content_key, toolchain_fingerprint

__all__ = [
    "BuildResult",
    "MANIFEST",
    "CACHE_DIR",
    "build_state",
    "read_manifest",
    "plan_build_id",
    "render_key",
]

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
    """Build ``state`` into ``generated_dir``; an existing build with the same id is reused.

    Fast path: the *render key* (templates, behaviour-relevant state, codegen and toolchain)
    maps to a build id already published, so an unchanged state costs no rendering at all.
    Otherwise the checks (libcst, mypy) run in a thread while the compilers run. A template,
    check or compiler error names the template line and state field of the failing line.
    """
    try:
        return _build_state(state, state_bytes, settings, generated_dir, template_dir)
    except OSError as exc:
        # A full disk or an unwritable dir. A build is published only by renaming a complete
        # staging dir, so nothing half-written is visible and the active build is untouched.
        where = f" ({exc.filename})" if exc.filename else ""
        raise StorageError(f"build failed: {exc.strerror or exc}{where}") from None


def _build_state(
    state: RSIState,
    state_bytes: bytes,
    settings: CompileSettings,
    generated_dir: Path,
    template_dir: Path | None,
) -> BuildResult:
    # Rendering and checking pull in jinja2, black, libcst and mypy: imported on first use,
    # so that commands that only read builds (`rsi status`) start quickly.
    from codegen.check import check_sources, lint_sources
    from codegen.diagnostics import with_origin
    from codegen.render import render_sources

    start = time.perf_counter()
    cache = generated_dir / CACHE_DIR
    plan = cache / "plans" / render_key(state, settings, template_dir)
    if plan.exists():
        build_id = plan.read_text().strip()
        final = generated_dir / build_id
        if (final / MANIFEST).exists():
            n = len(read_manifest(final)["modules"])  # type: ignore[arg-type]
            return BuildResult(build_id, final, settings.backend, _since(start), (), n, n, ())
    # The shared utility module depends on no source: it compiles while the sources render.
    shared = start_shared_utility(settings, cache)
    try:
        sources = render_sources(state, template_dir, cache / "black")
    except RenderError as exc:
        raise with_origin(exc, state, template_dir, None) from None
    build_id = plan_build_id(sources, settings)
    final = generated_dir / build_id
    try:
        with ThreadPoolExecutor(1) as checker:
            checking = checker.submit(check_sources, sources, cache / "checked")
            linting = checker.submit(lint_sources, sources, cache / "checked")
            compiled = (
                {}
                if (final / MANIFEST).exists()
                else compile_modules(sources, settings, cache, shared_started=shared is not None)
            )
            checked = tuple(checking.result())
            linting.result()
            if shared is not None:
                shared.result()
    except (CheckError, CompileError) as exc:
        raise with_origin(exc, state, template_dir, sources) from None
    if compiled:
        _publish_build(state, state_bytes, settings, generated_dir, sources, compiled, start)
    plan.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(plan, build_id.encode())
    built = tuple(m.name for m in compiled.values() if not m.cache_hit)
    return BuildResult(
        build_id,
        final,
        settings.backend,
        _since(start),
        built,
        len(sources) - len(built),
        len(sources),
        checked,
    )


def render_key(state: RSIState, settings: CompileSettings, template_dir: Path | None) -> str:
    """Everything a build's content depends on, hashed before rendering anything."""
    from codegen.render import templates_digest

    behaviour = state.model_dump(mode="json", exclude={"version", "benchmark"})
    return content_key(
        {
            "state": behaviour,
            "templates": templates_digest(template_dir),
            "codegen": _codegen_digest(),
            "toolchain": toolchain_fingerprint(settings),
        }
    )


def _publish_build(
    state: RSIState,
    state_bytes: bytes,
    settings: CompileSettings,
    generated_dir: Path,
    sources: dict[str, str],
    compiled: dict[str, CompiledModule],
    start: float,
) -> None:
    build_id = plan_build_id(sources, settings)
    modules: dict[str, object] = {}
    with staging(generated_dir) as work:
        for name, source in sources.items():
            (work / f"{name}.py").write_text(source)
            modules[name] = _install(compiled[name], source, work)
        shared = _shared_name(settings)
        if shared:
            lib = shared_utility(settings, generated_dir / CACHE_DIR)
            shutil.copyfile(lib, work / lib.name)
        manifest = {
            "build_id": build_id,
            "tier": settings.backend,
            "state_version": state.version,
            "state_sha256": state_sha256(state_bytes),
            "settings": {
                "cflags": list(settings.cflags),
                "cc": settings.cc,
                "native": settings.native,
            },
            "toolchain": toolchain_fingerprint(settings),
            "shared_module": shared,
            "modules": modules,
            "created_at": time.time(),
            "seconds": round(_since(start), 4),
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _fsync_tree(work)
        try:
            os.rename(work, generated_dir / build_id)
        except OSError:
            logger.info("build %s was published concurrently; reusing it", build_id)


def _since(start: float) -> float:
    return time.perf_counter() - start


@functools.lru_cache(maxsize=1)
def _codegen_digest() -> str:
    import jinja2
    from black import __version__ as black_version  # type: ignore[attr-defined]

    versions = f"{black_version} {jinja2.__version__}"
    digest = hashlib.sha256(versions.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


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
