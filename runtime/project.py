"""A project: one state file and, beside it, its builds (``generated/``) and history (``.rsi/``).

This is the in-process API behind the CLI. Every method that changes something holds the
project lock, so two processes never interleave a build, a commit or a rollback.
"""

from __future__ import annotations

import difflib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from codegen.build import CACHE_DIR, MANIFEST, BuildResult, build_state, read_manifest
from codegen.errors import LedgerError, StateError
from codegen.fsutil import STAGING_PREFIX, atomic_write, remove_stale_staging
from codegen.locking import project_lock
from codegen.state import RSIState, parse_state, read_state_file, state_sha256
from codegen.toolchain import CompileSettings
from runtime.ledger import Active, Ledger
from runtime.loader import LoadedBuild, LoadError, load_build, loaded_builds

__all__ = ["Project", "BuildReport", "StatusReport", "RollbackReport", "GcReport"]


@dataclass(frozen=True)
class BuildReport:
    """Result of ``rsi build``."""

    build_id: str
    seconds: float
    modules_compiled: int
    cache_hits: int
    modules: int
    tier: str
    state_version: int
    path: str


@dataclass(frozen=True)
class StatusReport:
    """Result of ``rsi status``."""

    active_build: str | None
    state_version: int | None
    tier: str | None
    state_file_version: int | None
    state_file_committed: bool
    history: list[int]


@dataclass(frozen=True)
class GcReport:
    """Result of ``rsi gc``."""

    removed_builds: list[str]
    bytes_freed: int


@dataclass(frozen=True)
class RollbackReport:
    """Result of ``rsi rollback``."""

    state_version: int
    build_id: str
    tier: str
    seconds: float
    compiled: bool


