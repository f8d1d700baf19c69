"""The ledger: committed states (exact bytes), the active build, events. SQLite in WAL mode.

Each change is one transaction, so a process killed at any instant leaves either the old or
the new record, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from codegen.errors import LedgerError

__all__ = ["Ledger", "StateRecord", "Active"]

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


def _event(db: sqlite3.Connection, kind: str, detail: dict[str, object]) -> None:
    db.execute(
        "INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)",
        (time.time(), kind, json.dumps(detail, sort_keys=True)),
    )
