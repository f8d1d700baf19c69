"""State → build directory: render, check, compile, assemble, publish atomically.

A build directory ``generated/<build id>/`` holds every module's rendered source, its
artifact (for compiled tiers, a private copy: a loaded shared object must never be replaced or
shared by inode with another build) and ``manifest.json``. The build id hashes the backend and
every module's content key, so equal inputs give the same id and a rebuild is a lookup.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import time
import types
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from codegen.compile import (
    CompiledModule,
    compile_modules,
    in_build_worker,
    module_key,
    shared_utility,
    start_shared_utility,
)
from codegen.errors import CheckError, CompileError, RenderError, StorageError
from codegen.fsutil import atomic_write, discard, staging
from codegen.manifest import (
    MANIFEST,
    STATE_FILE,
    Manifest,
    ManifestError,
    file_sha256,
    read_manifest,
    verify_build,
)
from codegen.state import RSIState, state_sha256
from codegen.toolchain import CompileSettings, content_key, toolchain_fingerprint

if TYPE_CHECKING:
    from codegen.specialize import Specialized

__all__ = [
    "BuildResult",
    "MANIFEST",
    "CACHE_DIR",
    "RENDER_MEMO_DIR",
    "behaviour",
    "build_in_worker",
    "build_job",
    "build_state",
    "read_manifest",
    "plan_build_id",
    "render_key",
    "verified_or_discarded",
]

logger = logging.getLogger(__name__)

_E = TypeVar("_E", bound=Exception)

CACHE_DIR = ".cache"
#: Black's memo of rendered sources, under :data:`CACHE_DIR`.
RENDER_MEMO_DIR = "black"
_BUILD_ID = re.compile(r"[0-9a-f]{16}")


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


def plan_build_id(state: RSIState, sources: dict[str, str], settings: CompileSettings) -> str:
    """The id a build of ``sources`` with ``settings`` gets, computed without compiling.

    It hashes the state's behaviour too: the runtime plans from the build's own state
    (:data:`~codegen.manifest.STATE_FILE`), so two states that render the same sources but
    plan differently (other routing words, say) must not share a build.
    """
    keys = {name: module_key(name, src, settings) for name, src in sorted(sources.items())}
    return content_key(
        {"backend": settings.backend, "modules": keys, "behaviour": behaviour(state)}
    )[:16]


def behaviour(state: RSIState) -> dict[str, object]:
    """What of ``state`` can change a build: all but its version and benchmark summary."""
    return state.model_dump(mode="json", exclude={"version", "benchmark"})


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
    Otherwise the guard runs first, then the checks (libcst, mypy) run in a thread while the
    compilers run. A template, check or compiler error names the template line and state
    field of the failing line. A build is reused only after its artifacts match its manifest;
    a corrupt one is discarded (with a one-line warning) and built again.
    """
    try:
        return _build_state(state, state_bytes, settings, generated_dir, template_dir)
    except OSError as exc:
        # A full disk or an unwritable dir. A build is published only by renaming a complete
        # staging dir, so nothing half-written is visible and the active build is untouched.
        where = f" ({exc.filename})" if exc.filename else ""
        raise StorageError(f"build failed: {exc.strerror or exc}{where}") from None


def build_in_worker(
    state: RSIState,
    state_bytes: bytes,
    settings: CompileSettings,
    generated_dir: Path,
    template_dir: Path | None = None,
) -> BuildResult:
    """:func:`build_state`, run in a warm build worker process (not reniced): the caller's
    interpreter only waits, so threads serving in it keep their time and the build does not
    wait for theirs (watch mode's pure tier, :func:`codegen.compile.in_build_worker`).

    The same result, and the same errors: a build error is raised as the
    :class:`~codegen.errors.RSIError` subclass the worker raised, with its message.
    """
    spec = {
        "state": state.model_dump_json(),
        "state_bytes": base64.b64encode(state_bytes).decode("ascii"),
        "generated_dir": str(generated_dir),
        "template_dir": None if template_dir is None else str(template_dir),
    }
    job: dict[str, object] = {"build": spec, "settings": asdict(settings)}
    raw: dict[str, Any] = in_build_worker(job, (generated_dir, generated_dir / CACHE_DIR))
    return BuildResult(
        **{
            **raw,
            "path": Path(raw["path"]),
            "compiled": tuple(raw["compiled"]),
            "type_checked": tuple(raw["type_checked"]),
        }
    )


