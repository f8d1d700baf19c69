"""Learn knowledge and tune weights on the *train* split; write the uniform and tuned states.

    PYTHONPATH=. .venv/bin/python tools/tune_model.py --data "$RSI_BABI_DIR" --seed 0 \
        --proposals 400 --uniform-out states/uniform.json --tuned-out rsi_state.json

The tuned state keeps the base state's architecture, kernels and safety sections, gets the
next version number, and its ``benchmark`` summary records its screened train accuracy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from codegen.state import BenchmarkSummary, dump_state, load_state
from runtime.babi.evaluate import load_split
from runtime.babi.pipeline import tune_states


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--base", type=Path, default=Path("rsi_state.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--proposals", type=int, default=400)
    parser.add_argument("--generated", type=Path, default=Path("generated"))
    parser.add_argument("--uniform-out", type=Path, default=Path("states/uniform.json"))
    parser.add_argument("--tuned-out", type=Path, default=Path("rsi_state.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = args.data or (
        Path(os.environ["RSI_BABI_DIR"]) if os.environ.get("RSI_BABI_DIR") else None
    )
    train = load_split(data, "train")
    result = tune_states(
        load_state(args.base), train, args.generated, seed=args.seed, proposals=args.proposals
    )
    screened = result.search.screened
    summary = BenchmarkSummary(
        mean=round(screened.mean, 4),
        passed=screened.passed,
        per_task={str(t): round(a, 4) for t, a in sorted(screened.per_task.items())},
        questions=int(screened.correct.size),
        split="train",
    )
    tuned = result.tuned.model_copy(update={"benchmark": summary})
    args.uniform_out.parent.mkdir(parents=True, exist_ok=True)
    args.uniform_out.write_bytes(dump_state(result.uniform))
    args.tuned_out.write_bytes(dump_state(tuned))
    print(
        json.dumps({"trail": result.search.trail, "passed": screened.passed, "mean": screened.mean})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
