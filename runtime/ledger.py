"""The ledger: committed states (exact bytes), their builds, activations, events. SQLite, WAL.

Each change is one transaction, so a process killed at any instant leaves either the old or
the new record, never half of one.

One ledger belongs to one state file (:func:`ledger_path`): two state files in a directory
share ``generated/`` (builds are content-addressed) but never a history. A committed
version's bytes never change; every distinct build made of them (another tier, or new
templates or toolchain) is a *build record* of that version (``builds``), and every time a
build goes live is an *activation* (``activations``), which is what the default rollback
follows. A save committed under another version number (watch mode renumbers a save whose
"version" is not newer, and leaves the file as saved) is an *alias* (``aliases``: the saved
bytes' sha256 -> the version), recorded in the commit's transaction, so that the file reads
as that committed version to ``rsi status``, ``rollback``, ``build`` and ``promote``.

Tables are only ever added (``CREATE TABLE IF NOT EXISTS``, run on every open): a ledger
from before a table gains it, empty, and readers fall back where an old ledger has no rows.

The gate's evidence (raw per-question correctness of each build on each split) and its
decisions live here too. A promotion records its decision before it commits the state, then
marks the decision committed: a promoted state always has its decision, and a kill between
the steps leaves a decision that reads as committed only if the commit landed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from codegen.errors import LedgerError, StateError

if TYPE_CHECKING:
    from runtime.gate import Decision, Evidence, LatencySamples, SplitOutcome

__all__ = [
    "Ledger",
    "StateRecord",
    "Active",
    "Activation",
    "BuildRecord",
    "ledger_path",
    "ledger_paths",
    "LEDGER_DIR",
    "DecisionRecord",
    "CommitRequest",
    "MAX_VERSION_JUMP",
    "check_version_jump",
]

LEDGER_DIR = ".rsi"
#: How far past the newest committed version a new one may jump: room for any numbering a
#: person uses (dates, say), while the schema's bound on ``version`` stays out of reach, so
#: one candidate can never leave no next version for the ones after it.
MAX_VERSION_JUMP = 10**9

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS states (
    version INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL,
    data BLOB NOT NULL,
    build_id TEXT NOT NULL,
    tier TEXT NOT NULL,
    committed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS active (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    build_id TEXT NOT NULL,
    tier TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS builds (
    version INTEGER NOT NULL,
    build_id TEXT NOT NULL,
    tier TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (version, build_id)
);
CREATE TABLE IF NOT EXISTS activations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    version INTEGER NOT NULL,
    build_id TEXT NOT NULL,
    tier TEXT NOT NULL,
    kind TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluations (
    build_id TEXT NOT NULL,
    split TEXT NOT NULL,
    seed INTEGER NOT NULL,
    data_fingerprint TEXT NOT NULL,
    questions INTEGER NOT NULL,
    tasks BLOB NOT NULL,
    correct BLOB NOT NULL,
    tiers_agree INTEGER NOT NULL,
    kernels_agree INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (build_id, split, seed, data_fingerprint)
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    candidate TEXT NOT NULL,
    incumbent TEXT NOT NULL,
    require TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    stats TEXT NOT NULL,
    latency TEXT,
    waived TEXT NOT NULL,
    candidate_version INTEGER NOT NULL,
    candidate_sha256 TEXT NOT NULL,
    candidate_data BLOB NOT NULL,
    committed_version INTEGER
);
CREATE TABLE IF NOT EXISTS aliases (
    sha256 TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS calibrations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    latency_noise_floor REAL,
    latency_changes TEXT NOT NULL,
    summary TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class CommitRequest:
    """What :meth:`Ledger.record_decision` needs to commit a promoted candidate."""

    build_id: str
    tier: str
    limit: int  # the candidate's safety.history_limit
    specialized: tuple[str, ...] = ()
    #: The bytes a person saved, when the candidate renumbers them (watch mode commits a save
    #: whose "version" is not newer as the next version and leaves the file as saved): kept
    #: as an alias, so that the file reads as the committed version (:meth:`Ledger.resolve`).
    saved: bytes | None = None


@dataclass(frozen=True)
class StateRecord:
    """One committed state and its newest build record."""

    version: int
    sha256: str
    data: bytes
    build_id: str
    tier: str


@dataclass(frozen=True)
class Active:
    """The build a project serves."""

    version: int
    build_id: str
    tier: str


@dataclass(frozen=True)
class DecisionRecord:
    """One gate decision as the ledger keeps it (``rsi history`` prints these)."""

    id: int
    at: float
    candidate: str
    incumbent: str
    require: str
    verdict: str
    reason: str
    stats: Mapping[str, object]
    latency: Mapping[str, list[float]] | None
    waived: tuple[str, ...]
    candidate_version: int
    candidate_sha256: str
    committed_version: int | None


@dataclass(frozen=True)
class BuildRecord:
    """One build made of a committed version's bytes."""

    version: int
    build_id: str
    tier: str
    recorded_at: float


