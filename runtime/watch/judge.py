"""One change -> one outcome: validate, build the pure tier, gate, then go live or roll back.

:func:`judge` takes what the watcher knows (:class:`Watched`, a frozen value) and returns
what it knows after the change; the steps are described in :mod:`runtime.watch`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from codegen.build import CACHE_DIR, RENDER_MEMO_DIR, BuildResult, build_in_worker
from codegen.errors import RSIError
from codegen.fsutil import atomic_write
from codegen.locking import project_lock
from codegen.policy import check_policy
from codegen.render import render_sources, templates_digest
from codegen.state import RSIState, dump_state, parse_state, read_state_file, state_sha256
from codegen.toolchain import CompileSettings, content_key
from runtime.evidence import data_fingerprint, gather
from runtime.gate import Decision, Evidence, decide
from runtime.ledger import CommitRequest, check_version_jump
from runtime.loader import LoadedBuild, load_build
from runtime.promote import keep_rejected, promote, rejected_path
from runtime.watch.changes import Change, ChangeFeed
from runtime.watch.compiled import CompileJob, CompileQueue
from runtime.watch.context import Good, WatchContext
from runtime.watch.screen import Screen, basis, collect, screened_evidence
from runtime.watch.values import Outcome

__all__ = ["Watched", "judge", "start", "warm_up"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Watched:
    """What the watcher knows between changes."""

    judged: str  # content key (state bytes and templates) of the last content judged
    good: Good  # the last good state: it serves
    screen: Screen | None  # raw expert evidence, if collected for the current structure
    gone: bool = False  # the state file was missing at the last look (said once)
    #: The template digest whose change the gate rejected, while the dir still holds it.
    rejected_templates: str | None = None


def start(ctx: WatchContext) -> Watched:
    """The last good state is the ledger's active one; collect the screener's evidence."""
    good = _incumbent(ctx)
    found = _collect(ctx, ctx.live.current(), good) if ctx.settings.screen else None
    return Watched(_key(ctx, good.data, good.templates), good, found)


def warm_up(ctx: WatchContext, watched: Watched) -> None:
    """Build the last good state's pure tier in the build worker (a lookup when it is built):
    the worker's first build in a process (the codegen digest, the toolchain's fingerprint,
    the templates compiled: about a second) is then not the first edit's. An error is left
    to the first judgement, which reports it."""
    try:
        _pure_build(ctx, watched.good)
    except RSIError as exc:
        logger.debug("build worker warm-up: %s", exc)


def judge(
    ctx: WatchContext, feed: ChangeFeed, compiler: CompileQueue, watched: Watched, change: Change
) -> Watched:
    """Judge the state file's content unless its hash equals the last one judged."""
    path = ctx.project.state_path
    ctx.lock.state_file.follow(path)  # an editor's save by rename made a new file
    try:
        saved = read_state_file(path)
    except RSIError as exc:
        if not path.exists():
            # Mid-save (backup-and-rename: its creation event follows), or deleted. Said
            # once, not at every rescan; and once more when it is back.
            if not watched.gone:
                serving = ctx.live.current().build_id
                logger.info("%s is gone; build %s keeps serving", path.name, serving)
            return replace(watched, gone=True)
        watched = _back(watched, path)
        key = content_key({"unreadable": str(exc)})
        if key != watched.judged:
            ctx.record(Outcome.REFUSED, str(exc), b"", None, change.at)
        return replace(watched, judged=key)
    watched = _back(watched, path)
    templates = templates_digest(ctx.template_dir)  # read once: the key names what is judged
    key = _key(ctx, saved, templates)
    if key == watched.judged:
        logger.debug("content unchanged; skipped")
        return watched
    if key == _key(ctx, watched.good.data, watched.good.templates):
        _log_last_good(ctx, watched)
        return replace(watched, judged=key)
    followed = _follow_active(ctx, watched, change)
    if followed is not None:
        watched = followed
        if saved == watched.good.data:
            return replace(watched, judged=key)  # the file holds what another command activated
    try:
        return _candidate(ctx, feed, compiler, watched, saved, key, templates, change)
    except RSIError as exc:
        ctx.record(Outcome.BUILD_FAILED, str(exc), saved, None, change.at)
        return replace(watched, judged=key)


