"""``rsi gate calibrate``: measure the gate's error rates on the state's own builds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from codegen.state import load_state
from codegen.toolchain import BACKENDS
from runtime.babi.data import data_files
from runtime.calibrate import CalibrationReport, CalibrationSettings, calibrate
from runtime.cli import SEED
from runtime.gate import GateSettings
from runtime.ledger import Ledger, ledger_path

__all__ = ["register", "run_calibrate"]


def run_calibrate(
    state_path: Path,
    data: Path | None,
    settings: CalibrationSettings,
    gate: GateSettings,
    console: Console | None = None,
) -> CalibrationReport:
    """Calibrate the gate on ``state_path``'s builds (kept in ``generated/`` beside it)."""
    state = load_state(state_path)
    note = console.log if console is not None else None
    return calibrate(
        state,
        state_path.absolute().parent / "generated",
        data=data,
        settings=settings,
        gate=gate,
        progress=note,
    )


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``rsi gate calibrate`` (``gate`` takes a target so other gate commands can join)."""
    gate = sub.add_parser("gate", help="the promotion gate's statistics")
    targets = gate.add_subparsers(required=True, metavar="TARGET")
    p = targets.add_parser(
        "calibrate",
        parents=[common],
        help="A/A and known-worse trials: false-promotion and false-rejection rates",
    )
    p.add_argument("--trials", type=int, default=20, help="trials (one split seed each)")
    p.add_argument("--data", type=Path, default=None, help="bAbI dir (default: generated data)")
    p.add_argument("--seed", type=SEED, default=1, help="split seed of the first trial")
    p.add_argument("--backend", choices=BACKENDS, default="cython")
    p.add_argument("--no-latency", action="store_true", help="skip the latency A/A timings")
    p.add_argument(
        "--ablate",
        action="append",
        default=[],
        metavar="PATH",
        help="screen only this expert weight or scoring coefficient for known-worse "
        "candidates (repeatable; default: all)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.set_defaults(handler=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    if args.data is not None:
        data_files(args.data)  # before any build: a wrong --data is one line at once
    settings = CalibrationSettings(
        trials=args.trials,
        first_seed=args.seed,
        latency=not args.no_latency,
        backend=args.backend,
        ablate=tuple(args.ablate),
    )
    report = run_calibrate(
        args.state, args.data, settings, GateSettings(), Console(stderr=True, log_path=False)
    )
    summary = report.to_json()
    kept = Ledger(ledger_path(args.state)).record_calibration(
        latency_noise_floor=report.latency_noise_floor if report.latency_changes else None,
        latency_changes=report.latency_changes,
        summary=summary,
    )
    print(report.table())
    if report.latency_changes:
        print(
            f"kept as calibration {kept} in the ledger: `rsi promote` acts on a latency change "
            f"only beyond {max(report.latency_noise_floor, report.gate.latency_tolerance):.1%} "
            "(the larger of the noise floor and the tolerance)"
        )
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0
