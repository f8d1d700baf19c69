"""The one error family of the toolkit.

Every error a user can cause is an :class:`RSIError` whose message is a single line naming
what is wrong; the CLI catches this type in one place and prints it.
"""

from __future__ import annotations

__all__ = [
    "RSIError",
    "StateError",
    "RenderError",
    "CheckError",
    "CompileError",
    "LockTimeout",
    "LedgerError",
    "StorageError",
    "one_line",
]


def one_line(text: str, limit: int = 400) -> str:
    """Collapse ``text`` to one line of at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class RSIError(Exception):
    """Base class: a problem the user can fix, described in one line."""

    #: Longest message kept; a subclass whose message is a command to paste raises it.
    max_chars = 400

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message, self.max_chars))


class StateError(RSIError):
    """The state file is missing, malformed or violates the schema."""


class RenderError(RSIError):
    """A template failed to render or produced unsafe output."""


class CheckError(RSIError):
    """Generated code failed a static check (parse, import allowlist, mypy)."""


class CompileError(RSIError):
    """A compiler backend failed."""


class LockTimeout(RSIError):  # noqa: N818 - reads as the event it reports
    """Another process held the project lock for too long."""


class LedgerError(RSIError):
    """The history ledger is missing a record or failed its integrity check."""


class StorageError(RSIError):
    """A file could not be written or read (a full disk, a read-only or vanished directory)."""
