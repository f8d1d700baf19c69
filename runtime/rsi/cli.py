"""``rsi analyse``, ``rsi loop`` and ``rsi report``: parse, call :mod:`runtime.rsi`, print."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from codegen.errors import RSIError
from codegen.toolchain import BACKENDS
from runtime.cli import SEED

__all__ = ["register", "NoRunError", "EXECUTORS"]

#: ``--executor`` choices (:data:`runtime.rsi.executor.EXECUTORS`, spelled out so that
#: registering these subcommands imports no NumPy; a test checks the two agree).
EXECUTORS: tuple[str, ...] = ("local", "ray")


class NoRunError(RSIError):
    """``rsi report`` on a project that has no loop run."""


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``rsi analyse``, ``rsi loop`` and ``rsi report``."""
    p = sub.add_parser("analyse", parents=[common], help="group train failures; propose fixes")
    p.add_argument("--data", type=Path, default=None, help="bAbI dir (default: generated data)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--backend", choices=BACKENDS, default=None, help="default: $RSI_BACKEND or cython"
    )
    p.add_argument(
        "--approve", nargs="*", default=[], metavar="PATH", help="also search these knobs"
    )
    p.add_argument(
        "--no-knobs", action="store_true", help="skip the kernel autotuner (build knobs)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_analyse)

    p = sub.add_parser("loop", parents=[common], help="the RSI loop: propose, gate, promote")
    p.add_argument("--from", dest="start", type=Path, default=None, metavar="STATE")
    p.add_argument("--budget-s", type=float, default=None)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--data", type=Path, default=None, help="bAbI dir (default: generated data)")
    p.add_argument("--executor", choices=EXECUTORS, default="local")
    p.add_argument("--address", default=None, help="Ray cluster address (ray://host:10001)")
    p.add_argument("--workers", type=int, default=2, help="parallel candidate jobs")
    p.add_argument(
        "--backend", choices=BACKENDS, default=None, help="default: $RSI_BACKEND or cython"
    )
    p.add_argument("--approve", nargs="*", default=[], metavar="PATH")
    p.add_argument(
        "--no-knobs", action="store_true", help="skip the kernel autotuner (build knobs)"
    )
    p.add_argument("--json", action="store_true", help="quiet; one JSON object at the end")
    p.set_defaults(handler=_loop)

    p = sub.add_parser("report", parents=[common], help="HTML report of the latest loop run")
    p.add_argument("--out", type=Path, default=None, help="default: .rsi/<state file name>/report")
    p.set_defaults(handler=_report)


def _analyse(args: argparse.Namespace) -> int:
    # Imported here: `rsi --help` and `rsi status` must not pay for NumPy and codegen.
    from codegen.state import parse_state, read_state_file
    from runtime.cli import settings_from
    from runtime.project import Project
    from runtime.rsi.knobs import KnobProposals, KnobSettings, knob_proposals
    from runtime.rsi.loop import screen_state

    project = Project(args.state)
    state = parse_state(read_state_file(args.state), args.state.name)
    compile_settings = settings_from(args)
    result = screen_state(
        project, state, data=args.data, seed=args.seed, backend=compile_settings.backend
    )
    analysis = result.analysis
    knobs = (
        KnobProposals((), (), 0)
        if args.no_knobs
        else knob_proposals(
            state,
            result.screened,
            KnobSettings(
                cache_dir=args.state.parent / "generated" / ".cache",
                compile=compile_settings,
                approve=tuple(args.approve),
            ),
        )
    )
    if args.json:
        print(
            json.dumps(
                {
                    "failures": analysis.failures,
                    "questions": analysis.questions,
                    "groups": [
                        {
                            "pattern": g.pattern,
                            "failures": g.failures,
                            "right_expert": g.right_expert,
                            "fix": _fix(g.fix(0.5)),
                        }
                        for g in analysis.groups
                    ],
                    "knobs": [
                        {"kind": c.label, "changes": [x.describe() for x in c.changes]}
                        for c in knobs.candidates
                    ],
                    "refused": list(knobs.refused),
                }
            )
        )
        return 0
    table = Table(title=f"{analysis.failures} of {analysis.questions} train questions wrong")
    for column in ("pattern", "failures", "tasks", "right expert", "proposed fix"):
        table.add_column(column)
    for g in analysis.groups[:30]:
        table.add_row(
            g.pattern,
            str(g.failures),
            ",".join(map(str, g.tasks)),
            f"{g.right_expert} ({g.right_share:.0%})" if g.right_expert else "-",
            _fix(g.fix(0.5)),
        )
    for c in knobs.candidates:
        fix = "; ".join(f"{x.path}: {x.old} -> {x.new}" for x in c.changes)
        table.add_row(f"build knob ({c.label})", "-", "-", c.changes[0].why, fix)
    for line in knobs.refused:
        table.add_row("build knob (architecture)", "-", "-", "-", f"not proposed: {line}")
    Console().print(table)
    return 0


def _loop(args: argparse.Namespace) -> int:
    from runtime.cli import settings_from
    from runtime.project import Project
    from runtime.rsi.loop import LoopSettings, run_loop
    from runtime.rsi.report import time_split

    settings = LoopSettings(
        start=args.start,
        budget_s=args.budget_s,
        iterations=args.iterations,
        seed=args.seed,
        data=args.data,
        executor=args.executor,
        address=args.address,
        workers=args.workers,
        approve=tuple(args.approve),
        knobs=not args.no_knobs,
        backend=settings_from(args).backend,
        started=time.perf_counter() - _process_age_s(),
    )
    project = Project(args.state, lock_timeout_s=args.lock_timeout)
    quiet = args.json or not sys.stdout.isatty()
    console = Console()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    ) as progress:
        started = time.perf_counter()
        task = progress.add_task("rsi loop", total=args.budget_s or None)

        def on_decision(record: Mapping[str, Any]) -> None:
            if not args.json:
                progress.console.print(_decision_line(record))
            progress.update(
                task,
                description=f"rsi loop: iteration {record['iteration']}",
                completed=time.perf_counter() - started,
            )

        result = run_loop(project, settings, on_decision=on_decision)
    manifest = result.manifest
    summary = {
        "run_id": manifest.run_id,
        "manifest": str(result.path),
        "resumed": result.resumed,
        "iterations": len(manifest.iterations),
        "decisions": len(manifest.decisions),
        "promotions": result.promotions,
        "stop_reason": manifest.stop_reason,
        "elapsed_s": round(manifest.elapsed_s, 2),
        "screened": sum(int(it["screened"]) for it in manifest.iterations),
        "time": {k: round(v, 2) for k, v in time_split(manifest).items()},
        "final_heldout": manifest.iterations[-1]["heldout_per_task"] if manifest.iterations else {},
        "final_hidden": manifest.iterations[-1]["hidden_per_task"] if manifest.iterations else {},
    }
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(
            f"{summary['iterations']} iterations, {summary['promotions']} promotions in "
            f"{summary['elapsed_s']} s ({manifest.stop_reason}); manifest {result.path}"
        )
    return 0


def _report(args: argparse.Namespace) -> int:
    from runtime.project import Project
    from runtime.rsi.manifest import latest_manifest
    from runtime.rsi.report import write_report

    project = Project(args.state)
    manifest = latest_manifest(project.state_path)
    if manifest is None:
        raise NoRunError(f"{args.state}: no loop run recorded; run `rsi loop` first")
    out = args.out or project.ledger.path.parent / "report"
    files = write_report(project, manifest, out)
    print(f"report: {files.index}")
    return 0


def _decision_line(record: Mapping[str, Any]) -> str:
    from runtime.promote import format_p

    head = (
        f"iteration {record['iteration']} {record['label']}: {record['verdict']}"
        f" ({format_p(record.get('p_value'))}) {record['reason']}"
    )
    return "\n".join([head, *(f"    {c}" for c in record["changes"])])


def _process_age_s() -> float:
    """Seconds since this process started (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime_s = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))


def _fix(rule: Any) -> str:
    if rule is None:
        return "-"
    boosts = ", ".join(f"{n} {b:+g}" for n, b in sorted(rule.boosts.items()))
    return f"when {' '.join(rule.when_all)}: {boosts}"