def _candidate(
    ctx: WatchContext,
    feed: ChangeFeed,
    compiler: CompileQueue,
    watched: Watched,
    saved: bytes,
    key: str,
    templates: str,
    change: Change,
) -> Watched:
    """Validate ``saved``, renumber it when its version is not newer, and gate it with the
    templates whose digest is ``templates``."""
    name = ctx.project.state_path.name
    try:
        candidate = parse_state(saved, name)
    except RSIError as exc:
        if not feed.settles(ctx.settings):
            logger.debug("invalid content superseded by a newer write: %s", exc)
            return watched  # judge the newer write
        ctx.record(Outcome.REFUSED, str(exc), saved, None, change.at)
        return replace(watched, judged=key)
    if templates == watched.rejected_templates and _unversioned(candidate) != _unversioned(
        watched.good.state
    ):
        # Judged now, the edit would take the blame for the rejected templates.
        message = (
            f"{name}: not judged while {ctx.template_dir} holds the template change the gate "
            "rejected; fix or revert it, and this edit is judged with it"
        )
        ctx.record(Outcome.REFUSED, message, saved, None, change.at)
        return replace(watched, judged=key)
    data = saved
    versions = ctx.project.ledger.versions()
    newest = versions[-1] if versions else 0
    try:  # a jump that would leave no next version is refused like any invalid save
        check_version_jump(name, candidate.version, newest)
    except RSIError as exc:
        ctx.record(Outcome.REFUSED, str(exc), saved, None, change.at)
        return replace(watched, judged=key)
    if saved != watched.good.data and candidate.version <= newest:
        if _unversioned(candidate) != _unversioned(watched.good.state):
            # A person saved an edit without bumping "version": it is committed as the next
            # one, and the file is left as saved (rewriting it would fight their editor).
            data = dump_state(candidate.model_copy(update={"version": newest + 1}))
            candidate = parse_state(data, name)
        elif templates == watched.good.templates:
            _log_last_good(ctx, watched)  # saved under an older version number
            return replace(watched, judged=key)
        else:  # the last good state with edited templates
            data, candidate = watched.good.data, watched.good.state
    good = Good(data, candidate, templates, saved)
    if templates != watched.good.templates:
        return _evaluated(ctx, compiler, watched, good, change)
    found = watched.screen
    if ctx.settings.screen and basis(candidate, templates) == basis(watched.good.state, templates):
        if found is None or found.basis != basis(candidate, templates):
            # The structure changed with the last good edit: recollect on the serving build.
            found = _collect(ctx, ctx.live.current(), watched.good)
        return _screened(ctx, compiler, replace(watched, screen=found), good, change)
    return _promoted(ctx, compiler, watched, good, change)


def _screened(
    ctx: WatchContext, compiler: CompileQueue, watched: Watched, good: Good, change: Change
) -> Watched:
    """Gate on raw evidence with the screener, then make the pure tier live."""
    built_at = time.monotonic()
    pure = _pure(ctx, good)
    gate_at = time.monotonic()
    assert watched.screen is not None
    incumbent = screened_evidence(watched.screen, watched.good.state, ctx.live.current().build_id)
    candidate = screened_evidence(watched.screen, good.state, pure.build_id)
    decision = decide(incumbent, candidate, require="not-worse", settings=ctx.settings.gate)
    waived = check_policy(watched.good.state, good.state, waive=True).waived
    logger.info(
        "v%d: debounce %.3f s, pure build %.3f s, screen and gate %.3f s",
        good.state.version,
        built_at - change.at,
        gate_at - built_at,
        time.monotonic() - gate_at,
    )
    return _settle(ctx, compiler, watched, good, pure, decision, waived, "screen", change)


