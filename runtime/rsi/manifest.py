"""Run manifests: what a loop run was given, what it decided, and where it stands.

One JSON file per run under ``.rsi/<state file name>/runs/``, rewritten atomically after
every decision: the config, seed, data fingerprint, git revision, package versions, the
decisions and the iteration records. A killed run resumes from it (``pending`` names a
candidate whose promotion had started; the ledger says whether it was decided).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from codegen.errors import RSIError
from codegen.fsutil import atomic_write
from runtime.ledger import ledger_path

__all__ = [
    "PACKAGES",
    "ManifestError",
    "RunManifest",
    "runs_dir",
    "run_id",
    "load_manifest",
    "save_manifest",
    "latest_manifest",
    "git_revision",
    "package_versions",
]

logger = logging.getLogger(__name__)

#: Packages whose versions can change a run's builds or numbers.
PACKAGES = ("numpy", "scipy", "cython", "jinja2", "black", "libcst", "mypy", "pydantic", "ray")


class ManifestError(RSIError):
    """A run manifest that cannot be read (truncated, overwritten, edited)."""


@dataclass(frozen=True)
class RunManifest:
    """A loop run; ``iterations`` and ``decisions`` are JSON-shaped records."""

    run_id: str
    config: Mapping[str, Any]
    seed: int
    data_fingerprint: str
    git_revision: str
    packages: Mapping[str, str]
    started_at: float
    status: str = "running"  # running | finished
    stop_reason: str = ""
    elapsed_s: float = 0.0
    iterations: tuple[Mapping[str, Any], ...] = ()
    decisions: tuple[Mapping[str, Any], ...] = ()
    pending: Mapping[str, Any] | None = None
    tried: tuple[str, ...] = field(default=())  # sha256 of every gated candidate's content
    #: Seconds spent outside iterations, summed over the processes of a resumed run:
    #: ``start`` (building the --from state), ``evidence`` (the train evidence).
    seconds: Mapping[str, float] = field(default_factory=dict)


def runs_dir(state_path: Path) -> Path:
    """Where a project's run manifests live."""
    return ledger_path(state_path.absolute()).parent / "runs"


def run_id(config: Mapping[str, Any]) -> str:
    """A run's id: the hash of its config (so the same command resumes the same run)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def load_manifest(path: Path) -> RunManifest:
    """Read a manifest written by :func:`save_manifest`; :class:`ManifestError` names a
    damaged one and the way out."""
    try:
        raw = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _damaged(path, "not JSON") from None
    problem = _shape_problem(raw)
    if problem:
        raise _damaged(path, problem)
    raw["iterations"] = tuple(raw["iterations"])
    raw["decisions"] = tuple(raw["decisions"])
    raw["tried"] = tuple(raw["tried"])
    return RunManifest(**raw)


def save_manifest(state_path: Path, manifest: RunManifest) -> Path:
    """Write ``manifest`` atomically; return its path."""
    path = runs_dir(state_path) / f"{manifest.run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "run_id": manifest.run_id,
        "config": dict(manifest.config),
        "seed": manifest.seed,
        "data_fingerprint": manifest.data_fingerprint,
        "git_revision": manifest.git_revision,
        "packages": dict(manifest.packages),
        "started_at": manifest.started_at,
        "status": manifest.status,
        "stop_reason": manifest.stop_reason,
        "elapsed_s": manifest.elapsed_s,
        "iterations": list(manifest.iterations),
        "decisions": list(manifest.decisions),
        "pending": manifest.pending,
        "tried": list(manifest.tried),
        "seconds": dict(manifest.seconds),
    }
    atomic_write(path, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())
    return path


def latest_manifest(state_path: Path) -> RunManifest | None:
    """The most recently started run of the project, if any."""
    found = [load_manifest(p) for p in sorted(runs_dir(state_path).glob("*.json"))]
    return max(found, key=lambda m: m.started_at) if found else None


def git_revision(where: Path) -> str:
    """``git rev-parse HEAD`` of the checkout holding ``where`` (plus ``-dirty``), or ''."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return f"{rev}-dirty" if dirty else rev


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`PACKAGES` and the Python version."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


#: The JSON type of each field :func:`save_manifest` writes.
_FIELD_TYPES: Mapping[str, type | tuple[type, ...]] = {
    "run_id": str,
    "config": dict,
    "seed": int,
    "data_fingerprint": str,
    "git_revision": str,
    "packages": dict,
    "started_at": (int, float),
    "status": str,
    "stop_reason": str,
    "elapsed_s": (int, float),
    "iterations": list,
    "decisions": list,
    "pending": (dict, type(None)),
    "tried": list,
    "seconds": dict,
}
#: The type of the items of each list field.
_ITEM_TYPES: Mapping[str, type] = {"iterations": dict, "decisions": dict, "tried": str}


def _shape_problem(raw: object) -> str:
    """What is wrong with the shape of a parsed manifest ('' when nothing is)."""
    if not isinstance(raw, dict):
        return f"a JSON {type(raw).__name__}, not an object"
    missing = sorted(set(_FIELD_TYPES) - set(raw))
    if missing:
        return f"no {', '.join(missing)}"
    unknown = sorted(set(raw) - {f.name for f in fields(RunManifest)})
    if unknown:
        return f"unknown field {unknown[0]}"
    for name, kind in _FIELD_TYPES.items():
        if not isinstance(raw[name], kind) or isinstance(raw[name], bool):
            return f"{name} is a {type(raw[name]).__name__}"
    for name, kind in _ITEM_TYPES.items():
        if not all(isinstance(item, kind) for item in raw[name]):
            return f"an item of {name} is not a {kind.__name__}"
    return ""


def _damaged(path: Path, why: str) -> ManifestError:
    return ManifestError(
        f"{path}: damaged run manifest ({why}); move it aside and run again "
        "(that run starts afresh; its decisions stay in the ledger: rsi history)"
    )
