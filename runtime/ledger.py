"""The ledger: committed states (exact bytes), the active build, events, and the gate's
evidence and decisions. SQLite in WAL mode.

Each change is one transaction, so a process killed at any instant leaves either the old or
the new record, never half of one. A promotion records its decision before it commits the
state, then marks the decision committed: a promoted state always has its decision, and a
kill between the steps leaves a decision that reads as committed only if the commit landed.
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

from codegen.errors import LedgerError

if TYPE_CHECKING:
    from runtime.gate import Decision, Evidence, LatencySamples, SplitOutcome

__all__ = ["Ledger", "StateRecord", "Active", "DecisionRecord"]

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
"""


@dataclass(frozen=True)
class StateRecord:
    """One committed state."""

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


class Ledger:
    """History of one project, at ``path`` (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _db(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect(write)) as conn, conn:  # one transaction
                yield conn
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.path}: {exc}") from None
        except OSError as exc:
            raise LedgerError(f"ledger {self.path}: {exc.strerror or exc}") from None

    def _connect(self, write: bool) -> sqlite3.Connection:
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

    def commit(self, version: int, data: bytes, build_id: str, tier: str, *, limit: int) -> None:
        """Record ``data`` as committed ``version`` built as ``build_id``; make it active.

        Keeps at most ``limit`` states, dropping the oldest (never the active one).
        """
        digest = hashlib.sha256(data).hexdigest()
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO states VALUES (?, ?, ?, ?, ?, ?)",
                (version, digest, data, build_id, tier, time.time()),
            )
            db.execute(
                "INSERT OR REPLACE INTO active VALUES (1, ?, ?, ?)", (version, build_id, tier)
            )
            db.execute(
                "DELETE FROM states WHERE version != ? AND version NOT IN "
                "(SELECT version FROM states ORDER BY version DESC LIMIT ?)",
                (version, limit),
            )
            _event(db, "commit", {"version": version, "build_id": build_id, "tier": tier})

    def activate(self, version: int, build_id: str, tier: str, kind: str = "activate") -> None:
        """Point the project at an already committed state's build."""
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO active VALUES (1, ?, ?, ?)", (version, build_id, tier)
            )
            _event(db, kind, {"version": version, "build_id": build_id, "tier": tier})

    def active(self) -> Active | None:
        """The active build, or None for a project never built."""
        with self._db(write=False) as db:
            row = db.execute("SELECT version, build_id, tier FROM active").fetchone()
        return Active(*row) if row else None

    def state(self, version: int) -> StateRecord:
        """Committed state ``version``."""
        with self._db(write=False) as db:
            row = db.execute(
                "SELECT version, sha256, data, build_id, tier FROM states WHERE version = ?",
                (version,),
            ).fetchone()
        if row is None:
            raise LedgerError(f"state version {version} is not in the history")
        return StateRecord(*row)

    def versions(self) -> list[int]:
        """Committed versions, oldest first."""
        with self._db(write=False) as db:
            return [v for (v,) in db.execute("SELECT version FROM states ORDER BY version")]

    def builds_in_use(self) -> set[str]:
        """Build ids referenced by the history or the active pointer."""
        with self._db(write=False) as db:
            ids = {b for (b,) in db.execute("SELECT build_id FROM states")}
            ids.update(b for (b,) in db.execute("SELECT build_id FROM active"))
        return ids

    def event(self, kind: str, detail: dict[str, object]) -> None:
        """Append an event."""
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
            row = db.execute("SELECT version FROM active").fetchone()
            if (
                row
                and not db.execute("SELECT 1 FROM states WHERE version = ?", (row[0],)).fetchone()
            ):
                raise LedgerError(f"ledger: active version {row[0]} is not in the history")

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
    ) -> int:
        """Record ``decision`` and the candidate's exact bytes; return the decision's id.

        A promotion then calls :meth:`commit` and :meth:`mark_committed`.
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
                    None,
                ),
            )
            decision_id = cursor.lastrowid
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
        with self._db(write=False) as db:
            rows = db.execute(
                "SELECT id, at, candidate, incumbent, require, verdict, reason, stats, latency, "
                "waived, candidate_version, candidate_sha256, COALESCE(committed_version, "
                "(SELECT version FROM states WHERE decisions.verdict = 'promote' AND "
                "states.sha256 = decisions.candidate_sha256 AND "
                "states.version = decisions.candidate_version)) FROM decisions "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
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
            raise LedgerError(f"decision {decision_id} is not in the ledger")
        data: bytes = row[0]
        return data

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