def build_job(spec: dict[str, object], settings: CompileSettings) -> dict[str, object]:
    """The build worker's side of :func:`build_in_worker`: :func:`build_state` as JSON."""
    template_dir = spec["template_dir"]
    result = build_state(
        RSIState.model_validate_json(str(spec["state"])),
        base64.b64decode(str(spec["state_bytes"])),
        settings,
        Path(str(spec["generated_dir"])),
        None if template_dir is None else Path(str(template_dir)),
    )
    return {**asdict(result), "path": str(result.path)}


def _build_state(
    state: RSIState,
    state_bytes: bytes,
    settings: CompileSettings,
    generated_dir: Path,
    template_dir: Path | None,
) -> BuildResult:
    # Rendering and checking pull in jinja2, black, libcst and mypy: imported on first use,
    # so that commands that only read builds (`rsi status`) start quickly.
    from codegen.check import check_sources, guard_sources, lint_sources
    from codegen.diagnostics import with_origin
    from codegen.render import module_names, render_sources

    start = time.perf_counter()
    cache = generated_dir / CACHE_DIR
    plan = cache / "plans" / render_key(state, settings, template_dir)
    allowed = module_names(template_dir)
    planned = _planned_id(plan)
    if planned is not None:
        final = generated_dir / planned
        manifest = verified_or_discarded(final, allowed)
        if manifest is not None:
            n = len(manifest.modules)
            return BuildResult(planned, final, settings.backend, _since(start), (), n, n, ())
    # The shared utility module depends on no source: it compiles while the sources render.
    shared = start_shared_utility(settings, cache)
    try:
        sources = render_sources(state, template_dir, cache / RENDER_MEMO_DIR)
    except RenderError as exc:
        raise with_origin(exc, state, template_dir, None) from None
    specialized = _specialized(settings, state)
    copies = {copy.module: copy.source for copy in specialized}
    sources.update(copies)
    build_id = plan_build_id(state, sources, settings)
    final = generated_dir / build_id
    try:
        # Nothing a template produced reaches a compiler before the guard passed it.
        guard_sources(sources, cache / "checked")
        with ThreadPoolExecutor(1) as checker:
            checking = checker.submit(check_sources, sources, cache / "checked")
            # The lint holds rendered code to hand-written standards; a specialized copy is
            # the user's own code (an unused local there is theirs to keep).
            rendered = {n: src for n, src in sources.items() if n not in copies}
            linting = checker.submit(lint_sources, rendered, cache / "checked")
            compiled = (
                {}
                if verified_or_discarded(final, allowed) is not None
                else compile_modules(sources, settings, cache, shared_started=shared is not None)
            )
            checked = tuple(checking.result())
            linting.result()
            if shared is not None:
                shared.result()
    except (CheckError, CompileError) as exc:
        error = with_origin(exc, state, template_dir, sources)
        raise _with_user_lines(error, specialized) from None
    for name in sorted(n for n, m in compiled.items() if m.tier != settings.backend):
        problem = _pure_tier_problem(name, sources[name])
        if problem:
            first = compiled[name].attempts[0].diagnostic
            error = CompileError(f"{first}; its pure-Python fallback fails: {problem}")
            error = with_origin(error, state, template_dir, sources)
            raise _with_user_lines(error, specialized) from None
    if compiled:
        origins = _origins(compiled, state, template_dir, specialized, sources)
        published = _Published(sources, compiled, specialized, origins)
        _publish_build(state, state_bytes, settings, generated_dir, published, start)
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