def _promoted(
    ctx: WatchContext, compiler: CompileQueue, watched: Watched, good: Good, change: Change
) -> Watched:
    """Any other state edit: :func:`runtime.promote.promote` gates and commits it."""
    ctx.lock.check()
    report = promote(
        ctx.project,
        good.data,
        settings=_pure_settings(ctx.settings.compile),
        require="not-worse",
        data=ctx.settings.data,
        waive_policy=True,
        gate=ctx.settings.gate,
        seed=ctx.settings.seed,
        source=ctx.project.state_path.name,
        saved=good.saved,
    )
    _log_waived(report.waived)
    if report.promoted:
        path = ctx.project.generated_dir / report.build_id
        pure = load_build(path, template_dir=ctx.project.template_dir)
        with ctx.swap_lock:
            ctx.live.slot.swap(pure)
        _went_live(ctx, compiler, good, pure, "promote", report.waived, change, time.monotonic())
        return replace(watched, judged=_key(ctx, good.saved, good.templates), good=good)
    if good.saved != good.data:
        keep_rejected(ctx.project.state_path, good.saved)  # the edit as the person saved it
    return _roll_back(ctx, watched, good, report.decision, "promote", report.waived, change)


def _evaluated(
    ctx: WatchContext, compiler: CompileQueue, watched: Watched, good: Good, change: Change
) -> Watched:
    """A template edit: evaluate both builds on the gate's splits."""
    pure = _pure(ctx, good)
    incumbent = _cached_gather(ctx, ctx.live.current())
    candidate = _cached_gather(ctx, pure)
    decision = decide(incumbent, candidate, require="not-worse", settings=ctx.settings.gate)
    waived = check_policy(watched.good.state, good.state, waive=True).waived
    return _settle(ctx, compiler, watched, good, pure, decision, waived, "evaluate", change)


def _settle(
    ctx: WatchContext,
    compiler: CompileQueue,
    watched: Watched,
    good: Good,
    pure: LoadedBuild,
    decision: Decision,
    waived: tuple[str, ...],
    gate: str,
    change: Change,
) -> Watched:
    """Go live and commit, or keep the candidate and roll back; record the decision.

    A promoted build goes live before the ledger's transactions (each an fsync): the gate
    has passed, and a kill before the commit leaves the ledger on the last good state with
    the edit still in the file, judged again at the next start. A ledger that refuses the
    commit swaps the last good build back.
    """
    _log_waived(waived)
    project = ctx.project
    if not decision.promoted:
        _record_decision(ctx, good, decision, waived)
        if good.data == watched.good.data:  # only the templates changed: no state to restore
            return _templates_rejected(ctx, watched, good, decision, gate, change)
        keep_rejected(project.state_path, good.saved)
        return _roll_back(ctx, watched, good, decision, gate, waived, change)
    with ctx.swap_lock:
        active = project.ledger.active()
        if active is not None and active.build_id != ctx.live.current().build_id:
            # `rsi rollback` (or promote, build) activated a build while this was judged:
            # that command wins; the next look follows it and judges what is left.
            logger.info(
                "%s: not taken: build %s was activated meanwhile by another command",
                _label(ctx, good),
                active.build_id,
            )
            return watched
        previous = ctx.live.slot.swap(pure)
    live_at = time.monotonic()
    try:
        limit = good.state.safety.history_limit
        _record_decision(
            ctx,
            good,
            decision,
            waived,
            CommitRequest(pure.build_id, pure.tier, limit, saved=good.saved),
        )
    except RSIError:
        with ctx.swap_lock:
            ctx.live.slot.swap(previous)
        raise
    _went_live(ctx, compiler, good, pure, gate, waived, change, live_at)
    return replace(watched, judged=_key(ctx, good.saved, good.templates), good=good)


