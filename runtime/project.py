"""A project: one state file and, beside it, its builds (``generated/``) and history (``.rsi/``).

This is the in-process API behind the CLI. Every method that changes something holds the
project lock, so two processes never interleave a build, a commit or a rollback.

Each state file is its own project: its history is ``.rsi/<state file name>/`` and its lock
``<state file>.lock``. Builds in ``generated/`` are content-addressed and shared by the state
files of a directory, so ``gc`` keeps every build any of their histories uses.
"""

from __future__ import annotations

import difflib
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from codegen.build import (
    CACHE_DIR,
    MANIFEST,
    BuildResult,
    build_state,
    read_manifest,
    verified_or_discarded,
)
from codegen.errors import LedgerError, StateError
from codegen.fsutil import atomic_write, discard, remove_stale_staging
from codegen.locking import builds_lock, check_state_path, project_lock, rejected_path
from codegen.manifest import ManifestError
from codegen.state import RSIState, parse_state, read_state_file, state_sha256
from codegen.toolchain import CompileSettings
from runtime.ledger import Active, Ledger, check_version_jump, ledger_path, ledger_paths
from runtime.loader import LoadedBuild, LoadError, load_build, loaded_builds
from runtime.pins import pin, pinned_builds
from runtime.status import StatusReport, status_of

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
    version_builds: list[str]  # every build recorded for this version, oldest first
    new_build_of_committed: bool  # a committed version got another build (visible, not swapped)
    specialized: list[str]  # user functions (module:function) the build carries copies of


@dataclass(frozen=True)
class GcReport:
    """Result of ``rsi gc``: ``bad_builds`` are kept, each with why it is bad (one line)."""

    removed_builds: list[str]
    bytes_freed: int
    bad_builds: list[str]


@dataclass(frozen=True)
class RollbackReport:
    """Result of ``rsi rollback``."""

    state_version: int
    build_id: str
    tier: str
    seconds: float
    compiled: bool
    new_build: bool  # the recorded build was gone and today's templates built another
    kept_uncommitted: str | None  # where the state file's uncommitted content was kept