def verified_or_discarded(build_dir: Path, allowed_modules: Collection[str]) -> Manifest | None:
    """The manifest of ``build_dir`` if it is a complete build whose artifacts match it.

    None when there is no build there. A corrupt build (bad manifest, altered or missing
    artifact) is moved aside and deleted, with a one-line warning, so that it is built again.
    """
    if not build_dir.is_dir():
        return None
    try:
        return verify_build(build_dir, allowed_modules)
    except ManifestError as exc:
        logger.warning("corrupt build discarded, it is built again: %s", exc)
        try:
            discard(build_dir)
        except FileNotFoundError:
            pass  # another process discarded it first
        return None


def render_key(state: RSIState, settings: CompileSettings, template_dir: Path | None) -> str:
    """Everything a build's content depends on, hashed before rendering anything."""
    from codegen.render import templates_digest

    key: dict[str, object] = {
        "state": behaviour(state),
        "templates": templates_digest(template_dir),
        "codegen": _codegen_digest(),
        "toolchain": toolchain_fingerprint(settings),
    }
    if settings.specialize:
        from codegen.specialize import target_digest

        key["specialize"] = target_digest(settings.specialize)
    return content_key(key)


@dataclass(frozen=True)
class _Published:
    """What a build directory is assembled from."""

    sources: dict[str, str]
    compiled: dict[str, CompiledModule]
    specialized: tuple[Specialized, ...]
    #: Per module, the template line and state field of each failed attempt's diagnostic.
    origins: dict[str, tuple[str, ...]]


#: What a generated module's import or ``rsi_selftest()`` may raise when its template or
#: state is wrong (a module that failed to compile is served only if it raises none).
_SELFTEST_ERRORS = (
    ArithmeticError,
    AssertionError,
    AttributeError,
    ImportError,
    LookupError,
    NameError,
    TypeError,
    ValueError,
)


_STATIC_PACKAGE = "codegen.templates"


def _pure_tier_problem(name: str, source: str) -> str:
    """Why the pure-Python tier of a module that failed to compile cannot serve, or ``""``.

    The checks already passed on this very source; the module is imported in a throwaway
    namespace (never ``sys.modules``) and its ``rsi_selftest()``, if any, must run.
    """
    module = types.ModuleType(f"rsi_fallback_{name}")
    # ``from . import reasoning`` reaches the static modules in their package.
    module.__package__ = _STATIC_PACKAGE
    try:
        exec(compile(source, f"{name}.py", "exec"), module.__dict__)  # noqa: S102
        selftest = getattr(module, "rsi_selftest", None)
        if callable(selftest):
            selftest()
    except _SELFTEST_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


def _origins(
    compiled: dict[str, CompiledModule],
    state: RSIState,
    template_dir: Path | None,
    specialized: Sequence[Specialized],
    sources: dict[str, str],
) -> dict[str, tuple[str, ...]]:
    """Per module, where each failed attempt's diagnostic came from: the template line and
    state field, or for a specialized copy the user's line."""
    from codegen.diagnostics import origin_of_message

    found: dict[str, tuple[str, ...]] = {}
    for name, module in compiled.items():
        if any(a.diagnostic for a in module.attempts):
            origins = (
                (origin_of_message(a.diagnostic, state, template_dir, sources), a.diagnostic)
                for a in module.attempts
            )
            found[name] = tuple(
                o.describe() if o else _user_line(diagnostic, specialized)
                for o, diagnostic in origins
            )
    return found


def _specialized(settings: CompileSettings, state: RSIState) -> tuple[Specialized, ...]:
    """The specialized copy of each of ``settings.specialize``'s targets."""
    if not settings.specialize:
        return ()  # libcst's codemods, about a third of a fresh `rsi build`: only when asked
    from codegen.specialize import specialize_target

    return tuple(specialize_target(target, state) for target in settings.specialize)


def _with_user_lines(exc: _E, specialized: Sequence[Specialized]) -> _E:
    """``exc`` naming the user's line behind each line of a specialized copy it names."""
    if not specialized:
        return exc
    from codegen.specialize import with_user_lines

    return with_user_lines(exc, specialized)


