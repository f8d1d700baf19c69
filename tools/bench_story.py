"""Per-story time of two or more builds of the same state, compared in one process.

    python tools/bench_story.py --build generated/<old id> --build generated/<new id> \
        [--data "$RSI_BABI_DIR"] [--rounds 7] [--json]

Every build is imported (:func:`runtime.loader.load_build`) and wrapped in its model
(:func:`runtime.babi.builds.model_of`); builds made by another source tree load the same
way, so "before" can be a build made by a worktree of main. Each round times, for every
build in turn (interleaved, so a noisy moment hits all of them), encoding and answering every
story of the train split: the per-story time is that total over the story count. Reported:
each build's median per-story time, every round's ratio to the first build, the median
ratio, a Mann-Whitney U test of the raw samples (scipy.stats) and whether every answer and
confidence agrees bit for bit with the first build's. Raw samples are kept in the output.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.babi.builds import model_of  # noqa: E402
from runtime.babi.data import Story  # noqa: E402
from runtime.babi.evaluate import load_split, prepare_all  # noqa: E402
from runtime.babi.model import BabiModel  # noqa: E402
from runtime.loader import load_build  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, action="append", required=True)
    parser.add_argument("--data", type=Path, default=None, help="bAbI dir (default: generator)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    stories = load_split(args.data, "train")
    builds = [load_build(path) for path in args.build]
    models = [model_of(build) for build in builds]
    names = [f"{build.build_id} ({build.tier})" for build in builds]
    answers = [_answer(model, stories) for model in models]  # warm-up, and the answers
    samples: list[list[float]] = [[] for _ in models]
    for _ in range(args.rounds):
        for i, model in enumerate(models):
            start = time.perf_counter()
            _answer(model, stories)
            samples[i].append((time.perf_counter() - start) / len(stories) * 1e6)
    results: dict[str, object] = {"stories": len(stories), "rounds": args.rounds, "builds": {}}
    for name, build_samples, build_answers in zip(names, samples, answers, strict=True):
        ratios = [b / a for a, b in zip(samples[0], build_samples, strict=True)]
        results["builds"][name] = {  # type: ignore[index]
            "per_story_us_median": statistics.median(build_samples),
            "per_story_us_samples": build_samples,
            "ratio_to_first_median": statistics.median(ratios),
            "ratio_to_first_samples": ratios,
            "mann_whitney_p": float(
                stats.mannwhitneyu(samples[0], build_samples, alternative="two-sided").pvalue
            ),
            "answers_identical_to_first": build_answers == answers[0],
        }
    for name, entry in results["builds"].items():  # type: ignore[attr-defined]
        print(
            f"{name}: {entry['per_story_us_median']:.1f} us/story, ratio to first "
            f"{entry['ratio_to_first_median']:.3f} (p={entry['mann_whitney_p']:.3g}), "
            f"answers identical: {entry['answers_identical_to_first']}"
        )
    if args.json:
        print(json.dumps(results, sort_keys=True))
    return 0


def _answer(model: BabiModel, stories: Sequence[Story]) -> list[str]:
    lines = []
    for prepared in prepare_all(model, stories):
        lines.extend(f"{c}\t{p.hex()}" for c, p in model.answer_all(prepared))
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