@dataclass(frozen=True)
class Activation:
    """One time a build went live: ``kind`` is commit, rollback, restore or activate."""

    version: int
    build_id: str
    tier: str
    kind: str
    at: float


def ledger_path(state_path: Path) -> Path:
    """The ledger of ``state_path``: ``.rsi/<state file name>/ledger.sqlite3`` beside it."""
    return state_path.parent / LEDGER_DIR / state_path.name / "ledger.sqlite3"


def ledger_paths(directory: Path) -> list[Path]:
    """Every ledger kept in ``directory`` (one per state file; a pre-split shared one too)."""
    root = directory / LEDGER_DIR
    found = sorted(root.glob("*/ledger.sqlite3")) if root.is_dir() else []
    legacy = root / "ledger.sqlite3"
    return [*found, legacy] if legacy.is_file() else found


def check_version_jump(source: str, version: int, newest: int) -> None:
    """Refuse (:class:`StateError`) a new ``version`` more than :data:`MAX_VERSION_JUMP`
    past the ``newest`` committed one."""
    if version > newest + MAX_VERSION_JUMP:
        raise StateError(
            f"{source}: version {version} jumps more than {MAX_VERSION_JUMP} past the "
            f'committed {newest}; set "version" to {newest + 1}'
        )


class Ledger:
    """History of one state file, at ``path`` (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _db(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        try:
            if write:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect(write)) as conn, conn:  # one transaction
                yield conn
        except sqlite3.DatabaseError as exc:
            if "malformed" in str(exc) or "not a database" in str(exc):
                raise LedgerError(
                    f"ledger {self.path}: {exc}; the history is damaged: restore the file from "
                    "a backup, or move it aside to start a new history (the builds are kept)"
                ) from None
            raise LedgerError(f"ledger {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.path}: {exc}") from None
        except OSError as exc:
            raise LedgerError(f"ledger {self.path}: {exc.strerror or exc}") from None

    def _connect(self, write: bool) -> sqlite3.Connection:
        if not write and not self.path.exists():
            # Reading a ledger never written: an empty one, and nothing created on disk.
            conn = sqlite3.connect(":memory:")
            conn.executescript(_SCHEMA)
            return conn
        if self.path.is_file() and self.path.stat().st_size == 0:
            # SQLite would take an emptied file for a new ledger and the history for none.
            raise sqlite3.DatabaseError("the file is empty (0 bytes); restore it or remove it")
        conn = sqlite3.connect(self.path, timeout=30.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
            return conn
        except sqlite3.OperationalError:
            conn.close()
            wal = self.path.with_name(self.path.name + "-wal")
            if write or not self.path.exists() or (wal.exists() and wal.stat().st_size):
                raise
        # On a full disk (or a read-only one) SQLite cannot create the WAL index it needs even
        # to read. With no WAL content pending, the database file alone is the whole ledger:
        # read it without locks, so status and the active build stay available.
        logger.warning("ledger %s: opening read-only (disk full or read-only?)", self.path)
        return sqlite3.connect(f"file:{quote(str(self.path))}?immutable=1", uri=True)

    def commit(
        self,
        version: int,
        data: bytes,
        build_id: str,
        tier: str,
        *,
        limit: int,
        specialized: tuple[str, ...] = (),
    ) -> bool:
        """Record ``data`` as committed ``version`` built as ``build_id``; make it active.

        A committed version's bytes never change (other bytes are refused); a build of them
        not seen before is added as a new build record of the version. Keeps at most
        ``limit`` states, dropping the oldest, but never the active one nor the one the
        default rollback would restore. Returns whether ``build_id`` is another build of a
        version already committed with a different one. ``specialized``: the user functions
        (``module:function``) the build carries specialized copies of, named in its note.
        """
        with self._db() as db:
            return _commit(db, version, data, build_id, tier, limit, specialized)

    def activate(self, version: int, build_id: str, tier: str, kind: str = "activate") -> bool:
        """Point the project at a committed state's build; return whether it is a new build.

        ``kind`` "rollback" is the default rollback (it steps back in the activation
        history); "restore" (``--to``) and others push a new activation.
        """
        with self._db() as db:
            if not db.execute("SELECT 1 FROM states WHERE version = ?", (version,)).fetchone():
                raise LedgerError(f"state version {version} is not in the history")
            added = _record_build(db, version, build_id, tier)
            _activate(db, version, build_id, tier, kind)
        return added

    def active(self) -> Active | None:
        """The active build, or None for a project never built."""
        with self._db(write=False) as db:
            row = db.execute("SELECT version, build_id, tier FROM active").fetchone()
        return Active(*row) if row else None

    def state(self, version: int) -> StateRecord:
        """Committed state ``version`` with its newest build; its bytes checked against the hash.

        Raises :class:`LedgerError` for a version not in the history or a record whose bytes
        do not match its stored sha256 (an edited or damaged ledger): never restore those.
        """
        with self._db(write=False) as db:
            row = db.execute(
                "SELECT version, sha256, data FROM states WHERE version = ?", (version,)
            ).fetchone()
            builds = _builds(db, version)
        if row is None:
            raise LedgerError(f"state version {version} is not in the history")
        _, digest, data = row
        if not isinstance(data, bytes) or hashlib.sha256(data).hexdigest() != digest:
            raise LedgerError(
                f"ledger {self.path}: state version {version} does not match its stored "
                "sha256; refusing to use it (restore the ledger, or pick another version)"
            )
        newest = builds[-1]
        return StateRecord(version, digest, data, newest.build_id, newest.tier)

    def builds(self, version: int) -> list[BuildRecord]:
        """Every build recorded for committed ``version``, oldest first."""
        with self._db(write=False) as db:
            return _builds(db, version)

    def activations(self) -> list[Activation]:
        """Every activation, oldest first."""
        with self._db(write=False) as db:
            return _activations(db)

    def rollback_target(self) -> Activation | None:
        """What the default rollback restores: what was live before the current activation.

        The activation history is replayed as a stack (a default rollback pops, anything
        else pushes); the target is the newest entry below the top of another version still
        in the history. With no such entry (the bottom of the stack, or a ledger from before
        activations were recorded) it is the newest committed version older than the active.
        """
        with self._db(write=False) as db:
            return _default_target(db)

    def is_committed(self, data: bytes) -> bool:
        """Whether ``data`` is a committed state, byte for byte or as a renumbered save."""
        return self.committed_version(data) is not None

    def committed_version(self, data: bytes) -> int | None:
        """The version ``data`` is committed as, or None: byte for byte, or as the alias of a
        renumbered save (bytes a person saved under an older version number, committed as
        the next version; see :attr:`CommitRequest.saved`)."""
        digest = hashlib.sha256(data).hexdigest()
        with self._db(write=False) as db:
            row = db.execute("SELECT MAX(version) FROM states WHERE sha256 = ?", (digest,))
            version: int | None = row.fetchone()[0]
            return version if version is not None else _aliased(db, digest)

    def resolve(self, data: bytes) -> bytes:
        """The committed bytes ``data`` stands for: those of the version a renumbered save
        was committed as, or ``data`` itself."""
        digest = hashlib.sha256(data).hexdigest()
        with self._db(write=False) as db:
            exact = db.execute("SELECT 1 FROM states WHERE sha256 = ?", (digest,)).fetchone()
            version = None if exact else _aliased(db, digest)
        return data if version is None else self.state(version).data

    def versions(self) -> list[int]:
        """Committed versions, oldest first."""
        with self._db(write=False) as db:
            return [v for (v,) in db.execute("SELECT version FROM states ORDER BY version")]

    def builds_in_use(self) -> set[str]:
        """Build ids referenced by the history (every build record) or the active pointer."""
        with self._db(write=False) as db:
            ids = {b for (b,) in db.execute("SELECT build_id FROM states")}
            ids.update(b for (b,) in db.execute("SELECT build_id FROM builds"))
            ids.update(b for (b,) in db.execute("SELECT build_id FROM active"))
        return ids

    def event(self, kind: str, detail: dict[str, object]) -> None:
        """Append an event (the watch daemon's outcomes, for one)."""
        with self._db() as db:
            _event(db, kind, detail)

    def check_integrity(self) -> None:
        """Raise :class:`LedgerError` unless SQLite and every stored hash check out."""
        with self._db(write=False) as db:
            (verdict,) = db.execute("PRAGMA integrity_check").fetchone()
            if verdict != "ok":
                raise LedgerError(f"ledger {self.path.name}: {verdict}")
            for version, digest, data in db.execute("SELECT version, sha256, data FROM states"):
                if hashlib.sha256(data).hexdigest() != digest:
                    raise LedgerError(f"ledger: state version {version} does not match its hash")
            row = db.execute("SELECT version, build_id FROM active").fetchone()
            if (
                row
                and not db.execute("SELECT 1 FROM states WHERE version = ?", (row[0],)).fetchone()
            ):
                raise LedgerError(f"ledger: active version {row[0]} is not in the history")
            if row and row[1] not in {b.build_id for b in _builds(db, row[0])}:
                raise LedgerError(
                    f"ledger: active build {row[1]} is not a recorded build of v{row[0]}"
                )

    # -- the gate's evidence and decisions -------------------------------------------------

    def record_evidence(self, evidence: Evidence) -> None:
        """Store both splits of ``evidence`` (raw per-question correctness) in one transaction."""
        at = time.time()
        with self._db() as db:
            for outcome in (evidence.heldout, evidence.hidden):
                if len(outcome.tasks) != len(outcome.correct):
                    raise LedgerError(
                        f"evaluation of {evidence.build_id} on {outcome.split}: "
                        f"{len(outcome.tasks)} tasks for {len(outcome.correct)} answers"
                    )
                db.execute(
                    "INSERT OR REPLACE INTO evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        evidence.build_id,
                        outcome.split,
                        outcome.seed,
                        outcome.data_fingerprint,
                        len(outcome.correct),
                        _pack_tasks(outcome.tasks),
                        _pack_bits(outcome.correct),
                        int(evidence.tiers_agree),
                        int(evidence.kernels_agree),
                        at,
                    ),
                )

    def evaluation(
        self, build_id: str, split: str, seed: int, fingerprint: str
    ) -> SplitOutcome | None:
        """The stored outcome of ``build_id`` on ``split`` for this seed and data, if any."""
        from runtime.gate import SplitOutcome

        with self._db(write=False) as db:
            row = db.execute(
                "SELECT questions, tasks, correct FROM evaluations WHERE build_id = ? "
                "AND split = ? AND seed = ? AND data_fingerprint = ?",
                (build_id, split, seed, fingerprint),
            ).fetchone()
        if row is None:
            return None
        n, tasks, correct = row
        return SplitOutcome(
            split=split,
            seed=seed,
            data_fingerprint=fingerprint,
            tasks=tuple(tasks[:n]),
            correct=_unpack_bits(correct, n),
        )

    def evidence(self, build_id: str, seed: int, fingerprint: str) -> Evidence | None:
        """The cached :class:`Evidence` of ``build_id`` (both splits), or None."""
        from runtime.gate import Evidence

        heldout = self.evaluation(build_id, "heldout", seed, fingerprint)
        hidden = self.evaluation(build_id, "hidden", seed, fingerprint)
        if heldout is None or hidden is None:
            return None
        with self._db(write=False) as db:
            flags = db.execute(
                "SELECT MIN(tiers_agree), MIN(kernels_agree) FROM evaluations WHERE "
                "build_id = ? AND seed = ? AND data_fingerprint = ? AND split IN "
                "('heldout', 'hidden')",
                (build_id, seed, fingerprint),
            ).fetchone()
        return Evidence(build_id, heldout, hidden, bool(flags[0]), bool(flags[1]))

    def record_decision(
        self,
        decision: Decision,
        *,
        candidate_data: bytes,
        candidate_version: int,
        waived: Sequence[str] = (),
        latency: LatencySamples | None = None,
        commit_as: CommitRequest | None = None,
    ) -> int:
        """Record ``decision`` and the candidate's exact bytes; return the decision's id.

        With ``commit_as`` (a promotion), the candidate is committed and activated as
        :meth:`commit` does, in the same transaction: a kill leaves either no decision or a
        committed one, never a promotion decided but not committed.
        """
        samples = (
            None
            if latency is None
            else json.dumps(
                {
                    "incumbent_s": list(latency.incumbent_s),
                    "candidate_s": list(latency.candidate_s),
                }
            )
        )
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO decisions (at, candidate, incumbent, require, verdict, reason, "
                "stats, latency, waived, candidate_version, candidate_sha256, candidate_data, "
                "committed_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time(),
                    decision.candidate,
                    decision.incumbent,
                    decision.require,
                    str(decision.verdict),
                    decision.reason,
                    json.dumps(dict(decision.stats), sort_keys=True),
                    samples,
                    json.dumps(list(waived)),
                    candidate_version,
                    hashlib.sha256(candidate_data).hexdigest(),
                    candidate_data,
                    None if commit_as is None else candidate_version,
                ),
            )
            decision_id = cursor.lastrowid
            if commit_as is not None:
                _commit(
                    db,
                    candidate_version,
                    candidate_data,
                    commit_as.build_id,
                    commit_as.tier,
                    commit_as.limit,
                    commit_as.specialized,
                    commit_as.saved,
                )
        assert decision_id is not None
        return decision_id

    def mark_committed(self, decision_id: int, version: int) -> None:
        """Note that decision ``decision_id`` was committed as ``version``."""
        with self._db() as db:
            db.execute(
                "UPDATE decisions SET committed_version = ? WHERE id = ?",
                (version, decision_id),
            )

    def decisions(self, limit: int = 20) -> list[DecisionRecord]:
        """The newest ``limit`` decisions, newest first.

        A promotion killed after its commit but before :meth:`mark_committed` still reads as
        committed: its candidate's bytes are a committed state.
        """
        return self._decisions(None, limit)

    def decision(self, decision_id: int) -> DecisionRecord:
        """Decision ``decision_id`` (the number ``rsi history`` shows first)."""
        found = self._decisions(decision_id, 1)
        if not found:
            raise LedgerError(
                f"decision {decision_id} is not in the ledger; `rsi history` lists the "
                "decisions with their numbers"
            )
        return found[0]

    def _decisions(self, decision_id: int | None, limit: int) -> list[DecisionRecord]:
        """The newest ``limit`` decisions, or only ``decision_id``'s when given."""
        with self._db(write=False) as db:
            rows = db.execute(
                "SELECT id, at, candidate, incumbent, require, verdict, reason, stats, latency, "
                "waived, candidate_version, candidate_sha256, COALESCE(committed_version, "
                "(SELECT version FROM states WHERE decisions.verdict = 'promote' AND "
                "states.sha256 = decisions.candidate_sha256 AND "
                "states.version = decisions.candidate_version)) FROM decisions "
                "WHERE ?1 IS NULL OR id = ?1 ORDER BY id DESC LIMIT ?2",
                (decision_id, limit),
            ).fetchall()
        return [
            DecisionRecord(
                id=row[0],
                at=row[1],
                candidate=row[2],
                incumbent=row[3],
                require=row[4],
                verdict=row[5],
                reason=row[6],
                stats=json.loads(row[7]),
                latency=json.loads(row[8]) if row[8] is not None else None,
                waived=tuple(json.loads(row[9])),
                candidate_version=row[10],
                candidate_sha256=row[11],
                committed_version=row[12],
            )
            for row in rows
        ]

    def decision_candidate(self, decision_id: int) -> bytes:
        """The exact candidate bytes decision ``decision_id`` judged (a rejected edit is kept)."""
        with self._db(write=False) as db:
            row = db.execute(
                "SELECT candidate_data FROM decisions WHERE id = ?", (decision_id,)
            ).fetchone()
        if row is None:
            raise LedgerError(
                f"decision {decision_id} is not in the ledger; `rsi history` lists the "
                "decisions with their numbers"
            )
        data: bytes = row[0]
        return data

    def record_calibration(
        self,
        *,
        latency_noise_floor: float | None,
        latency_changes: Sequence[float],
        summary: Mapping[str, object],
    ) -> int:
        """Keep a run of ``rsi gate calibrate``: the latency noise floor (None when latency
        was not measured), its raw A/A changes and the whole summary. Returns its id."""
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO calibrations (at, latency_noise_floor, latency_changes, summary) "
                "VALUES (?, ?, ?, ?)",
                (
                    time.time(),
                    latency_noise_floor,
                    json.dumps(list(latency_changes)),
                    json.dumps(summary, sort_keys=True),
                ),
            )
            return int(cursor.lastrowid or 0)

    def latency_noise_floor(self) -> float | None:
        """The noise floor of the latest calibration that measured latency, if any."""
        with self._db(write=False) as db:
            row = db.execute(
                "SELECT latency_noise_floor FROM calibrations WHERE latency_noise_floor "
                "IS NOT NULL ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return float(row[0]) if row is not None else None

    def check_gate_records(self) -> None:
        """Raise :class:`LedgerError` unless every evaluation and decision is whole.

        Each evaluation's blobs hold exactly its question count; each decision's candidate
        bytes match their hash; a decision that committed a version points at that version's
        bytes when the version is still in the history.
        """
        with self._db(write=False) as db:
            for build_id, split, n, tasks, correct in db.execute(
                "SELECT build_id, split, questions, tasks, correct FROM evaluations"
            ):
                if len(tasks) != n or len(correct) != (n + 7) // 8:
                    raise LedgerError(f"ledger: evaluation of {build_id} on {split} is torn")
            for decision_id, digest, data, committed in db.execute(
                "SELECT id, candidate_sha256, candidate_data, committed_version FROM decisions"
            ):
                if hashlib.sha256(data).hexdigest() != digest:
                    raise LedgerError(f"ledger: decision {decision_id} candidate is torn")
                state = (
                    db.execute(
                        "SELECT sha256 FROM states WHERE version = ?", (committed,)
                    ).fetchone()
                    if committed is not None
                    else None
                )
                if state is not None and state[0] != digest:
                    raise LedgerError(
                        f"ledger: decision {decision_id} promoted version {committed}, "
                        "which holds other bytes"
                    )


def _commit(
    db: sqlite3.Connection,
    version: int,
    data: bytes,
    build_id: str,
    tier: str,
    limit: int,
    specialized: tuple[str, ...],
    saved: bytes | None = None,
) -> bool:
    """:meth:`Ledger.commit` inside the caller's transaction; ``saved``: see
    :attr:`CommitRequest.saved`."""
    digest = hashlib.sha256(data).hexdigest()
    now = time.time()
    row = db.execute("SELECT sha256 FROM states WHERE version = ?", (version,)).fetchone()
    if row is None:
        db.execute(
            "INSERT INTO states VALUES (?, ?, ?, ?, ?, ?)",
            (version, digest, data, build_id, tier, now),
        )
        db.execute(
            "INSERT INTO builds VALUES (?, ?, ?, ?)",
            (version, build_id, tier, now),
        )
        added = False
    elif row[0] != digest:
        raise LedgerError(
            f"version {version} is already committed with different content; "
            "bump the state's version"
        )
    else:
        added = _record_build(db, version, build_id, tier, specialized)
    alias = hashlib.sha256(saved).hexdigest() if saved is not None else digest
    if not db.execute("SELECT 1 FROM states WHERE sha256 = ?", (alias,)).fetchone():
        # Bytes that are a committed state themselves stand for that state, never an alias.
        db.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (alias, version, now))
    _activate(db, version, build_id, tier, "commit")
    keep = {version}
    target = _default_target(db)
    if target is not None:
        keep.add(target.version)
    others = [v for (v,) in db.execute("SELECT version FROM states ORDER BY version DESC")]
    keep.update([v for v in others if v not in keep][: max(0, limit - len(keep))])
    for old in set(others) - keep:
        db.execute("DELETE FROM states WHERE version = ?", (old,))
        db.execute("DELETE FROM builds WHERE version = ?", (old,))
        db.execute("DELETE FROM aliases WHERE version = ?", (old,))
    return added


