"""Accuracy and throughput of the bAbI model: per-task tables, compiled vs pure-Python tier.

    PYTHONPATH=. .venv/bin/python tools/bench_model.py --data "$RSI_BABI_DIR" --split heldout \
        --state states/uniform.json --state rsi_state.json

For each state: builds the compiled (cython) and interpreted (python) tiers, evaluates the
compiled tier end to end, then answers the *same* encoded questions with both tiers in
alternating rounds (same process, so machine noise hits both) and reports throughput, the
ratio, and whether the tiers agreed on every answer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from codegen.state import load_state
from runtime.babi.builds import build_model
from runtime.babi.evaluate import evaluate, load_split, prepare_all
from runtime.babi.model import BabiModel, Prepared


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="bAbI dir (default: $RSI_BABI_DIR or the embedded generator)",
    )
    parser.add_argument("--split", default="heldout", choices=("train", "heldout", "hidden", "all"))
    parser.add_argument("--state", type=Path, action="append", default=None)
    parser.add_argument("--generated", type=Path, default=Path("generated"))
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per tier")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = args.data or (
        Path(os.environ["RSI_BABI_DIR"]) if os.environ.get("RSI_BABI_DIR") else None
    )
    stories = load_split(data, args.split)
    report: dict[str, object] = {"split": args.split, "data": str(data or "generator")}
    for path in args.state or [Path("rsi_state.json")]:
        state = load_state(path)
        compiled = build_model(state, args.generated, "cython")
        interpreted = build_model(state, args.generated, "python")
        result = evaluate(compiled.model, stories, compiled.build.build_id)
        print(f"== {path} (compiled build {compiled.build.build_id})")
        print(result.table())
        prepared = prepare_all(compiled.model, stories)
        fast, slow, agree = _paired_rounds(compiled.model, interpreted.model, prepared, args.rounds)
        n = sum(p.n_questions for p in prepared)
        print(
            f"answering {n} encoded questions: compiled {n / fast:,.0f} q/s, "
            f"pure-Python {n / slow:,.0f} q/s, ratio {slow / fast:.1f}x "
            f"(median of {args.rounds} alternating rounds); tiers agree: {agree}"
        )
        report[str(path)] = {
            **result.to_json(),
            "compiled_answer_q_per_s": round(n / fast, 1),
            "python_answer_q_per_s": round(n / slow, 1),
            "ratio": round(slow / fast, 2),
            "tiers_agree": agree,
        }
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 0


def _answer_all(model: BabiModel, prepared: list[Prepared]) -> list[str]:
    return [choice for p in prepared for choice, _ in model.answer_all(p)]


def _paired_rounds(
    fast_model: BabiModel, slow_model: BabiModel, prepared: list[Prepared], rounds: int
) -> tuple[float, float, bool]:
    fast_times: list[float] = []
    slow_times: list[float] = []
    agree = True
    for _ in range(rounds):
        start = time.perf_counter()
        fast_answers = _answer_all(fast_model, prepared)
        fast_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        slow_answers = _answer_all(slow_model, prepared)
        slow_times.append(time.perf_counter() - start)
        agree = agree and fast_answers == slow_answers
    return statistics.median(fast_times), statistics.median(slow_times), agree


if __name__ == "__main__":
    sys.exit(main())
