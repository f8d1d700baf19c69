"""Promotions through the gate on real data: uniform over a worse state, tuned over uniform.

    PYTHONPATH=. .venv/bin/python tools/bench_promote.py --data "$RSI_BABI_DIR" \
        [--backend cython] [--workdir DIR] [--out promote.json]

In a fresh project (``--workdir``, default a temp dir): commits a *worse* state (the uniform
state with the tracking expert's weight at 0.67: within the step bound of the uniform
state's 1.0), promotes ``states/uniform.json`` over it, then ``rsi_state.json`` (the tuned
state) over uniform with ``--approve '*'`` (its steps exceed the bound), both asking the gate
*better*. Prints each decision with its p-value and where the time went; ``--out`` keeps
every statistic and the decisions as JSON. Then it shows the policy refusal the tuned state
gets without the approval.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codegen.policy import PolicyError  # noqa: E402
from codegen.toolchain import BACKENDS, CompileSettings  # noqa: E402
from runtime.project import Project  # noqa: E402
from runtime.promote import PromotionReport, format_p, p_value, promote  # noqa: E402

#: The worse incumbent: uniform with the tracking expert's weight lowered within the bound.
WORSE_TRACKER_WEIGHT = 0.67


def state_bytes(path: Path, version: int, **experts: float) -> bytes:
    """``path`` at ``version`` with some expert weights changed."""
    data = json.loads(path.read_text())
    data["version"] = version
    for name, weight in experts.items():
        data["experts"][name]["weight"] = weight
    return (json.dumps(data, indent=2) + "\n").encode()


def show(label: str, r: PromotionReport) -> dict[str, Any]:
    """Print one decision; return it as a JSON-able record."""
    d = r.decision
    p = p_value(d.stats, d.require)
    print(f"{label}: {d.verdict} (require {d.require}), {format_p(p)}")
    print(f"  {d.reason}")
    print("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in r.seconds.items()))
    return {
        "label": label,
        "verdict": str(d.verdict),
        "require": d.require,
        "p_value": p,
        "reason": d.reason,
        "stats": dict(d.stats),
        "seconds": dict(r.seconds),
        "candidate": d.candidate,
        "incumbent": d.incumbent,
        "approved": list(r.approved),
        "cached": list(r.cached),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="bAbI dir (default: generated)")
    parser.add_argument("--backend", choices=BACKENDS, default="cython")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write every statistic as JSON")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rsi-promote-"))
    work.mkdir(parents=True, exist_ok=True)
    state = work / "rsi_state.json"
    settings = CompileSettings(backend=args.backend)
    started = time.perf_counter()
    uniform, tuned = REPO / "states" / "uniform.json", REPO / "rsi_state.json"
    state.write_bytes(state_bytes(uniform, 1, tracker=WORSE_TRACKER_WEIGHT))
    project = Project(state)
    built = project.build(settings)
    print(f"incumbent v1 (uniform, tracker weight {WORSE_TRACKER_WEIGHT}): build {built.build_id}")
    records = []
    report = promote(
        project, state_bytes(uniform, 2), settings=settings, require="better", data=args.data
    )
    records.append(show("uniform over worse", report))
    try:
        promote(project, state_bytes(tuned, 3), settings=settings, data=args.data)
    except PolicyError as exc:
        print(f"tuned without approval: refused: {exc}")
    report = promote(
        project,
        state_bytes(tuned, 3),
        settings=settings,
        require="better",
        data=args.data,
        approve=["*"],
    )
    records.append(show("tuned over uniform (--approve '*')", report))
    print(f"total {time.perf_counter() - started:.1f} s; project in {work}")
    if args.out:
        args.out.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