def _aliased(db: sqlite3.Connection, digest: str) -> int | None:
    """The committed version whose renumbered save has sha256 ``digest``, or None.

    A ledger from before aliases gains the table when it is opened (``_SCHEMA``); opened
    read-only (a full disk) it may lack it, and then has no alias.
    """
    if not db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'aliases'"
    ).fetchone():
        return None
    row = db.execute(
        "SELECT aliases.version FROM aliases JOIN states ON states.version = aliases.version "
        "WHERE aliases.sha256 = ?",
        (digest,),
    ).fetchone()
    return int(row[0]) if row is not None else None


def _builds(db: sqlite3.Connection, version: int) -> list[BuildRecord]:
    rows = db.execute(
        "SELECT version, build_id, tier, recorded_at FROM builds WHERE version = ? "
        "ORDER BY recorded_at, rowid",
        (version,),
    ).fetchall()
    if not rows:  # a ledger from before build records: the state row names its one build
        rows = db.execute(
            "SELECT version, build_id, tier, committed_at FROM states WHERE version = ?",
            (version,),
        ).fetchall()
    return [BuildRecord(*r) for r in rows]


def _record_build(
    db: sqlite3.Connection,
    version: int,
    build_id: str,
    tier: str,
    specialized: tuple[str, ...] = (),
) -> bool:
    known = _builds(db, version)
    if any(b.build_id == build_id for b in known):
        return False
    now = time.time()
    for old in known:  # backfill a pre-build-record ledger's one build before adding another
        db.execute(
            "INSERT OR IGNORE INTO builds VALUES (?, ?, ?, ?)",
            (old.version, old.build_id, old.tier, old.recorded_at),
        )
    db.execute("INSERT INTO builds VALUES (?, ?, ?, ?)", (version, build_id, tier, now))
    if known:
        why = (
            "another tier"
            if all(b.tier != tier for b in known)
            else "templates, toolchain or specialized user code changed"
            if specialized
            else "templates or toolchain changed"
        )
        carries = f"; specialized user code: {', '.join(specialized)}" if specialized else ""
        logger.warning(
            "state v%d: new build %s (%s%s) recorded beside %s (%s)",
            version,
            build_id,
            tier,
            carries,
            ", ".join(b.build_id for b in known),
            why,
        )
        event: dict[str, object] = {"version": version, "build_id": build_id, "tier": tier}
        if specialized:
            event["specialized"] = list(specialized)
        _event(db, "new-build", event)
    return True


