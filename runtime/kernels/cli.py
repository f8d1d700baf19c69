"""``rsi tune kernels``: autotune the attention kernels and record the winners in the state."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from codegen.errors import StateError
from codegen.locking import project_lock
from runtime.cli import add_compile_options, int_in

if TYPE_CHECKING:
    from runtime.kernels.tune import TuneReport

__all__ = ["register"]

#: ``architecture.attention`` values (the schema's enum, spelled out so that registering
#: this subcommand imports no pydantic; a test checks the two agree).
MECHANISMS: tuple[str, ...] = (
    "sdpa",
    "multihead",
    "linear",
    "flash",
    "local_global",
    "moe",
    "hyperbolic",
    "differential",
    "mamba",
)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``rsi tune kernels`` (``tune`` takes a target so other tuners can join it)."""
    tune = sub.add_parser("tune", help="autotune generated code on this machine")
    targets = tune.add_subparsers(required=True, metavar="TARGET")
    p = targets.add_parser(
        "kernels", parents=[common], help="time the attention kernel variants, keep the fastest"
    )
    p.add_argument(
        "--mechanism",
        action="append",
        choices=MECHANISMS,
        help="tune only these (repeatable; default: all)",
    )
    p.add_argument(
        "--rows", type=int_in(1, 1_000_000), default=None, help="sequence length timed (default: N)"
    )
    p.add_argument(
        "--repeats", type=int_in(1, 10_000), default=25, help="timed calls per candidate"
    )
    add_compile_options(p)
    p.add_argument("--dry-run", action="store_true", help="measure but leave the state as is")
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.set_defaults(handler=_tune_kernels)


def _tune_kernels(args: argparse.Namespace) -> int:
    # Imported here: `rsi --help` and `rsi status` must not pay for NumPy and codegen.
    from codegen.state import AttentionMechanism, load_state, save_state
    from runtime.cli import settings_from
    from runtime.kernels.tune import TuneSettings, tune_kernels

    path: Path = args.state
    if args.repeats < 1 or (args.rows is not None and args.rows < 1):
        raise StateError("--repeats and --rows must be positive")
    state = load_state(path)
    mechanisms = tuple(AttentionMechanism(m) for m in args.mechanism or [])
    settings = TuneSettings(
        cache_dir=path.parent / "generated" / ".cache",
        compile=settings_from(args),
        mechanisms=mechanisms or tuple(AttentionMechanism),
        rows=args.rows,
        repeats=args.repeats,
    )
    report = tune_kernels(state, settings)
    if report.changed and not args.dry_run:
        with project_lock(path, timeout_s=args.lock_timeout):
            if load_state(path) != state:
                raise StateError(f"{path.name} changed while tuning; run the tuner again")
            save_state(path, report.state, lock_timeout_s=args.lock_timeout)
    _print(report, saved=report.changed and not args.dry_run)
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    return 0


def _print(report: TuneReport, *, saved: bool) -> None:
    for mech in report.mechanisms:
        cells = []
        for m in mech.measurements:
            label = f"{m.config.tile}x{m.config.unroll}x{m.config.width}"
            value = "inf" if m.error else f"{m.median_us:.1f}us"
            cells.append(f"{label}={value}{'*' if m.config == mech.winner else ''}")
        print(f"{mech.mechanism.value:13s} {' '.join(cells)}")
    for mechanism, config, error in report.failures:
        print(f"failed: {mechanism.value} tile={config.tile} unroll={config.unroll}: {error}")
    what = "state updated" if saved else "state unchanged"
    print(f"{report.measured} measured, rest cached; {what} (machine {report.fingerprint[:12]})")
