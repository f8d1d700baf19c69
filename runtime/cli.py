"""The ``rsi`` command line. Parses arguments, calls the API, prints; nothing else.

Every user-fixable failure is an :class:`RSIError`, caught in :func:`main` and printed as
one line; the exit status is then 2. Heavy modules (codegen, the model) are imported by the
commands that use them, so ``rsi --help`` and ``rsi status`` start quickly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codegen.errors import RSIError
from codegen.toolchain import BACKENDS, CompileSettings

if TYPE_CHECKING:
    from runtime.project import Project

__all__ = ["main", "build_parser", "emit", "project_from", "settings_from"]

Handler = Callable[[argparse.Namespace], int]

DESCRIPTION = """\
Build a model from its state file (rsi_state.json) into compiled modules, swap builds in and
out, and keep a history of every committed state so any of them can be restored exactly.
Failures a user can fix print one line starting with "rsi: error:" and exit with status 2.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rsi`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args)
    except RSIError as exc:
        print(f"rsi: error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="rsi", description=DESCRIPTION)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state",
        type=Path,
        default=Path("rsi_state.json"),
        help="state file; builds and history live beside it (default: ./rsi_state.json)",
    )
    common.add_argument("--lock-timeout", type=float, default=10.0, metavar="SECONDS")
    common.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("build", parents=[common], help="render, check, compile and activate")
    p.add_argument(
        "--backend", choices=BACKENDS, default=None, help="default: $RSI_BACKEND or cython"
    )
    p.add_argument("--jobs", type=int, default=2, help="modules compiled in parallel")
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.set_defaults(handler=_build)

    p = sub.add_parser("status", parents=[common], help="active build and history")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_status)

    p = sub.add_parser("rollback", parents=[common], help="restore a committed state")
    p.add_argument(
        "--to",
        type=int,
        default=None,
        metavar="VERSION",
        help="default: the committed version before the active one",
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

    _register_extensions(sub, common)
    return parser


def _register_extensions(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Subcommands owned by other modules (evaluation, tuning) register themselves here."""
    from runtime import cli_extensions

    for register in cli_extensions.REGISTRARS:
        register(sub, common)


def settings_from(args: argparse.Namespace) -> CompileSettings:
    """Compile settings from ``--backend``/``--jobs`` and ``$RSI_BACKEND``."""
    backend = args.backend or os.environ.get("RSI_BACKEND") or "cython"
    for known in BACKENDS:
        if backend == known:
            return CompileSettings(backend=known, jobs=max(1, getattr(args, "jobs", 2)))
    raise RSIError(f"RSI_BACKEND={backend!r} is not one of {', '.join(BACKENDS)}")


def project_from(args: argparse.Namespace) -> Project:
    """The project named by ``--state``."""
    from runtime.project import Project

    return Project(args.state, lock_timeout_s=args.lock_timeout)


def emit(args: argparse.Namespace, summary: str, report: Any) -> int:
    """Print the human summary, then (with ``--json``) the report as one JSON line."""
    print(summary)
    if getattr(args, "json", False):
        print(json.dumps(report if isinstance(report, dict) else asdict(report), sort_keys=True))
    return 0


def _build(args: argparse.Namespace) -> int:
    r = project_from(args).build(settings_from(args))
    return emit(
        args,
        f"build {r.build_id} ({r.tier}) of state v{r.state_version}: "
        f"{r.modules_compiled} compiled, {r.cache_hits} cached, {r.seconds:.2f} s",
        r,
    )


def _status(args: argparse.Namespace) -> int:
    r = project_from(args).status()
    sync = "matches" if r.state_file_committed else "differs from every committed state"
    summary = (
        f"{args.state}: never built"
        if r.active_build is None
        else f"active build {r.active_build} ({r.tier}) of state v{r.state_version}; "
        f"state file v{r.state_file_version} {sync}; history {r.history}"
    )
    return emit(args, summary, r)


def _rollback(args: argparse.Namespace) -> int:
    r = project_from(args).rollback(args.to)
    how = "rebuilt" if r.compiled else "no compiler run"
    return emit(args, f"rolled back to state v{r.state_version}, build {r.build_id} ({how})", r)


def _gc(args: argparse.Namespace) -> int:
    r = project_from(args).gc()
    return emit(
        args, f"removed {len(r.removed_builds)} builds, {r.bytes_freed / 1e6:.1f} MB freed", r
    )


def _schema(args: argparse.Namespace) -> int:
    from codegen.state import RSIState

    print(json.dumps(RSIState.model_json_schema(), indent=2, sort_keys=True))
    return 0


def _diff(args: argparse.Namespace) -> int:
    sys.stdout.write(project_from(args).diff(args.a, args.b))
    return 0


if __name__ == "__main__":
    sys.exit(main())
