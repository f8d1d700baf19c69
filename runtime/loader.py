"""Import a build directory's modules under names no other build uses.

A changed extension cannot be re-imported under its old name (the old shared object stays
mapped and CPython caches its init), so every build is imported as the package
``rsi_build_<id>``. A build loaded once in a process is kept and reused, never loaded
again, and so is a module whose artifact is byte-identical to one already imported.
Artifacts are verified against the manifest's hashes before anything is imported.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import sys
import threading
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codegen.errors import RSIError

__all__ = [
    "LoadError",
    "LoadedBuild",
    "exec_artifact",
    "load_build",
    "load_shipped",
    "loaded_builds",
]

_loaded: dict[Path, LoadedBuild] = {}
# A module whose artifact is byte-identical to one already imported is the same code: the
# new build reuses that module object (a coefficient change imports one module, not all).
_by_artifact: dict[tuple[str, str], types.ModuleType] = {}
_guard = threading.Lock()


class LoadError(RSIError):
    """A build directory is missing, incomplete or does not match its manifest."""


@dataclass(frozen=True)
class LoadedBuild:
    """An imported build: its id, tier and modules (module name → module object)."""

    build_id: str
    tier: str
    path: Path
    manifest: Mapping[str, Any]
    modules: Mapping[str, types.ModuleType]

    def module(self, name: str) -> types.ModuleType:
        """The generated module ``name`` of this build."""
        try:
            return self.modules[name]
        except KeyError:
            raise LoadError(f"build {self.build_id} has no module {name!r}") from None


def load_build(build_dir: Path) -> LoadedBuild:
    """Import ``build_dir`` (once per process) and return it."""
    key = build_dir.resolve()
    with _guard:
        if key not in _loaded:
            _loaded[key] = _import(key)
        return _loaded[key]


def loaded_builds() -> list[Path]:
    """Build directories this process has imported (they must never be deleted under it)."""
    with _guard:
        return list(_loaded)


def load_shipped() -> LoadedBuild:
    """The build that was compiled into the installed wheel (``generated/shipped.json``)."""
    import generated

    root = Path(generated.__file__).parent
    pointer = root / "shipped.json"
    if not pointer.exists():
        raise LoadError("this installation carries no shipped build (generated/shipped.json)")
    build_id = json.loads(pointer.read_text())["build_id"]
    return load_build(root / build_id)


def _import(build_dir: Path) -> LoadedBuild:
    manifest = _verified_manifest(build_dir)
    build_id = str(manifest["build_id"])
    tier = str(manifest["tier"])
    shared = manifest.get("shared_module")
    if shared and shared not in sys.modules:
        artifacts = sorted(build_dir.glob(f"{shared}.*"))
        if not artifacts:
            raise LoadError(f"build {build_id}: shared utility module {shared} is missing")
        exec_artifact(shared, artifacts[0])
    package = f"rsi_build_{build_id}"
    pkg = types.ModuleType(package)
    pkg.__path__ = [str(build_dir)]
    sys.modules[package] = pkg
    modules: dict[str, types.ModuleType] = {}
    for name, info in manifest["modules"].items():
        digest = (name, info["artifact_sha256"])
        if digest not in _by_artifact:
            _by_artifact[digest] = exec_artifact(f"{package}.{name}", build_dir / info["artifact"])
        modules[name] = _by_artifact[digest]
        setattr(pkg, name, modules[name])
    return LoadedBuild(build_id, tier, build_dir, manifest, types.MappingProxyType(modules))


def _verified_manifest(build_dir: Path) -> dict[str, Any]:
    path = build_dir / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise LoadError(f"{build_dir.name}: not a build (no manifest.json)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise LoadError(f"{build_dir.name}: unreadable manifest: {exc}") from None
    for name, info in manifest.get("modules", {}).items():
        artifact = build_dir / info["artifact"]
        try:
            digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
        except OSError:
            raise LoadError(f"{build_dir.name}: module {name} artifact is missing") from None
        if digest != info["artifact_sha256"]:
            raise LoadError(f"{build_dir.name}: module {name} does not match its manifest")
    return manifest


def exec_artifact(fullname: str, path: Path) -> types.ModuleType:
    """Import one artifact (``.py`` source or extension) as ``fullname``."""
    if path.suffix == ".py":
        # Interpreted tier: exec the source without writing __pycache__ into the build.
        module = types.ModuleType(fullname)
        module.__file__ = str(path)
        sys.modules[fullname] = module
        exec(compile(path.read_bytes(), str(path), "exec"), module.__dict__)  # noqa: S102
        return module
    loader = importlib.machinery.ExtensionFileLoader(fullname, str(path))
    spec = importlib.util.spec_from_file_location(fullname, path, loader=loader)
    if spec is None:
        raise LoadError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[fullname] = module
    loader.exec_module(module)
    return module