def _went_live(
    ctx: WatchContext,
    compiler: CompileQueue,
    good: Good,
    pure: LoadedBuild,
    gate: str,
    waived: tuple[str, ...],
    change: Change,
    live_at: float,
) -> None:
    """Report a pure tier serving since ``live_at``; queue its compiled tier (latest wins)."""
    ctx.swapped(pure)
    message = f"{_label(ctx, good)}: pure tier {pure.build_id} live (gate: {gate})"
    ctx.record(
        Outcome.PURE_LIVE,
        message,
        good.saved,
        pure,
        change.at,
        version=good.state.version,
        gate=gate,
        waived=waived,
        at=live_at,
    )
    if ctx.settings.compile.backend != "python":
        compiler.submit(CompileJob(good, pure, change.at))


def _roll_back(
    ctx: WatchContext,
    watched: Watched,
    good: Good,
    decision: Decision,
    gate: str,
    waived: tuple[str, ...],
    change: Change,
) -> Watched:
    """Restore the state file unless a newer save replaced it."""
    path = ctx.project.state_path
    holds = good.saved
    last_good = watched.good
    with project_lock(path, timeout_s=ctx.project.lock_timeout_s):
        if _read_or_none(path) == good.saved:  # a newer save is the person's: keep it
            atomic_write(path, last_good.data)
            holds = last_good.data
    message = (
        f"{_label(ctx, good)} not promoted ({decision.verdict}: {decision.reason}); "
        f"{path.name} restored to v{last_good.state.version}, the edit kept in "
        f"{rejected_path(path).name}"
    )
    if good.templates != last_good.templates:
        message += f"; the templates in {ctx.template_dir} changed too and were judged with it"
    ctx.record(
        Outcome.ROLLED_BACK,
        message,
        good.saved,
        None,
        change.at,
        version=good.state.version,
        gate=gate,
        waived=waived,
    )
    return replace(watched, judged=_key(ctx, holds, good.templates))


def _templates_rejected(
    ctx: WatchContext,
    watched: Watched,
    good: Good,
    decision: Decision,
    gate: str,
    change: Change,
) -> Watched:
    """A template edit the gate refused: the last good build keeps serving; the state file
    and its rejected copy are left alone, and so are the templates, for the person to fix."""
    message = (
        f"template change not promoted ({decision.verdict}: {decision.reason}); build "
        f"{ctx.live.current().build_id} keeps serving; {ctx.template_dir} is left as edited: "
        "fix or revert it"
    )
    ctx.record(
        Outcome.ROLLED_BACK,
        message,
        good.saved,
        None,
        change.at,
        version=good.state.version,
        gate=gate,
    )
    judged = _key(ctx, good.saved, good.templates)
    return replace(watched, judged=judged, rejected_templates=good.templates)


def _follow_active(ctx: WatchContext, watched: Watched, change: Change) -> Watched | None:
    """Serve the project's active build if another command (``rsi rollback``, ``rsi
    promote``, ``rsi build``) activated one meanwhile; return what is known then.

    The active build becomes the last good state, so the next edit is gated against it
    and a rejected edit is restored to it.
    """
    active = ctx.project.ledger.active()
    if active is None or active.version == watched.good.state.version:
        return None
    build = ctx.project.load_active()
    with ctx.swap_lock:
        ctx.live.slot.swap(build)
    good = _incumbent(ctx)  # after the swap: its templates are judged against this build
    ctx.swapped(build)
    message = (
        f"v{active.version}: build {build.build_id} ({build.tier}) activated by another "
        "command is served and is the last good state"
    )
    ctx.record(Outcome.FOLLOWED, message, good.data, build, change.at)
    return replace(watched, good=good)


def _collect(ctx: WatchContext, build: LoadedBuild, good: Good) -> Screen:
    settings = ctx.settings
    return collect(build, good.state, good.templates, data=settings.data, seed=settings.seed)


