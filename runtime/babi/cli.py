"""``rsi eval``: bAbI accuracy and throughput of the state file's build."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from codegen.toolchain import BACKENDS, Backend
from runtime.babi.data import SPLITS, Split
from runtime.cli import SEED

if TYPE_CHECKING:
    from runtime.babi.evaluate import EvalResult

__all__ = ["register", "run_eval"]


def run_eval(
    state_path: Path,
    data: Path | None,
    split: Split,
    backend: Backend = "cython",
    seed: int = 0,
) -> EvalResult:
    """Build (or reuse) the build of ``state_path`` and evaluate it on ``split``.

    Without ``data`` the stories come from the embedded generator (seeded by ``seed``).
    The build goes to ``generated/`` beside the state file; nothing is committed or activated.
    """
    # Imported here: `rsi --help` and `rsi status` must not pay for the model and codegen.
    from codegen.state import load_state
    from runtime.babi.builds import build_model
    from runtime.babi.evaluate import evaluate, load_split

    state = load_state(state_path)
    built = build_model(state, state_path.absolute().parent / "generated", backend)
    stories = load_split(data, split, seed=seed)
    return evaluate(built.model, stories, built.build.build_id)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``rsi eval`` to the command line."""
    p = sub.add_parser("eval", parents=[common], help="bAbI accuracy of the state's build")
    p.add_argument("--data", type=Path, default=None, help="bAbI dir (default: generated data)")
    p.add_argument("--split", choices=SPLITS, default="heldout")
    p.add_argument(
        "--backend", choices=BACKENDS, default=None, help="default: $RSI_BACKEND or cython"
    )
    p.add_argument("--seed", type=SEED, default=0, help="split and generator seed")
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.set_defaults(handler=_eval)


def _eval(args: argparse.Namespace) -> int:
    from runtime.cli import settings_from

    backend = settings_from(args).backend
    result = run_eval(args.state, args.data, args.split, backend, args.seed)
    print(result.table())
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True))
    return 0
