"""The ``rsi`` command line. Parses arguments, calls the API, prints; nothing else.

Every user-fixable failure is an :class:`RSIError`, caught in :func:`main` and printed as
one line; the exit status is then 2. Heavy modules (codegen, the model) are imported by the
commands that use them, so ``rsi --help`` and ``rsi status`` start quickly.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codegen.errors import RSIError
from codegen.toolchain import BACKENDS, CompileSettings
from runtime.sandbox import DEFAULT_EVALUATE_TIMEOUT_S
from runtime.server import IDLE_S

if TYPE_CHECKING:
    from runtime.project import Project
    from runtime.server import ServerStatus

__all__ = [
    "main",
    "build_parser",
    "emit",
    "project_from",
    "settings_from",
    "add_compile_options",
    "int_in",
    "float_in",
    "SEED",
    "JOBS",
]

Handler = Callable[[argparse.Namespace], int]


DESCRIPTION = """\
Build a model from its state file (rsi_state.json) into compiled modules, swap builds in and
out, gate candidate states on evidence before promoting them, and keep a history of every
committed state so any of them can be restored exactly. Failures a user can fix print one line
starting with "rsi: error:" and exit with status 2.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rsi`` console script.

    The console script (``argv`` None) runs ``rsi build`` in the build server when one runs
    (:mod:`runtime.server`); a call with ``argv`` runs every command in this process.
    """
    code = _run(sys.argv[1:] if argv is None else argv, may_serve=argv is None)
    if argv is None:
        # The process exits next: spare it the final garbage collections, which walk every
        # object a build imported (about 0.3 s of a fresh `rsi build`).
        gc.freeze()
    return code


def _run(argv: Sequence[str], *, may_serve: bool = False) -> int:
    try:
        # Inside the try: Ctrl-C while the feature modules import is an interrupt too.
        args = build_parser(argv).parse_args(argv)
        _configure_logging(verbose=args.verbose)
        _check_common(args)
        handler: Handler = args.handler
        if may_serve and handler is _build and not args.no_server:
            served = _served(argv)
            if served is not None:
                return served
        return handler(args)
    except RSIError as exc:
        print(f"rsi: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Every command writes by rename under the project lock: an interrupt leaves the
        # old state, build and ledger, and the next command removes what it left half-done.
        print(
            "rsi: interrupted; state, builds and history are as they were "
            "(the next command removes any temp files)",
            file=sys.stderr,
        )
        return 130  # 128 + SIGINT
    except BrokenPipeError:
        # The reader went away (``rsi history | head -1``): stop quietly, as `cat` does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
    except OSError as exc:
        # A file the command had to write or read failed (full disk, immutable or missing
        # directory): one line naming it. Writes are renames, so nothing is half-written.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"rsi: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]``, refused in one line otherwise
    (an unbounded one overflowed SQLite and NumPy deep inside a command)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in [{low}, {high}]")
        return value

    return parse


def float_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``[low, high]``, refused in one line."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{value:g} is not in [{low:g}, {high:g}]")
        return value

    return parse


#: Seeds of splits, generators and searches: what NumPy's generators take.
SEED = int_in(0, 2**32 - 1)
#: Counts of parallel jobs and workers.
JOBS = int_in(1, 64)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser with every subcommand.

    Given the command line ``argv``, feature subcommands it does not name are listed (name
    and help) without importing their modules: ``rsi --help`` and ``rsi status`` stay quick.
    """
    parser = argparse.ArgumentParser(prog="rsi", description=DESCRIPTION)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state",
        type=str,  # a Path would turn '' into '.': checked and converted in _check_common
        default="rsi_state.json",
        help="state file; builds and history live beside it (default: ./rsi_state.json)",
    )
    common.add_argument(
        "--lock-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help=f"wait at most this long for the project lock (0 to {MAX_LOCK_TIMEOUT_S:g})",
    )
    common.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("build", parents=[common], help="render, check, compile and activate")
    add_compile_options(p)
    p.add_argument(
        "--specialize",
        action="append",
        default=[],
        metavar="MODULE:FUNCTION",
        help="an @rsi_optimized function to specialize into the build (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.add_argument(
        "--no-server",
        action="store_true",
        help="build in this process; use and start no build server (see `rsi server`)",
    )
    p.set_defaults(handler=_build)

    p = sub.add_parser(
        "server",
        help="the build server that keeps `rsi build` warm: status or stop",
        description="`rsi build` runs in a warm background process, the build server, so "
        "that it does not pay the code generator's imports and the compiler's start-up each "
        f"time. The first `rsi build` starts it; it exits after {IDLE_S / 60:g} minutes "
        "without a build. RSI_BUILD_SERVER=0 or `rsi build --no-server` builds "
        "without it.",
    )
    p.add_argument("action", choices=("status", "stop"))
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.set_defaults(handler=_server, verbose=False, state="rsi_state.json", lock_timeout=10.0)

    p = sub.add_parser("status", parents=[common], help="active build and history")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_status)

    p = sub.add_parser("rollback", parents=[common], help="restore a committed state")
    p.add_argument(
        "--to",
        type=int,
        default=None,
        metavar="VERSION",
        help="default: the version that was live before the active one",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_rollback)

    p = sub.add_parser("schema", parents=[common], help="print the state's JSON Schema")
    p.set_defaults(handler=_schema)

    p = sub.add_parser("diff", parents=[common], help="diff two builds' generated sources")
    p.add_argument("a", help="build id, unique prefix, or vN for state version N")
    p.add_argument("b")
    p.set_defaults(handler=_diff)

    p = sub.add_parser("gc", parents=[common], help="delete builds no committed state uses")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_gc)

    p = sub.add_parser(
        "promote",
        parents=[common],
        help="gate a candidate state against the active build; promote it or keep it aside",
        description="Validate CANDIDATE, enforce the safety policy, build it, run it in a "
        "sandbox, evaluate both builds, ask the gate, then commit and activate it or keep it "
        "in <state>.rejected.json. Exit status 0: promoted; 1: the incumbent was kept.",
    )
    p.add_argument("candidate", type=Path, help="the candidate state file")
    p.add_argument(
        "--require",
        choices=("better", "not-worse"),
        default="not-worse",
        help="better: promote only on a significant gain; not-worse (default): unless worse",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="bAbI directory (default: generated stories)",
    )
    p.add_argument("--seed", type=SEED, default=0, help="split seed (default 0)")
    p.add_argument(
        "--approve",
        action="append",
        default=[],
        metavar="PATH",
        help="approve changes to PATH (globs: 'scoring.*', '*'); repeatable",
    )
    add_compile_options(p)
    p.add_argument(
        "--timeout-s",
        type=float,
        default=DEFAULT_EVALUATE_TIMEOUT_S,
        help="limit on the candidate's first run, evidence and latency together; past it the "
        f"candidate is killed and rejected (default {DEFAULT_EVALUATE_TIMEOUT_S:g})",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.set_defaults(handler=_promote)

    p = sub.add_parser(
        "history",
        parents=[common],
        help="the gate's decisions, newest first",
        description="The gate's decisions, newest first, one line each, numbered. --show N "
        "prints decision N in full; --candidate N writes the candidate state it judged "
        "(a rejected edit is kept in the ledger, not only in <state>.rejected.json).",
    )
    p.add_argument("--limit", type=int_in(1, 1_000_000), default=20, help="how many (default 20)")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "--show",
        type=int_in(1, 2**62),
        metavar="N",
        help="decision N in full: every statistic and sample",
    )
    shown.add_argument(
        "--candidate",
        type=int_in(1, 2**62),
        metavar="N",
        help="the candidate state bytes decision N judged",
    )
    p.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="with --candidate: write FILE, not stdout"
    )
    p.add_argument("--json", action="store_true", help="one JSON list (object) on the last line")
    p.set_defaults(handler=_history)

    _register_extensions(sub, common, argv)
    return parser


