"""The manifest of a build directory: a typed, strict schema, and the check of its artifacts.

A manifest is input like the state file: a build dir may be truncated by a full disk, edited
by hand or planted. It is validated as strictly as the state (required keys and types, no
unknown keys), and what it names is constrained: ``build_id`` is the directory's name, module
names come from an allowlist (the modules the templates can produce), artifacts are plain file
names inside the build dir named after their module. :func:`verify_build` also hashes every
artifact against the manifest: a few files, read once, before a build is reused or activated.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from codegen.errors import RSIError
from codegen.toolchain import Backend

__all__ = [
    "MANIFEST",
    "STATE_FILE",
    "Manifest",
    "ManifestError",
    "ModuleEntry",
    "SharedEntry",
    "file_sha256",
    "read_manifest",
    "verify_build",
]

MANIFEST = "manifest.json"
#: The bytes of the state a build was rendered from: the runtime plans from it.
STATE_FILE = "state.json"

Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_IDENT = r"^[A-Za-z][A-Za-z0-9_]*$"
#: A specialized copy's module: ``opt_<module path>__<function>`` (codegen.specialize).
_SPECIALIZED = r"^opt_[A-Za-z0-9_]+__[A-Za-z_][A-Za-z0-9_]*$"


class ManifestError(RSIError):
    """A build directory's manifest is unreadable, invalid, or does not match its files."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AttemptEntry(_Strict):
    """One try at compiling a module (compile feedback), with the diagnostic's origin."""

    backend: Backend
    flags: tuple[str, ...]
    outcome: Literal["compiled", "failed", "fallback"]
    diagnostic: str = ""
    kind: str = ""
    origin: str = ""


class ModuleEntry(_Strict):
    """One generated module of a build (``tier`` python when it fell back after failures)."""

    key: Hex64
    artifact: str
    artifact_sha256: Hex64
    source_sha256: Hex64
    seconds: float
    cache_hit: bool
    tier: Backend | None = None
    attempts: tuple[AttemptEntry, ...] = ()
    #: The sibling modules it imports, transitively (its code runs theirs).
    imports: tuple[Annotated[str, Field(pattern=_IDENT)], ...] = ()


class SpecializedEntry(_Strict):
    """A specialized copy of a user's function (``@rsi_optimized``) carried by the build."""

    module: Annotated[str, Field(pattern=_SPECIALIZED)]
    function: Annotated[str, Field(pattern=_IDENT)]
    sections: tuple[str, ...]
    state_hash: Hex64
    #: The user's source file, and its line behind each line of the copy (0: none).
    source_file: str = ""
    lines: tuple[Annotated[int, Field(ge=0)], ...] = ()
    #: sha256 of the user's source file the copy was made from ("" in older builds).
    source_sha256: str = ""


class SharedEntry(_Strict):
    """The Cython shared utility module a compiled build links against."""

    name: Annotated[str, Field(pattern=r"^_rsi_cyutility_[0-9a-f]{12}$")]
    artifact: str
    artifact_sha256: Hex64


class BuildSettingsEntry(_Strict):
    """The compile settings a build was made with."""

    cflags: tuple[str, ...]
    cc: str
    native: bool


class Manifest(_Strict):
    """``manifest.json`` of a published build."""

    build_id: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
    tier: Backend
    state_version: Annotated[int, Field(ge=0)]
    state_sha256: Hex64
    settings: BuildSettingsEntry
    toolchain: dict[str, str]
    shared_module: SharedEntry | None
    modules: dict[Annotated[str, Field(pattern=_IDENT)], ModuleEntry]
    degraded: tuple[str, ...] = ()
    specialized: dict[str, SpecializedEntry] = {}
    created_at: float
    seconds: float


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (hex)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(build_dir: Path, allowed_modules: Collection[str] | None) -> Manifest:
    """The validated manifest of ``build_dir``; :class:`ManifestError` in one line if not.

    ``allowed_modules=None`` skips the module allowlist: only for reading a manifest to show
    it (``rsi status``), never before importing anything.
    """
    where = f"{build_dir.name}/{MANIFEST}"
    try:
        text = (build_dir / MANIFEST).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{build_dir.name}: not a build (no {MANIFEST})") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{where}: not UTF-8 (byte {exc.start}); rebuild it") from None
    except OSError as exc:
        raise ManifestError(f"{where}: unreadable: {exc.strerror}") from None
    try:
        manifest = Manifest.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise ManifestError(f"{where}: {field}: {first['msg']}; rebuild it") from None
    if manifest.build_id != build_dir.name:
        raise ManifestError(
            f"{where}: build_id {manifest.build_id!r} is not the directory's name; rebuild it"
        )
    copies = {entry.module for entry in manifest.specialized.values()}
    for name, entry in manifest.modules.items():
        if allowed_modules is not None and name not in allowed_modules and name not in copies:
            raise ManifestError(
                f"{where}: module {name!r} is not one the templates produce "
                f"({', '.join(sorted(allowed_modules))})"
            )
        _check_artifact_name(where, name, entry.artifact)
    for name in (*manifest.degraded, *copies):
        if name not in manifest.modules:
            raise ManifestError(f"{where}: {name!r} is not a module of the build; rebuild it")
    if manifest.shared_module is not None:
        shared = manifest.shared_module
        _check_artifact_name(where, shared.name, shared.artifact)
    return manifest


def verify_build(build_dir: Path, allowed_modules: Collection[str]) -> Manifest:
    """The manifest of ``build_dir`` after checking the sha256 of every file it names (each
    module's artifact and rendered source, the shared utility module, the state it was built
    from)."""
    manifest = read_manifest(build_dir, allowed_modules)
    entries: list[tuple[str, str, str]] = []
    for name, e in manifest.modules.items():
        entries.append((f"module {name}", e.artifact, e.artifact_sha256))
        if e.artifact != f"{name}.py":  # the rendered source, unless it is the artifact
            entries.append((f"module {name}", f"{name}.py", e.source_sha256))
    if manifest.shared_module is not None:
        shared = manifest.shared_module
        entries.append((f"module {shared.name}", shared.artifact, shared.artifact_sha256))
    entries.append(("the build", STATE_FILE, manifest.state_sha256))
    for name, artifact, digest in entries:
        try:
            actual = file_sha256(build_dir / artifact)
        except OSError:
            raise ManifestError(f"{build_dir.name}: {artifact} of {name} is missing") from None
        if actual != digest:
            raise ManifestError(
                f"{build_dir.name}: {artifact} of {name} does not match its manifest"
            )
    return manifest


_SUFFIXES = (".py", *importlib.machinery.EXTENSION_SUFFIXES)


def _check_artifact_name(where: str, name: str, artifact: str) -> None:
    """An artifact is ``<module><suffix>``: a plain file name inside the build dir."""
    if not any(artifact == f"{name}{suffix}" for suffix in _SUFFIXES):
        raise ManifestError(
            f"{where}: artifact {artifact!r} of module {name!r} is not a plain file name "
            f"{name}<.py or extension suffix>"
        )
