"""``@rsi_optimized`` speed: the example scoring function, generic vs its specialized copy
(pure Python and Cython-compiled), and through the decorator's dispatch.

    python tools/bench_specialize.py [--state rsi_state.json] [--rules 0] [--calls 5000]
        [--samples 15] [--out bench_specialize.json]

The function is :func:`runtime.babi.route_score.route_score` (the shipped model's experts,
coefficients and routing rules; ``--rules N`` adds N routing rules for a routed variant);
its arguments come from the decorator's ``benchmark=`` (``sample_call``). ``--samples``
rounds of ``--calls`` calls per variant, interleaved; speedups are ratios of medians in the
same run, with a Mann-Whitney U test (scipy.stats). Raw samples go to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codegen.compile import compile_modules  # noqa: E402
from codegen.manifest import Manifest, SpecializedEntry  # noqa: E402
from codegen.specialize import specialize_target  # noqa: E402
from codegen.state import RSIState, load_state  # noqa: E402
from codegen.toolchain import CompileSettings  # noqa: E402
from runtime.babi.route_score import route_score  # noqa: E402
from runtime.loader import LoadedBuild, exec_artifact  # noqa: E402
from runtime.optimized import activate  # noqa: E402

TARGET = "runtime.babi.route_score:route_score"
WORDS = ("where", "is", "how", "many", "why", "what")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=REPO / "rsi_state.json")
    parser.add_argument("--rules", type=int, default=0, help="routing rules to add")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("bench_specialize.json"))
    args = parser.parse_args()
    state = _with_rules(load_state(args.state), args.rules)
    copy = specialize_target(TARGET, state)
    pure: dict[str, Any] = {}
    exec(compile(copy.source, copy.module, "exec"), pure)
    with tempfile.TemporaryDirectory(prefix="rsi-bench-specialize-") as tmp:
        settings = CompileSettings(backend="cython", shared_utility=False, jobs=1)
        built = compile_modules({copy.module: copy.source}, settings, Path(tmp))[copy.module]
        compiled = exec_artifact(copy.module, built.artifact)
    entry = SpecializedEntry(
        module=copy.module,
        function=copy.function,
        sections=copy.sections,
        state_hash=copy.state_hash,
        source_file=copy.source_file,
        lines=copy.lines,
    )
    # Only the decorator's dispatch reads this build: its manifest needs only the copy's entry.
    manifest = Manifest.model_construct(build_id="bench", specialized={TARGET: entry})
    build = LoadedBuild(
        "bench", "cython", Path(tmp), manifest, MappingProxyType({copy.module: compiled}), state
    )
    module, _, name = route_score.benchmark.partition(":")
    call_args = getattr(importlib.import_module(module), name)(state)
    variants: dict[str, Callable[..., Any]] = {
        "generic": route_score.generic,
        "specialized_pure": pure["route_score"],
        "specialized_compiled": compiled.route_score,
        "decorated_compiled": route_score,
    }
    results = {
        v(state, *call_args)
        for v in (route_score.generic, pure["route_score"], compiled.route_score)
    }
    assert len(results) == 1, f"variants disagree: {results}"
    activate(build)
    samples = _samples(variants, state, call_args, args.calls, args.samples)
    activate(None)
    generic = samples["generic"]
    print(
        f"state {args.state.name} + {args.rules} rules; {len(state.experts)} experts; "
        f"{args.samples} x {args.calls} calls"
    )
    print(f"{'variant':22} {'us/call':>9} {'speedup':>8} {'p (vs generic)':>15}")
    report: dict[str, Any] = {
        "state": str(args.state),
        "rules": args.rules,
        "samples_us": samples,
    }
    for variant, values in samples.items():
        ratio = statistics.median(generic) / statistics.median(values)
        p = stats.mannwhitneyu(generic, values).pvalue if variant != "generic" else 1.0
        report[f"{variant}_speedup"] = ratio
        print(f"{variant:22} {statistics.median(values):9.2f} {ratio:7.1f}x {p:15.2g}")
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"raw samples: {args.out}")
    return 0


def _with_rules(state: RSIState, rules: int) -> RSIState:
    names = list(state.experts)
    added = [
        {
            "when_all": [WORDS[i % len(WORDS)]],
            "boosts": {names[i % len(names)]: 0.25 * (i + 1)},
        }
        for i in range(rules)
    ]
    doc = state.model_dump(mode="json")
    doc["routing"] = [*doc["routing"], *added]
    return RSIState.model_validate_json(json.dumps(doc))


def _samples(
    variants: dict[str, Callable[..., Any]],
    state: RSIState,
    call_args: tuple[Any, ...],
    calls: int,
    samples: int,
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(samples):
        for variant, fn in variants.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn(state, *call_args)
            out[variant].append((time.perf_counter() - start) / calls * 1e6)
    return out


if __name__ == "__main__":
    sys.exit(main())