class Project:
    """The project whose state file is ``state_path``."""

    def __init__(
        self,
        state_path: Path,
        *,
        lock_timeout_s: float = 10.0,
        template_dir: Path | None = None,
    ) -> None:
        self.state_path = check_state_path(state_path, must_exist=False)
        self.generated_dir = self.state_path.parent / "generated"
        self.ledger = Ledger(ledger_path(self.state_path))
        self.lock_timeout_s = lock_timeout_s
        self.template_dir = template_dir

    def build(self, settings: CompileSettings) -> BuildReport:
        """Validate, build and commit the state file; make its build active.

        Rebuilding a committed version (same bytes) into a different build, because the
        templates or the toolchain changed, records a new build of that version.
        """
        check_state_path(self.state_path, must_exist=True)
        with (
            project_lock(self.state_path, timeout_s=self.lock_timeout_s),
            builds_lock(self.state_path, exclusive=False, timeout_s=self.lock_timeout_s),
        ):
            self._remove_leftovers()
            # A save that watch mode committed under another version number is that version.
            data = self.ledger.resolve(self._read_state_bytes())
            state = parse_state(data, self.state_path.name)
            self._check_version(state, data)
            result = build_state(state, data, settings, self.generated_dir, self.template_dir)
            added = self.ledger.commit(
                state.version,
                data,
                result.build_id,
                result.tier,
                limit=state.safety.history_limit,
                specialized=settings.specialize,
            )
            builds = [b.build_id for b in self.ledger.builds(state.version)]
        new = added and len(builds) > 1
        return _report(result, state.version, builds, new, list(settings.specialize))

    def build_candidate(
        self, state: RSIState, data: bytes, settings: CompileSettings
    ) -> BuildResult:
        """Build ``state`` without committing or activating it (for gates and the RSI loop)."""
        return build_state(state, data, settings, self.generated_dir, self.template_dir)

    @contextmanager
    def pinned_candidate(
        self, state: RSIState, data: bytes, settings: CompileSettings
    ) -> Iterator[BuildResult]:
        """:meth:`build_candidate`, with the build pinned until the block ends: ``gc`` in
        any process keeps it while it is judged and committed (:mod:`runtime.pins`)."""
        with ExitStack() as pinned:
            with builds_lock(self.state_path, exclusive=False, timeout_s=self.lock_timeout_s):
                result = self.build_candidate(state, data, settings)
                pinned.enter_context(pin(self.state_path, result.build_id))
            yield result

    def status(self) -> StatusReport:
        """What the project serves and whether the state file matches it
        (:func:`runtime.status.status_of`)."""
        return status_of(self.state_path, self.ledger)

    def rollback(self, to: int | None = None) -> RollbackReport:
        """Restore a committed state byte for byte and re-activate its recorded build.

        With no ``to``, the target is what was live before the current activation
        (:meth:`Ledger.rollback_target`), with the very build that was live then; ``to``
        restores version ``to`` with its newest recorded build. The record must match its
        stored sha256 and the state schema. Content of the state file that is not committed
        is kept beside it (``<stem>.uncommitted-<UTC time>.json``), never overwritten.
        """
        start = time.perf_counter()
        check_state_path(self.state_path, must_exist=False)
        with (
            project_lock(self.state_path, timeout_s=self.lock_timeout_s),
            builds_lock(self.state_path, exclusive=False, timeout_s=self.lock_timeout_s),
        ):
            self._remove_leftovers()
            active = self._active()
            version, build_id, tier = self._rollback_target(active, to)
            record = self.ledger.state(version)  # checks the bytes against the stored hash
            state = self._recorded_state(record.data, version)
            compiled = new_build = False
            if not self._intact(build_id):
                # Deleted or corrupt: rebuild it from the recorded state. Changed templates
                # give another build, which is recorded as a new build of the version.
                settings = CompileSettings(backend=tier)  # type: ignore[arg-type]
                result = build_state(
                    state, record.data, settings, self.generated_dir, self.template_dir
                )
                compiled, new_build = True, result.build_id != build_id
                build_id, tier = result.build_id, result.tier
            kept = self._keep_uncommitted()
            atomic_write(self.state_path, record.data)
            kind = "rollback" if to is None else "restore"
            self.ledger.activate(version, build_id, tier, kind=kind)
        return RollbackReport(
            version,
            build_id,
            tier,
            time.perf_counter() - start,
            compiled,
            new_build,
            str(kept) if kept else None,
        )

    def load_active(self) -> LoadedBuild:
        """Import the active build."""
        return load_build(
            self.generated_dir / self._active().build_id, template_dir=self.template_dir
        )

    def gc(self) -> GcReport:
        """Delete builds no committed state or loaded build uses, and their cached modules.

        A build whose manifest is invalid is skipped and reported, never deleted by guess.
        """
        check_state_path(self.state_path, must_exist=False)
        with (
            project_lock(self.state_path, timeout_s=self.lock_timeout_s),
            builds_lock(self.state_path, exclusive=True, timeout_s=self.lock_timeout_s),
        ):
            self._remove_leftovers()
            keep = {p.name for p in loaded_builds()} | pinned_builds(self.state_path)
            for path in {self.ledger.path, *ledger_paths(self.state_path.parent)}:
                # Every state file of this directory shares generated/: keep what any uses.
                keep |= Ledger(path).builds_in_use()
            removed, bad, freed = [], [], 0
            keys: set[str] = set()
            for path in sorted(self.generated_dir.iterdir()) if self.generated_dir.exists() else []:
                if not (path / MANIFEST).exists():
                    continue
                try:
                    manifest = read_manifest(path, self._allowed_modules())
                except ManifestError as exc:
                    bad.append(str(exc))
                    continue
                if path.name in keep:
                    keys.update(info.key for info in manifest.modules.values())
                else:
                    freed += _tree_bytes(path)
                    discard(path)
                    removed.append(path.name)
            freed += self._prune_module_cache(keys)
        return GcReport(removed, freed, bad)

    def _prune_module_cache(self, keys: set[str]) -> int:
        """Delete cached modules whose key no kept build names; return the bytes freed."""
        freed = 0
        cache = self.generated_dir / CACHE_DIR
        for entry in cache.iterdir() if cache.exists() else []:
            # Module entries are named by a 64-hex key; memos and the shared module are not.
            if len(entry.name) == 64 and entry.name not in keys and entry.is_dir():
                freed += _tree_bytes(entry)
                discard(entry)
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
        try:
            mods_a = read_manifest(dir_a, self._allowed_modules()).modules
            mods_b = read_manifest(dir_b, self._allowed_modules()).modules
        except ManifestError as exc:
            raise LoadError(str(exc)) from None
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

    def _allowed_modules(self) -> tuple[str, ...]:
        from codegen.render import (
            module_names,
        )  # jinja2 and black: not for `rsi status`

        return module_names(self.template_dir)

    def _intact(self, build_id: str) -> bool:
        """Whether build ``build_id`` exists and matches its manifest (a corrupt one is
        discarded with a warning, so the caller rebuilds it)."""
        build = self.generated_dir / build_id
        return verified_or_discarded(build, self._allowed_modules()) is not None

    def _active(self) -> Active:
        active = self.ledger.active()
        if active is None:
            raise LedgerError(f"{self.state_path.name}: never built; run `rsi build` first")
        return active

    def _rollback_target(self, active: Active, to: int | None) -> tuple[int, str, str]:
        versions = self.ledger.versions()
        if to is not None:
            if to not in versions:
                raise LedgerError(f"version {to} is not in the history {versions}")
            record = self.ledger.state(to)
            return to, record.build_id, record.tier
        target = self.ledger.rollback_target()
        if target is None:
            raise LedgerError(
                f"nothing to roll back to: no other version was live before the active "
                f"{active.version} (history {versions}; use --to VERSION)"
            )
        return target.version, target.build_id, target.tier

    def _recorded_state(self, data: bytes, version: int) -> RSIState:
        """The state a ledger record holds, refused unless it passes the schema as ``version``."""
        try:
            state = parse_state(data, f"history version {version}")
        except StateError as exc:
            raise LedgerError(
                f"ledger {self.ledger.path}: refusing to restore version {version}: {exc}"
            ) from None
        if state.version != version:
            raise LedgerError(
                f"ledger {self.ledger.path}: refusing to restore version {version}: "
                f"its bytes say version {state.version}"
            )
        return state

    def _keep_uncommitted(self) -> Path | None:
        """Copy the state file beside it unless it is a committed state (or absent)."""
        try:
            data = self._read_state_bytes()
        except StateError:
            if not os.path.lexists(self.state_path):
                return None
            raise
        if self.ledger.is_committed(data):
            return None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        kept = self.state_path.with_name(f"{self.state_path.stem}.uncommitted-{stamp}.json")
        atomic_write(kept, data, mode=self.state_path.stat().st_mode & 0o7777)
        return kept

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
        else:
            check_version_jump(self.state_path.name, state.version, newest)

    def keep_uncommitted(self) -> Path | None:
        """Copy the state file to ``<stem>.uncommitted-<UTC time>.json`` unless it is a
        committed state (or absent); return the copy. Call before replacing the file."""
        check_state_path(self.state_path, must_exist=False)
        with project_lock(self.state_path, timeout_s=self.lock_timeout_s):
            return self._keep_uncommitted()

    def recover(self) -> None:
        """Delete what a killed process left half-done (staging dirs, temp files)."""
        check_state_path(self.state_path, must_exist=False)
        with project_lock(self.state_path, timeout_s=self.lock_timeout_s):
            self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Delete what a killed process left half-done (called under the project lock).

        Staging dirs of dead processes, and temp files of an interrupted atomic write of the
        state file (those are only written under this lock, so any present now is stale).
        """
        remove_stale_staging(self.generated_dir)
        remove_stale_staging(self.generated_dir / CACHE_DIR)
        from codegen.check import remove_stale_mypy_dirs  # not for commands that only read

        remove_stale_mypy_dirs()
        name, stem = self.state_path.name, self.state_path.stem
        rejected = rejected_path(self.state_path).name
        patterns = (f".{name}.*.tmp", f".{stem}.uncommitted-*.json.*.tmp", f".{rejected}.*.tmp")
        for pattern in patterns:
            for tmp in self.state_path.parent.glob(pattern):
                tmp.unlink(missing_ok=True)

    def _read_state_bytes(self) -> bytes:
        return read_state_file(self.state_path)


def _report(
    result: BuildResult, version: int, builds: list[str], new: bool, specialized: list[str]
) -> BuildReport:
    return BuildReport(
        build_id=result.build_id,
        seconds=round(result.seconds, 4),
        modules_compiled=len(result.compiled),
        cache_hits=result.cache_hits,
        modules=result.modules,
        tier=result.tier,
        state_version=version,
        path=str(result.path),
        version_builds=builds,
        new_build_of_committed=new,
        specialized=specialized,
    )


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True) if path.exists() else []
