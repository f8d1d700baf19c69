"""A hot slot: the active build, swapped atomically while other threads keep calling it."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

__all__ = ["HotSlot"]

T = TypeVar("T")


class HotSlot(Generic[T]):
    """Holds one value; readers take it at call start, writers swap it in one step.

    Reading is a single reference load (atomic in CPython), so readers never lock: a call
    that took the old build finishes on it, the next call sees the new one. Writers lock only
    to return the value they replaced consistently.
    """

    def __init__(self, initial: T) -> None:
        self._value = initial
        self._write = threading.Lock()

    def get(self) -> T:
        """The current value; hold on to it for the whole call."""
        return self._value

    def swap(self, new: T) -> T:
        """Make ``new`` current; return the value it replaced."""
        with self._write:
            old, self._value = self._value, new
            return old