class Project:
    """The project whose state file is ``state_path``."""

    def __init__(
        self,
        state_path: Path,
        *,
        lock_timeout_s: float = 10.0,
        template_dir: Path | None = None,
    ) -> None:
        self.state_path = state_path.absolute()
        self.generated_dir = self.state_path.parent / "generated"
        self.ledger = Ledger(self.state_path.parent / ".rsi" / "ledger.sqlite3")
        self.lock_timeout_s = lock_timeout_s
        self.template_dir = template_dir

    def build(self, settings: CompileSettings) -> BuildReport:
        """Validate, build and commit the state file; make its build active."""
        with project_lock(self.state_path, timeout_s=self.lock_timeout_s):
            self._remove_leftovers()
            data = self._read_state_bytes()
            state = parse_state(data, self.state_path.name)
            self._check_version(state, data)
            result = build_state(state, data, settings, self.generated_dir, self.template_dir)
            self.ledger.commit(
                state.version,
                data,
                result.build_id,
                result.tier,
                limit=state.safety.history_limit,
            )
        return _report(result, state.version)

    def build_candidate(
        self, state: RSIState, data: bytes, settings: CompileSettings
    ) -> BuildResult:
        """Build ``state`` without committing or activating it (for gates and the RSI loop)."""
        return build_state(state, data, settings, self.generated_dir, self.template_dir)

    def status(self) -> StatusReport:
        """What the project serves and whether the state file matches it."""
        active = self.ledger.active()
        try:
            data = self._read_state_bytes()
            file_version: int | None = parse_state(data, self.state_path.name).version
            committed = any(
                self.ledger.state(v).sha256 == state_sha256(data) for v in self.ledger.versions()
            )
        except StateError:
            file_version, committed = None, False
        return StatusReport(
            active_build=active.build_id if active else None,
            state_version=active.version if active else None,
            tier=active.tier if active else None,
            state_file_version=file_version,
            state_file_committed=committed,
            history=self.ledger.versions(),
        )

    def rollback(self, to: int | None = None) -> RollbackReport:
        """Restore a committed state byte for byte and re-activate its cached build."""
        start = time.perf_counter()
        with project_lock(self.state_path, timeout_s=self.lock_timeout_s):
            self._remove_leftovers()
            active = self._active()
            target = self._rollback_target(active, to)
            record = self.ledger.state(target)
            compiled = False
            if not (self.generated_dir / record.build_id / MANIFEST).exists():
                # The build was deleted by hand: rebuild it from the recorded state.
                state = parse_state(record.data, f"history version {target}")
                settings = CompileSettings(backend=record.tier)  # type: ignore[arg-type]
                build_state(state, record.data, settings, self.generated_dir, self.template_dir)
                compiled = True
            atomic_write(self.state_path, record.data)
            self.ledger.activate(target, record.build_id, record.tier, kind="rollback")
        return RollbackReport(
            target, record.build_id, record.tier, time.perf_counter() - start, compiled
        )

    def load_active(self) -> LoadedBuild:
        """Import the active build."""
        return load_build(self.generated_dir / self._active().build_id)

    def gc(self) -> GcReport:
        """Delete builds no committed state or loaded build uses, and their cached modules."""
        with project_lock(self.state_path, timeout_s=self.lock_timeout_s):
            self._remove_leftovers()
            keep = self.ledger.builds_in_use() | {p.name for p in loaded_builds()}
            removed, freed = [], 0
            for path in sorted(self.generated_dir.iterdir()) if self.generated_dir.exists() else []:
                if (path / MANIFEST).exists() and path.name not in keep:
                    freed += _tree_bytes(path)
                    _discard(path)
                    removed.append(path.name)
            freed += self._prune_module_cache()
        return GcReport(removed, freed)

    def _prune_module_cache(self) -> int:
        keys: set[str] = set()
        for build in self.generated_dir.iterdir():
            if (build / MANIFEST).exists():
                modules = read_manifest(build)["modules"]
                assert isinstance(modules, dict)
                keys.update(str(info["key"]) for info in modules.values())
        freed = 0
        cache = self.generated_dir / CACHE_DIR
        for entry in cache.iterdir() if cache.exists() else []:
            # Module entries are named by a 64-hex key; memos and the shared module are not.
            if len(entry.name) == 64 and entry.name not in keys and entry.is_dir():
                freed += _tree_bytes(entry)
                _discard(entry)
        return freed

    def resolve_build(self, ref: str) -> Path:
        """A build directory from a build id (or unique prefix) or ``vN`` (state version N)."""
        if ref.startswith("v") and ref[1:].isdigit():
            ref = self.ledger.state(int(ref[1:])).build_id
        matches = (
            [p for p in self.generated_dir.glob(f"{ref}*") if (p / MANIFEST).exists()]
            if ref.isalnum()
            else []
        )
        if len(matches) != 1:
            found = "no build" if not matches else f"{len(matches)} builds"
            raise LoadError(f"{ref!r} names {found}; give a build id, a unique prefix or vN")
        return matches[0]

    def diff(self, a: str, b: str) -> str:
        """Unified diff of the generated sources of two builds."""
        dir_a, dir_b = self.resolve_build(a), self.resolve_build(b)
        mods_a = read_manifest(dir_a)["modules"]
        mods_b = read_manifest(dir_b)["modules"]
        assert isinstance(mods_a, dict) and isinstance(mods_b, dict)
        out: list[str] = []
        for name in sorted(set(mods_a) | set(mods_b)):
            left = _lines(dir_a / f"{name}.py")
            right = _lines(dir_b / f"{name}.py")
            out.extend(
                difflib.unified_diff(
                    left, right, f"{dir_a.name}/{name}.py", f"{dir_b.name}/{name}.py"
                )
            )
        return "".join(out)

    def _active(self) -> Active:
        active = self.ledger.active()
        if active is None:
            raise LedgerError(f"{self.state_path.name}: never built; run `rsi build` first")
        return active

    def _rollback_target(self, active: Active, to: int | None) -> int:
        versions = self.ledger.versions()
        if to is not None:
            if to not in versions:
                raise LedgerError(f"version {to} is not in the history {versions}")
            return to
        older = [v for v in versions if v < active.version]
        if not older:
            raise LedgerError(f"no committed version older than the active {active.version}")
        return older[-1]

    def _check_version(self, state: RSIState, data: bytes) -> None:
        versions = self.ledger.versions()
        if not versions:
            return
        newest = versions[-1]
        if state.version in versions:
            if self.ledger.state(state.version).sha256 != state_sha256(data):
                raise StateError(
                    f"{self.state_path.name}: version {state.version} is already committed "
                    f'with different content; set "version" to {newest + 1}'
                )
        elif state.version < newest:
            raise StateError(
                f"{self.state_path.name}: version {state.version} is older than the committed "
                f'{newest}; set "version" to {newest + 1}'
            )

    def _remove_leftovers(self) -> None:
        """Delete what a killed process left half-done (called under the project lock).

        Staging dirs of dead processes, and temp files of an interrupted atomic write of the
        state file (those are only written under this lock, so any present now is stale).
        """
        remove_stale_staging(self.generated_dir)
        remove_stale_staging(self.generated_dir / CACHE_DIR)
        for tmp in self.state_path.parent.glob(f".{self.state_path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)

    def _read_state_bytes(self) -> bytes:
        return read_state_file(self.state_path)


def _report(result: BuildResult, version: int) -> BuildReport:
    return BuildReport(
        build_id=result.build_id,
        seconds=round(result.seconds, 4),
        modules_compiled=len(result.compiled),
        cache_hits=result.cache_hits,
        modules=result.modules,
        tier=result.tier,
        state_version=version,
        path=str(result.path),
    )


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _discard(path: Path) -> None:
    """Delete a build or cache entry so that a kill midway never leaves half of one.

    The rename takes it out of sight in one step; a kill during the delete leaves a staging
    dir of a dead process, which the next command removes.
    """
    doomed = path.with_name(f"{STAGING_PREFIX}{os.getpid()}-gc-{path.name}")
    os.rename(path, doomed)
    shutil.rmtree(doomed)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True) if path.exists() else []
