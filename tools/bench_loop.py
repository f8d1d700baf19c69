"""The RSI loop's numbers: from ``states/uniform.json`` on the real training files,

    PYTHONPATH=. .venv/bin/python tools/bench_loop.py --data "$RSI_BABI_DIR" --budget-s 300 \
        --seed 0 --out loop_bench.json

runs ``rsi loop --from states/uniform.json --budget-s 300 --seed 0`` three times, each in a
fresh project directory sharing one module cache: the local executor twice (determinism:
identical decisions and final state bytes) and Ray once (same final state; per-candidate
overhead against local). Prints, per run: wall time, iterations, proposals screened per
second, candidates built, share of time compiling, the final held-out and hidden accuracy per
task, every decision with its p-value; and whether every task reached 0.95 on held-out, none
fell below it on hidden, every promotion was significant at the gate's alpha and at least one
promoted candidate added a routing rule mined from failures. Raw manifests go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.rsi.manifest import load_manifest  # noqa: E402
from runtime.rsi.report import time_split  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--budget-s", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rsi-bench-loop"))
    parser.add_argument("--runs", default="local,local,ray", help="executors, comma separated")
    parser.add_argument("--out", type=Path, default=Path("loop_bench.json"))
    parser.add_argument(
        "--module-cache", type=Path, default=None, help="compiled-module cache to share"
    )
    args = parser.parse_args()
    data = args.data or (
        Path(os.environ["RSI_BABI_DIR"]) if os.environ.get("RSI_BABI_DIR") else None
    )
    cache = args.module_cache or args.work / "module-cache"
    cache.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for i, executor in enumerate(args.runs.split(",")):
        root = args.work / f"run{i}-{executor}"
        subprocess.run(["rm", "-rf", str(root)], check=True)
        (root / "generated").mkdir(parents=True)
        (root / "generated" / ".cache").symlink_to(cache.absolute())
        state = root / "rsi_state.json"
        state.write_bytes((REPO / "states" / "uniform.json").read_bytes())
        command = [
            sys.executable, "-m", "runtime.cli", "loop", "--state", str(state),
            "--from", str(REPO / "states" / "uniform.json"), "--budget-s", str(args.budget_s),
            "--seed", str(args.seed), "--executor", executor, "--json",
            *(["--data", str(data)] if data is not None else []),
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        summary = json.loads(done.stdout.splitlines()[-1])
        manifest = load_manifest(Path(summary["manifest"]))
        results.append(_figures(executor, wall, manifest, state.read_bytes()))
        _print(results[-1])
    report: dict[str, Any] = {"runs": results}
    local = [r for r in results if r["executor"] == "local"]
    if len(local) >= 2:
        report["deterministic"] = all(
            r["decisions_key"] == local[0]["decisions_key"]
            and r["final_state"] == local[0]["final_state"]
            for r in local
        )
        print(f"determinism (same seed, two local runs): {report['deterministic']}")
    ray = [r for r in results if r["executor"] == "ray"]
    if ray and local:
        # Ray's executor overhead per candidate job minus the local pool's, same seed and data.
        report["ray_same_final_state"] = ray[0]["final_state"] == local[0]["final_state"]
        report["ray_overhead_per_candidate_s"] = round(
            ray[0]["executor_overhead_per_candidate_s"]
            - local[0]["executor_overhead_per_candidate_s"],
            3,
        )
        print(
            f"ray: same final state as local: {report['ray_same_final_state']}; executor "
            f"overhead per candidate {ray[0]['executor_overhead_per_candidate_s']:.2f} s vs local "
            f"{local[0]['executor_overhead_per_candidate_s']:.2f} s; submit-to-start per candidate "
            f"{ray[0]['executor_queued_per_candidate_s']:.2f} s vs "
            f"{local[0]['executor_queued_per_candidate_s']:.2f} s"
        )
    args.out.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(f"raw figures and manifests: {args.out}")
    return 0


def _figures(executor: str, wall: float, manifest: Any, final_state: bytes) -> dict[str, Any]:
    its = manifest.iterations
    decisions = manifest.decisions
    screened = sum(int(it["screened"]) for it in its)
    screen_s = sum(float(it["seconds"].get("screen", 0.0)) for it in its)
    built = sum(int(it["built"]) for it in its)
    split = time_split(manifest)
    # Per candidate job: submission to its result in the loop, less the job's own build
    # and evaluate time (what the executor itself costs: start, transport, scheduling).
    overhead = sum(float(it["seconds"].get("executor_overhead", 0.0)) for it in its)
    held = its[-1]["heldout_per_task"] if its else {}
    hidden = its[-1]["hidden_per_task"] if its else {}
    first_hidden = its[0]["hidden_per_task"] if its else {}
    alpha = float(manifest.config["gate"]["alpha"])
    promoted = [d for d in decisions if d["promoted"]]
    return {
        "executor": executor,
        "wall_s": round(wall, 2),
        "loop_elapsed_s": round(manifest.elapsed_s, 2),
        "iterations": len(its),
        "stop_reason": manifest.stop_reason,
        "screened": screened,
        "screened_per_s": round(screened / screen_s, 2) if screen_s else None,
        "candidates_built": built,
        "time_split_s": {k: round(v, 2) for k, v in split.items()},
        "compile_share": round(split["compile"] / max(1e-9, sum(split.values())), 3),
        "executor_overhead_per_candidate_s": round(overhead / max(1, built), 3),
        "executor_queued_per_candidate_s": round(
            sum(float(it["seconds"].get("executor_queued", 0.0)) for it in its) / max(1, built), 3
        ),
        "final_heldout": held,
        "final_hidden": hidden,
        "every_task_heldout_ge_095": bool(held) and min(held.values()) >= 0.95,
        "no_hidden_task_below_095": bool(hidden) and min(hidden.values()) >= 0.95,
        "hidden_tasks_that_passed_and_fell": [
            t for t, a in first_hidden.items() if a >= 0.95 and hidden.get(t, 0.0) < 0.95
        ],
        "every_promotion_significant": all(
            d["p_value"] is not None and d["p_value"] < alpha for d in promoted
        ),
        "promoted_routing_rules": sum(
            1 for d in promoted for c in d["changes"] if c.startswith("rule:")
        ),
        "decisions": [
            {k: d[k] for k in ("iteration", "label", "verdict", "p_value", "reason", "changes")}
            for d in decisions
        ],
        "decisions_key": [[d["iteration"], d["candidate"], d["verdict"]] for d in decisions],
        "final_state": final_state.decode(),
        "manifest": manifest.run_id,
    }


def _print(r: dict[str, Any]) -> None:
    print(
        f"[{r['executor']}] {r['wall_s']:.0f} s wall, {r['iterations']} iterations "
        f"({r['stop_reason']}), {r['screened']} proposals screened ({r['screened_per_s']}/s), "
        f"{r['candidates_built']} candidates built, compiling {r['compile_share']:.0%} of the "
        f"time; held-out >= 0.95 on every task: {r['every_task_heldout_ge_095']}, hidden: "
        f"{r['no_hidden_task_below_095']}; promotions significant: "
        f"{r['every_promotion_significant']}; promoted routing rules: {r['promoted_routing_rules']}"
    )
    for d in r["decisions"]:
        print(
            f"   it {d['iteration']} {d['label']}: {d['verdict']} p={d['p_value']}: {d['reason']}"
        )
    print(f"   held-out per task: {r['final_heldout']}")
    print(f"   hidden per task:   {r['final_hidden']}")


if __name__ == "__main__":
    sys.exit(main())