def _activate(db: sqlite3.Connection, version: int, build_id: str, tier: str, kind: str) -> None:
    db.execute("INSERT OR REPLACE INTO active VALUES (1, ?, ?, ?)", (version, build_id, tier))
    db.execute(
        "INSERT INTO activations (at, version, build_id, tier, kind) VALUES (?, ?, ?, ?, ?)",
        (time.time(), version, build_id, tier, kind),
    )
    _event(db, kind, {"version": version, "build_id": build_id, "tier": tier})


def _activations(db: sqlite3.Connection) -> list[Activation]:
    rows = db.execute(
        "SELECT version, build_id, tier, kind, at FROM activations ORDER BY id"
    ).fetchall()
    return [Activation(*r) for r in rows]


def _default_target(db: sqlite3.Connection) -> Activation | None:
    versions = {v for (v,) in db.execute("SELECT version FROM states")}
    stack: list[Activation] = []
    for act in _activations(db):
        if act.kind == "rollback":
            while stack and stack[-1].version != act.version:
                stack.pop()
            if stack:
                stack[-1] = act
                continue
        if stack and stack[-1].version == act.version:
            stack[-1] = act  # the same version rebuilt (another tier or build): one entry
        else:
            stack.append(act)
    if stack:
        current = stack[-1].version
        below = [a for a in stack[:-1] if a.version != current and a.version in versions]
        if below:
            return below[-1]
    row = db.execute("SELECT version FROM active").fetchone()
    older = sorted(v for v in versions if row and v < row[0])
    if not older:
        return None
    newest = _builds(db, older[-1])[-1]
    return Activation(newest.version, newest.build_id, newest.tier, "commit", newest.recorded_at)


def _pack_tasks(tasks: Sequence[int]) -> bytes:
    """One byte per question (bAbI task numbers are 1..20)."""
    try:
        return bytes(tasks)
    except ValueError:
        raise LedgerError(
            f"task numbers must be in 0..255, got {min(tasks)}..{max(tasks)}"
        ) from None


def _pack_bits(bits: Sequence[bool]) -> bytes:
    """Bit ``i`` of the little-endian integer is question ``i`` (one bit per question)."""
    value = sum(1 << i for i, bit in enumerate(bits) if bit)
    return value.to_bytes((len(bits) + 7) // 8, "little")


def _unpack_bits(blob: bytes, n: int) -> tuple[bool, ...]:
    value = int.from_bytes(blob, "little")
    return tuple(bool(value >> i & 1) for i in range(n))


def _event(db: sqlite3.Connection, kind: str, detail: dict[str, object]) -> None:
    db.execute(
        "INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)",
        (time.time(), kind, json.dumps(detail, sort_keys=True)),
    )
