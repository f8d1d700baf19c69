"""``@rsi_optimized``: call a build's specialized copy of a function, or the function itself.

The run-time half of :mod:`codegen.specialize`. Decorating a function changes nothing by
itself: it stays the *generic* function. A build made with ``--specialize module:function``
carries a specialized copy, recorded in its manifest under ``specialized`` with the hash of
the state sections it baked in. After :func:`activate` (``activate(project.load_active())``
or ``activate(live.current())``), the decorated name calls that copy when the state passed
in hashes the same, and the generic function in every other case: no active build, a build
without a copy, another state, a copy that cannot be found. A failure to find the copy is
logged once per build and function; the decorator never breaks a program.

A state is hashed once per object (states are frozen): the common case, the same state
object on every call, costs an identity test.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Generic, ParamSpec, TypeVar

from codegen.state import RSIState
from runtime.loader import LoadedBuild

__all__ = ["OptimizedFunction", "rsi_optimized", "activate", "active_build"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_active: LoadedBuild | None = None
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def activate(build: LoadedBuild | None) -> None:
    """Make ``build`` the one decorated functions specialize against (None: generic only)."""
    global _active
    _active = build


def active_build() -> LoadedBuild | None:
    """The build :func:`activate` last set, if any."""
    return _active


def rsi_optimized(
    *, target: str | tuple[str, ...], benchmark: str = ""
) -> Callable[[Callable[P, R]], OptimizedFunction[P, R]]:
    """Mark ``fn(state, ...)`` for specialization on the state sections ``target``.

    ``benchmark`` names a ``module:function`` that, given a state, returns the remaining
    arguments of a representative call (``tools/bench_specialize.py`` times it).
    """
    sections = (target,) if isinstance(target, str) else tuple(target)

    def wrap(fn: Callable[P, R]) -> OptimizedFunction[P, R]:
        return OptimizedFunction(fn, sections, benchmark)

    return wrap


class OptimizedFunction(Generic[P, R]):
    """A decorated function: dispatches to the active build's specialized copy."""

    def __init__(self, fn: Callable[P, R], sections: tuple[str, ...], benchmark: str) -> None:
        self.generic = fn
        self.sections = sections
        self.benchmark = benchmark
        self.target = f"{fn.__module__}:{fn.__qualname__}"
        # (build, state, the function to call for them): replaced whole, so threads agree.
        self._memo: tuple[object, object, Callable[..., R]] = (None, None, fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        build = _active
        state = args[0] if args else kwargs.get("state")
        memo_build, memo_state, fn = self._memo
        if build is not memo_build or state is not memo_state:
            fn = self.specialized(build, state) or self.generic
            self._memo = (build, state, fn)
        if fn is self.generic or build is None:
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # re-raised as it is, with a note naming the user's line
            exc.add_note(self._user_line_note(build, exc))
            raise

    def specialized(self, build: LoadedBuild | None, state: object) -> Callable[..., R] | None:
        """The copy in ``build`` made for ``state``, or None (then the generic one runs)."""
        if build is None or not isinstance(state, RSIState):
            return None
        entry = build.manifest.specialized.get(self.target)
        if entry is None:
            self._warn_once(build, "carries no specialized copy (build with --specialize)")
            return None
        from codegen.specialize import state_fingerprint

        if state_fingerprint(state, entry.sections) != entry.state_hash:
            logger.debug("%s: state differs from build %s's; generic", self.target, build.build_id)
            return None
        if entry.source_sha256 and _file_sha256(entry.source_file) != entry.source_sha256:
            self._warn_once(
                build,
                f"has a copy made from another version of {entry.source_file} (rebuild to "
                "specialize the current one)",
            )
            return None
        module = build.modules.get(entry.module)
        fn = getattr(module, entry.function, None) if module is not None else None
        if not callable(fn):
            self._warn_once(build, f"lacks module {entry.module} or its {entry.function}")
            return None
        return fn  # type: ignore[no-any-return]

    def _user_line_note(self, build: LoadedBuild, exc: BaseException) -> str:
        """Where in the user's source the copy's innermost line in ``exc``'s traceback is."""
        entry = build.manifest.specialized[self.target]
        line = 0
        for frame, lineno in traceback.walk_tb(exc.__traceback__):
            if Path(frame.f_code.co_filename).name == f"{entry.module}.py":
                line = lineno
        origin = entry.lines[line - 1] if 0 < line <= len(entry.lines) else 0
        at = f"{entry.module}.py:{line}" if line else f"{entry.module}.py"
        where = f" (from {entry.source_file}:{origin})" if origin else ""
        return f"raised in {self.target}'s specialized copy, build {build.build_id}: {at}{where}"

    def _warn_once(self, build: LoadedBuild, problem: str) -> None:
        with _warned_lock:
            if (build.build_id, self.target) in _warned:
                return
            _warned.add((build.build_id, self.target))
        logger.warning(
            "build %s %s for %s; calling the generic function", build.build_id, problem, self.target
        )


def _file_sha256(path: str) -> str:
    """sha256 of the file at ``path``; "" when it cannot be read (the copy is then stale)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""