def _user_line(diagnostic: str, specialized: Sequence[Specialized]) -> str:
    """``from /src/m.py:40`` when ``diagnostic`` names a line of a specialized copy, or ``""``."""
    if not specialized:
        return ""
    from codegen.specialize import first_user_line

    where = first_user_line(diagnostic, specialized)
    return f"from {where}" if where else ""


def _publish_build(
    state: RSIState,
    state_bytes: bytes,
    settings: CompileSettings,
    generated_dir: Path,
    published: _Published,
    start: float,
) -> None:
    from codegen.check import import_closure

    sources, compiled = published.sources, published.compiled
    build_id = plan_build_id(state, sources, settings)
    modules: dict[str, dict[str, object]] = {}
    with staging(generated_dir) as work:
        for name, source in sources.items():
            (work / f"{name}.py").write_text(source)
            modules[name] = _install(compiled[name], source, work, published.origins.get(name))
            modules[name]["imports"] = import_closure(name, sources)[1:]
        shared: dict[str, str] | None = None
        if _shared_name(settings):
            lib = shared_utility(settings, generated_dir / CACHE_DIR)
            shutil.copyfile(lib, work / lib.name)
            shared = {
                "name": settings.shared_module_name,
                "artifact": lib.name,
                "artifact_sha256": file_sha256(work / lib.name),
            }
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
            "degraded": sorted(n for n, m in compiled.items() if m.tier != settings.backend),
            "specialized": {
                copy.target: {
                    "module": copy.module,
                    "function": copy.function,
                    "sections": list(copy.sections),
                    "state_hash": copy.state_hash,
                    "source_file": copy.source_file,
                    "lines": list(copy.lines),
                    "source_sha256": copy.source_sha256,
                }
                for copy in published.specialized
            },
            "created_at": time.time(),
            "seconds": round(_since(start), 4),
        }
        (work / STATE_FILE).write_bytes(state_bytes)
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _fsync_tree(work)
        try:
            os.rename(work, generated_dir / build_id)
        except OSError:
            logger.info("build %s was published concurrently; reusing it", build_id)


def _planned_id(plan: Path) -> str | None:
    """The build id a render-key plan names, or None (no plan, or an unreadable one)."""
    try:
        build_id = plan.read_bytes().decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return build_id if _BUILD_ID.fullmatch(build_id) else None


def _since(start: float) -> float:
    return time.perf_counter() - start


@functools.lru_cache(maxsize=1)
def _codegen_digest() -> str:
    # Versions from the installed metadata: importing black here raced a render importing it
    # in another thread (watch mode), and costs a build that renders nothing.
    versions = f"{importlib.metadata.version('black')} {importlib.metadata.version('jinja2')}"
    digest = hashlib.sha256(versions.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _shared_name(settings: CompileSettings) -> str | None:
    if settings.backend == "cython" and settings.shared_utility:
        return settings.shared_module_name
    return None


def _install(
    module: CompiledModule, source: str, work: Path, origins: tuple[str, ...] | None
) -> dict[str, object]:
    artifact = work / module.artifact.name
    if module.artifact.suffix != ".py":
        shutil.copyfile(module.artifact, artifact)  # a private inode per build, never a link
    digest = file_sha256(artifact)
    if digest != module.sha256:
        # The cache entry changed between its check and the copy: never publish that.
        raise StorageError(f"cache entry {module.key} changed while it was copied; build again")
    attempts = [asdict(a) for a in module.attempts]
    for attempt, origin in zip(attempts, origins or (), strict=False):
        attempt["origin"] = origin
    return {
        "key": module.key,
        "artifact": artifact.name,
        "artifact_sha256": digest,
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "seconds": round(module.seconds, 4),
        "cache_hit": module.cache_hit,
        "tier": module.tier,
        "attempts": attempts,
    }


def _fsync_tree(path: Path) -> None:
    for item in path.iterdir():
        fd = os.open(item, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