def _register_extensions(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    argv: Sequence[str] | None,
) -> None:
    """Subcommands owned by other modules (evaluation, the loop, watch) register here."""
    from runtime.cli_extensions import register_all

    register_all(sub, common, argv)


MAX_LOCK_TIMEOUT_S = 86400.0


def _check_common(args: argparse.Namespace) -> None:
    """Refuse bad common options in one line; turn ``--state`` into a Path."""
    try:
        os.getcwd()
    except FileNotFoundError:
        raise RSIError("the current directory was deleted; cd to an existing one") from None
    raw = args.state
    if not raw.strip():
        raise RSIError(f"--state {raw!r}: empty path; give a state file such as rsi_state.json")
    args.state = Path(raw)
    timeout = args.lock_timeout
    if not (math.isfinite(timeout) and 0 <= timeout <= MAX_LOCK_TIMEOUT_S):
        raise RSIError(
            f"--lock-timeout {timeout:g}: give a number of seconds from 0 to {MAX_LOCK_TIMEOUT_S:g}"
        )


def add_compile_options(p: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--jobs``, as :func:`settings_from` reads them."""
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="default: $RSI_BACKEND or cython",
    )
    p.add_argument("--jobs", type=JOBS, default=2, help="modules compiled in parallel")


def settings_from(args: argparse.Namespace) -> CompileSettings:
    """Compile settings from ``--backend``/``--jobs``/``--specialize`` and ``$RSI_BACKEND``."""
    backend = args.backend or os.environ.get("RSI_BACKEND") or "cython"
    specialize = tuple(getattr(args, "specialize", None) or ())
    for known in BACKENDS:
        if backend == known:
            jobs = max(1, getattr(args, "jobs", 2))
            return CompileSettings(backend=known, jobs=jobs, specialize=specialize)
    given = f"--backend {backend!r}" if args.backend else f"RSI_BACKEND={backend!r}"
    raise RSIError(f"{given} is not one of {', '.join(BACKENDS)}")


def project_from(args: argparse.Namespace) -> Project:
    """The project named by ``--state``."""
    from runtime.project import Project

    return Project(args.state, lock_timeout_s=args.lock_timeout)


def emit(args: argparse.Namespace, summary: str, report: Any) -> int:
    """Print the human summary, then (with ``--json``) the report as one JSON line."""
    try:
        print(summary)
        if getattr(args, "json", False):
            print(json.dumps(_jsonable(report), sort_keys=True))
        if sys.stdout is not None:  # None: started with its stdout closed; print wrote nothing
            sys.stdout.flush()  # a closed pipe or a full disk fails the command, not its exit
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise RSIError(f"cannot write the output: {exc.strerror or exc}") from None
    return 0


def _jsonable(report: Any) -> Any:
    if is_dataclass(report) and not isinstance(report, type):
        return asdict(report)
    if isinstance(report, dict):
        return {key: _jsonable(value) for key, value in report.items()}
    if isinstance(report, list):
        return [_jsonable(value) for value in report]
    return report


def _build(args: argparse.Namespace) -> int:
    r = project_from(args).build(settings_from(args))
    summary = (
        f"build {r.build_id} ({r.tier}) of state v{r.state_version}: "
        f"{r.modules_compiled} compiled, {r.cache_hits} cached, {r.seconds:.2f} s"
    )
    if r.specialized:
        summary += f"\nspecialized user code: {', '.join(r.specialized)}"
    if r.new_build_of_committed:
        why = "templates, toolchain or tier"
        if r.specialized:
            why = "templates, toolchain, tier or specialized user code"
        summary += (
            f"\nnote: committed v{r.state_version} now has {len(r.version_builds)} builds "
            f"({why} changed): {', '.join(r.version_builds)}"
        )
    return emit(args, summary, r)


def _served(argv: Sequence[str]) -> int | None:
    """``rsi build`` run by the build server; None to build in this process."""
    from runtime.server import enabled, run_served

    return run_served(argv) if enabled() else None


def _server(args: argparse.Namespace) -> int:
    from runtime.server import server_status, stop_server

    if args.action == "stop":
        stopped = stop_server()
        lines = [
            f"build server {s.pid} stopped"
            if not s.running
            else f"build server {s.pid} takes no new build; it exits when its {s.running} "
            "running build(s) end"
            for s in stopped
        ]
        return emit(args, "\n".join(lines) or "no build server runs", {"stopped": stopped})
    servers = server_status()
    lines = [
        f"build server {s.pid}{_server_marker(s)}: {s.served} build(s) "
        f"served, {s.running} running, idle for {s.idle_s:.0f} s (it exits after "
        f"{IDLE_S:g} s idle)"
        for s in servers
    ]
    return emit(args, "\n".join(lines) or "no build server runs", {"servers": servers})


def _server_marker(status: ServerStatus) -> str:
    if status.stopping:
        return " (stopping: it exits when its running builds end)"
    return "" if status.current else " (older code)"


def _status(args: argparse.Namespace) -> int:
    # Not through Project: status imports no code generator or schema (it answers at once).
    from codegen.locking import check_state_path
    from runtime.ledger import Ledger, ledger_path
    from runtime.status import shown_manifest, status_of

    state_path = check_state_path(args.state, must_exist=False)
    r = status_of(state_path, Ledger(ledger_path(state_path)))
    if r.active_build is None:
        return emit(args, f"{args.state}: never built", r)
    if r.state_file_problem is not None:
        file = f"state file unreadable ({r.state_file_problem})"
    else:
        sync = "matches" if r.state_file_committed else "differs from every committed state"
        file = f"state file v{r.state_file_version}"
        if r.state_file_saved_as is not None:
            file += f" (saved as version {r.state_file_saved_as})"
        file += f" {sync}"
    builds = len(r.active_version_builds)
    rebuilt = (
        f" (build {r.active_version_builds.index(r.active_build) + 1} of {builds} of "
        f"v{r.state_version}: {', '.join(r.active_version_builds)})"
        if builds > 1 and r.active_build in r.active_version_builds
        else ""
    )
    target = f"v{r.rollback_target}" if r.rollback_target is not None else "none"
    summary = (
        f"active build {r.active_build} ({r.tier}) of state v{r.state_version}{rebuilt}; "
        f"{file}; history {r.history}; rollback target {target}"
    )
    manifest = shown_manifest(state_path.parent / "generated" / r.active_build)
    degraded = _degraded(manifest)
    for name, why in degraded.items():
        summary += f"\ndegraded: {name} runs as pure Python ({why})"
    specialized = _specialized(manifest)
    for target, what in specialized.items():
        summary += f"\nspecialized: {target} runs {what}"
    return emit(args, summary, {**asdict(r), "degraded": degraded, "specialized": specialized})


def _specialized(manifest: dict[str, Any] | None) -> dict[str, str]:
    """User functions a build carries specialized copies of: the copy and what it baked in."""
    found: dict[str, str] = {}
    for target, entry in (manifest or {}).get("specialized", {}).items():
        source = f"; from {entry['source_file']}" if entry.get("source_file") else ""
        sections = ", ".join(entry.get("sections", ()))
        found[target] = f"{entry.get('module')} (state sections {sections}{source})"
    return found


def _degraded(manifest: dict[str, Any] | None) -> dict[str, str]:
    """Modules of a build that fell back to pure Python, with their last compiler diagnostic."""
    found: dict[str, str] = {}
    modules = (manifest or {}).get("modules", {})
    for name in (manifest or {}).get("degraded", ()):
        attempts = modules.get(name, {}).get("attempts", ())
        failed = [a for a in attempts if a.get("outcome") == "failed"]
        last = failed[-1].get("diagnostic") if failed else "no diagnostic"
        where = f" [{failed[-1]['origin']}]" if failed and failed[-1].get("origin") else ""
        found[name] = f"{len(failed)} failed attempts; {last}{where}"
    return found


def _rollback(args: argparse.Namespace) -> int:
    r = project_from(args).rollback(args.to)
    how = "rebuilt" if r.compiled else "no compiler run"
    if r.new_build:
        how = "recorded build was gone; rebuilt as a new build of this version"
    summary = f"rolled back to state v{r.state_version}, build {r.build_id} ({how})"
    if r.kept_uncommitted:
        summary += f"\nkept the uncommitted state file content as {r.kept_uncommitted}"
    return emit(args, summary, r)


def _gc(args: argparse.Namespace) -> int:
    r = project_from(args).gc()
    summary = f"removed {len(r.removed_builds)} builds, {r.bytes_freed / 1e6:.1f} MB freed"
    if r.bad_builds:
        plural = "s" if len(r.bad_builds) > 1 else ""
        summary += f"; skipped {len(r.bad_builds)} bad build{plural}: " + "; ".join(r.bad_builds)
    return emit(args, summary, r)


def _schema(args: argparse.Namespace) -> int:
    from codegen.state import RSIState

    print(json.dumps(RSIState.model_json_schema(), indent=2, sort_keys=True))
    return 0


def _diff(args: argparse.Namespace) -> int:
    sys.stdout.write(project_from(args).diff(args.a, args.b))
    return 0


def _promote(args: argparse.Namespace) -> int:
    from codegen.state import read_state_file
    from runtime.promote import format_p, p_value, promote

    timeout = args.timeout_s
    if not (math.isfinite(timeout) and 1 <= timeout <= MAX_LOCK_TIMEOUT_S):
        raise RSIError(
            f"--timeout-s {timeout:g}: give a number of seconds from 1 to {MAX_LOCK_TIMEOUT_S:g}"
        )
    r = promote(
        project_from(args),
        read_state_file(args.candidate),
        settings=settings_from(args),
        require=args.require,
        data=args.data,
        approve=tuple(args.approve),
        seed=args.seed,
        source=args.candidate.name,
        evaluate_timeout_s=timeout,
    )
    d = r.decision
    p = p_value(d.stats, d.require)
    if r.promoted and r.same_build:
        was = f"v{r.incumbent_version}" if r.incumbent_version is not None else "the incumbent"
        summary = f"promoted v{r.state_version}: same build {r.build_id} as {was}, no code changed"
    elif r.promoted:
        summary = f"promoted v{r.state_version} (build {r.build_id}) over build {d.incumbent}"
    else:
        summary = f"{d.verdict}: kept build {d.incumbent}; candidate kept in {r.rejected_path}"
    print(f"{summary}; {format_p(p)}; {d.reason}")
    for line in r.waived:
        print(f"waived: {line}")
    for line in r.warnings:
        print(f"rsi: warning: {line}", file=sys.stderr)
    if args.json:
        report = {
            "promoted": r.promoted,
            "verdict": str(d.verdict),
            "require": d.require,
            "candidate": d.candidate,
            "incumbent": d.incumbent,
            "p_value": p,
            "reason": d.reason,
            "stats": dict(d.stats),
            "state_version": r.state_version,
            "rejected_path": str(r.rejected_path) if r.rejected_path else None,
            "approved": list(r.approved),
            "waived": list(r.waived),
            "cached": list(r.cached),
            "seconds": dict(r.seconds),
            "decision_id": r.decision_id,
            "same_build": r.same_build,
            "warnings": list(r.warnings),
        }
        print(json.dumps(report, sort_keys=True))
    return 0 if r.promoted else 1


def _history(args: argparse.Namespace) -> int:
    import time

    from runtime.promote import format_p, p_value

    if args.output is not None and args.candidate is None:
        raise RSIError(f"--output {args.output}: only with --candidate N (what to write)")
    if args.candidate is not None:
        return _history_candidate(args)
    if args.show is not None:
        return _history_show(args)
    if args.limit < 1:
        raise RSIError(f"--limit {args.limit}: give a number of decisions, 1 or more")
    records = project_from(args).ledger.decisions(args.limit)
    if not records:
        print(f"{args.state}: no gate decisions yet")
    for d in records:
        p = p_value(d.stats, d.require)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.at))
        committed = f"v{d.committed_version}" if d.committed_version is not None else "-"
        print(
            f"{d.id:>4}  {when}  {d.verdict:<15}  v{d.candidate_version} {d.candidate} over "
            f"{d.incumbent}  "
            f"committed {committed}  {d.require}  "
            f"{format_p(p)}  {d.reason}"
        )
    if args.json:
        print(json.dumps([asdict(d) for d in records], sort_keys=True))
    return 0


def _history_show(args: argparse.Namespace) -> int:
    import time

    d = project_from(args).ledger.decision(args.show)
    when = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(d.at))
    committed = f"v{d.committed_version}" if d.committed_version is not None else "-"
    lines = [
        f"decision {d.id}  {when}",
        f"verdict      {d.verdict} ({d.require})",
        f"reason       {d.reason}",
        f"candidate    v{d.candidate_version} build {d.candidate} sha256 {d.candidate_sha256}",
        f"incumbent    build {d.incumbent}",
        f"committed    {committed}",
        *(f"waived       {line}" for line in d.waived),
        *(f"stat         {key} = {d.stats[key]}" for key in sorted(d.stats)),
    ]
    for build, samples in sorted((d.latency or {}).items()):
        lines.append(f"latency      {build}: " + " ".join(f"{x:.6f}" for x in samples))
    lines.append(f"candidate bytes: rsi history --candidate {d.id} -o FILE")
    print("\n".join(lines))
    if args.json:
        print(json.dumps(asdict(d), sort_keys=True))
    return 0


def _history_candidate(args: argparse.Namespace) -> int:
    from codegen.fsutil import atomic_write

    project = project_from(args)
    if args.output is not None and args.output.resolve() == project.state_path.resolve():
        raise RSIError(
            f"-o {args.output}: that is the project's state file; write the candidate "
            "elsewhere and `rsi promote` it (promote checks it and keeps the state in history)"
        )
    data = project.ledger.decision_candidate(args.candidate)
    if args.output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        atomic_write(args.output, data, mode=0o600)  # as private as the state it was to replace
        print(f"wrote the candidate of decision {args.candidate} to {args.output}")
    return 0


class _CliFormatter(logging.Formatter):
    """``rsi: warning: message``, the form of the CLI's own error lines; with ``-v``,
    ``rsi: info: <module>: message``."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return f"rsi: {record.levelname.lower()}: {record.getMessage()}"
        # -v: progress lines name the module they come from.
        return f"rsi: {record.levelname.lower()}: {record.name}: {record.getMessage()}"


def _configure_logging(*, verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_CliFormatter())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


if __name__ == "__main__":
    sys.exit(main())
