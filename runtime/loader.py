"""Import a build directory's modules under names no other build uses.

A changed extension cannot be re-imported under its old name (the old shared object stays
mapped and CPython caches its init), so every build is imported as the package
``rsi_build_<id>``. A build loaded once in a process is kept and reused, never loaded
again, and so is a module whose artifact is byte-identical to one already imported.
The manifest is validated (:mod:`codegen.manifest`: module names from the templates' allowlist,
plain artifact names, ``build_id`` equal to the directory) and every artifact is verified
against its hash before anything is imported.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import threading
import types
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from codegen.errors import RSIError, StateError
from codegen.manifest import STATE_FILE, Manifest, ManifestError, verify_build
from codegen.state import RSIState, parse_state

__all__ = [
    "Artifact",
    "LoadError",
    "LoadedBuild",
    "exec_artifact",
    "import_package",
    "load_build",
    "load_shipped",
    "loaded_builds",
]

_loaded: dict[Path, LoadedBuild] = {}
# Modules already imported, by name, artifact sha256 and imported siblings' (import_package).
_by_artifact: dict[tuple[str, str, tuple[tuple[str, str], ...]], types.ModuleType] = {}
_guard = threading.RLock()  # import_package runs under load_build's hold of it


class LoadError(RSIError):
    """A build directory is missing, incomplete or does not match its manifest."""


@dataclass(frozen=True)
class LoadedBuild:
    """An imported build: its id, tier, modules (module name → module object) and the state
    it was rendered from (what the runtime plans from: :func:`codegen.plan.plan`)."""

    build_id: str
    tier: str
    path: Path
    manifest: Manifest
    modules: Mapping[str, types.ModuleType]
    state: RSIState

    def module(self, name: str) -> types.ModuleType:
        """The generated module ``name`` of this build."""
        try:
            return self.modules[name]
        except KeyError:
            raise LoadError(f"build {self.build_id} has no module {name!r}") from None


def load_build(build_dir: Path, *, template_dir: Path | None = None) -> LoadedBuild:
    """Import ``build_dir`` (once per process) and return it.

    Its modules must be ones the templates in ``template_dir`` (default: the shipped
    templates) can produce.
    """
    key = build_dir.resolve()
    with _guard:
        if key not in _loaded:
            _loaded[key] = _import(key, _allowed_modules(template_dir))
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


def _allowed_modules(template_dir: Path | None) -> Collection[str]:
    from codegen.render import module_names

    return module_names(template_dir)


def _import(build_dir: Path, allowed_modules: Collection[str]) -> LoadedBuild:
    try:
        manifest = verify_build(build_dir, allowed_modules)
    except ManifestError as exc:
        raise LoadError(str(exc)) from None
    build_id = manifest.build_id
    try:
        state = parse_state((build_dir / STATE_FILE).read_bytes(), f"{build_id}/{STATE_FILE}")
    except (OSError, StateError) as exc:
        raise LoadError(f"build {build_id}: its state cannot be read ({exc}); rebuild it") from None
    shared = manifest.shared_module
    if shared is not None and shared.name not in sys.modules:
        exec_artifact(shared.name, build_dir / shared.artifact)
    artifacts = {
        name: Artifact(build_dir / info.artifact, info.artifact_sha256, info.imports)
        for name, info in manifest.modules.items()
    }
    modules = import_package(f"rsi_build_{build_id}", artifacts)
    return LoadedBuild(build_id, manifest.tier, build_dir, manifest, modules, state)


@dataclass(frozen=True)
class Artifact:
    """One module to import: its file, that file's sha256, and the siblings it imports
    (transitively, :func:`codegen.check.import_closure`)."""

    path: Path
    sha256: str
    imports: tuple[str, ...] = ()


def import_package(
    package: str, artifacts: Mapping[str, Artifact]
) -> Mapping[str, types.ModuleType]:
    """Import every artifact as ``package.<name>``.

    A module reaches a sibling (``from . import reasoning``) through the package, which
    imports it from ``artifacts`` first: the package has no search path. A module whose
    artifact and imported siblings are byte-identical to ones already imported is that module
    object (a coefficient change imports one module, not all); a changed sibling (a template
    edit of a static module) imports its importers again, so they run the new code.
    """
    pkg = types.ModuleType(package)
    pkg.__path__ = []
    modules: dict[str, types.ModuleType] = {}

    def sibling(name: str) -> types.ModuleType:
        if name not in modules:
            if name not in artifacts:
                raise AttributeError(f"{package} has no module {name!r}")
            artifact = artifacts[name]
            deps = tuple((d, artifacts[d].sha256) for d in artifact.imports if d in artifacts)
            key = (name, artifact.sha256, deps)
            with _guard:
                if key not in _by_artifact:
                    _by_artifact[key] = exec_artifact(f"{package}.{name}", artifact.path)
                modules[name] = _by_artifact[key]
            setattr(pkg, name, modules[name])
        return modules[name]

    setattr(pkg, "__getattr__", sibling)  # noqa: B010 - module __getattr__ (PEP 562)
    sys.modules[package] = pkg
    for name in artifacts:
        sibling(name)
    return types.MappingProxyType(modules)


def exec_artifact(fullname: str, path: Path) -> types.ModuleType:
    """Import one artifact (``.py`` source or extension) as ``fullname``."""
    if path.suffix == ".py":
        # Interpreted tier: exec the source without writing __pycache__ into the build.
        module = types.ModuleType(fullname)
        module.__file__ = str(path)
        module.__package__ = fullname.rpartition(".")[0]  # for ``from . import sibling``
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
