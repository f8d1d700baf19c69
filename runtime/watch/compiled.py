"""The compiled tier: compiled in worker processes while the pure tier serves, swapped in once
both tiers agree. The newest job wins: the compiled tier of an older change is never swapped
over a newer pure tier."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from codegen.errors import RSIError
from codegen.locking import project_lock
from runtime.live import TierMismatch, differential_check
from runtime.loader import LoadedBuild, load_build
from runtime.watch.context import Good, WatchContext
from runtime.watch.values import Outcome

__all__ = ["CompileJob", "CompileQueue", "compile_tier"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompileJob:
    """Compile ``good``, whose pure tier ``pure`` serves."""

    good: Good
    pure: LoadedBuild
    changed_at: float


class CompileQueue:
    """One pending job (a newer one replaces it) for the compile thread (:meth:`serve`)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: CompileJob | None = None
        self._closing = False

    def submit(self, job: CompileJob) -> None:
        """Compile ``job`` next, instead of any job not started yet."""
        with self._cond:
            self._pending = job
            self._cond.notify_all()

    def close(self) -> None:
        """End :meth:`serve` once the compile in flight (if any) is done; drop a pending job
        (its pure tier is committed: the next watcher compiles it)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def serve(self, ctx: WatchContext) -> None:
        """Compile jobs one at a time until :meth:`close` (run in its own thread)."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closing)
                if self._closing:
                    return
                job, self._pending = self._pending, None
            assert job is not None
            try:
                compile_tier(ctx, job)
            except TierMismatch as exc:
                ctx.record(Outcome.TIER_MISMATCH, str(exc), job.good.saved, None, job.changed_at)
            except RSIError as exc:
                ctx.record(Outcome.BUILD_FAILED, str(exc), job.good.saved, None, job.changed_at)


def compile_tier(ctx: WatchContext, job: CompileJob) -> None:
    """Compile ``job``, check it against its pure tier and swap it in unless superseded."""
    project = ctx.project
    good = job.good
    built = project.build_candidate(good.state, good.data, ctx.settings.compile)
    compiled = load_build(built.path, template_dir=project.template_dir)
    differential_check(job.pure, compiled)
    with ctx.swap_lock:
        if ctx.live.current() is not job.pure:
            logger.info("compiled tier %s superseded by a newer change", compiled.build_id)
            return
        ctx.lock.check()
        with project_lock(project.state_path, timeout_s=project.lock_timeout_s):
            limit = good.state.safety.history_limit
            project.ledger.commit(
                good.state.version, good.data, compiled.build_id, compiled.tier, limit=limit
            )
        ctx.live.slot.swap(compiled)
    ctx.swapped(compiled)
    message = f"v{good.state.version}: compiled tier {compiled.build_id} live"
    ctx.record(
        Outcome.COMPILED_LIVE,
        message,
        good.saved,
        compiled,
        job.changed_at,
        version=good.state.version,
    )