def _record_decision(
    ctx: WatchContext,
    good: Good,
    decision: Decision,
    waived: tuple[str, ...],
    commit_as: CommitRequest | None = None,
) -> int:
    """Record the decision; with ``commit_as``, commit the state in the same transaction."""
    project = ctx.project
    ctx.lock.check()
    with project_lock(project.state_path, timeout_s=project.lock_timeout_s):
        return project.ledger.record_decision(
            decision,
            candidate_data=good.data,
            candidate_version=good.state.version,
            waived=waived,
            commit_as=commit_as,
        )


def _pure(ctx: WatchContext, good: Good) -> LoadedBuild:
    """Build the pure tier in the warm build worker (render, checks, publish): this
    interpreter, whose threads serve, only imports the published modules."""
    built = _pure_build(ctx, good)
    return load_build(built.path, template_dir=ctx.project.template_dir)


def _pure_build(ctx: WatchContext, good: Good) -> BuildResult:
    project = ctx.project
    settings = _pure_settings(ctx.settings.compile)
    return build_in_worker(
        good.state, good.data, settings, project.generated_dir, project.template_dir
    )


def _cached_gather(ctx: WatchContext, build: LoadedBuild) -> Evidence:
    ledger = ctx.project.ledger
    data, seed = ctx.settings.data, ctx.settings.seed
    ctx.lock.check()  # a deleted .rsi: not even a read, which would create the ledger again
    found = ledger.evidence(build.build_id, seed, data_fingerprint(data, seed))
    if found is not None:
        return found
    measured = gather(build, data=data, seed=seed)
    ctx.lock.check()
    ledger.record_evidence(measured)
    return measured


def _incumbent(ctx: WatchContext) -> Good:
    active = ctx.project.ledger.active()
    assert active is not None  # LiveProject loaded it
    record = ctx.project.ledger.state(active.version)
    state = parse_state(record.data, f"history version {record.version}")
    return Good(record.data, state, _templates_served(ctx, state), record.data)


def _templates_served(ctx: WatchContext, state: RSIState) -> str:
    """The template digest the serving build stands for: the current one, unless the current
    templates render ``state`` into other sources than the build's (edited while no watcher
    ran, or broken): then a digest no template dir has, so the first look judges them."""
    current = templates_digest(ctx.template_dir)
    build = ctx.live.current()
    try:
        memo = ctx.project.generated_dir / CACHE_DIR / RENDER_MEMO_DIR
        rendered = render_sources(state, ctx.template_dir, memo)
    except RSIError:
        return f"not {current}"
    served = {name: (build.path / f"{name}.py").read_text() for name in build.manifest.modules}
    return current if rendered == served else f"not {current}"


def _key(ctx: WatchContext, data: bytes, templates: str | None = None) -> str:
    digest = templates if templates is not None else templates_digest(ctx.template_dir)
    return content_key({"state": state_sha256(data), "templates": digest})


def _label(ctx: WatchContext, good: Good) -> str:
    """``v<committed version>``, naming the version saved when it was renumbered."""
    saved = parse_state(good.saved, ctx.project.state_path.name).version
    if saved == good.state.version:
        return f"v{good.state.version}"
    return f"v{good.state.version} (saved as version {saved})"


def _unversioned(state: RSIState) -> dict[str, object]:
    return state.model_dump(mode="json", exclude={"version"})


def _log_last_good(ctx: WatchContext, watched: Watched) -> None:
    logger.info(
        "%s and the templates are the last good state (v%d) again; build %s serving",
        ctx.project.state_path.name,
        watched.good.state.version,
        ctx.live.current().build_id,
    )


def _pure_settings(settings: CompileSettings) -> CompileSettings:
    return replace(settings, backend="python")


def _log_waived(waived: tuple[str, ...]) -> None:
    logger.info(
        "policy waived for a person's edit (step bound and approval list): %s",
        "; ".join(waived) if waived else "nothing to waive",
    )


def _back(watched: Watched, path: Path) -> Watched:
    """``watched`` with the state file present again (said once when it had been gone)."""
    if not watched.gone:
        return watched
    logger.info("%s is back", path.name)
    return replace(watched, gone=False)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
