"""Nuitka vs Cython vs pure Python on the same generated modules: cold compile, one-module
rebuild, and call speed of the model's hot path (``scoring.decide_story``, one question).

    python tools/bench_backends.py [--backends python,cython,nuitka] [--calls 20000]
        [--samples 15] [--out bench_backends.json]

Each backend compiles the shipped state's modules into a fresh cache (cold; Cython includes
its shared utility module, Nuitka starts with an empty NUITKA_CACHE_DIR), then the state with
one scoring coefficient changed (only ``scoring`` differs: a one-module rebuild). Call speed:
``--samples`` timings of ``--calls`` calls of ``decide_story`` per backend, interleaved so machine
noise hits all alike; ratios against the pure-Python tier with a Mann-Whitney U test
(scipy.stats). Raw samples go to ``--out``.

``--feedback`` instead injects each compile failure kind into one module (an unsupported
``-march``, a C error only some flags trigger, a Cython error) and prints how each build ended:
the attempts used out of the budget and the tier that serves.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codegen.compile import CompiledModule, compile_modules  # noqa: E402
from codegen.plan import plan  # noqa: E402
from codegen.render import render_sources  # noqa: E402
from codegen.state import load_state  # noqa: E402
from codegen.toolchain import BACKENDS, CompileSettings  # noqa: E402
from runtime.loader import exec_artifact  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--state", type=Path, default=REPO / "rsi_state.json")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench_backends.json"))
    parser.add_argument("--feedback", action="store_true", help="the failure-injection table")
    args = parser.parse_args()
    if args.feedback:
        return _feedback()
    state = load_state(args.state)
    changed = state.model_copy(
        update={"scoring": state.scoring.model_copy(update={"rag": state.scoring.rag + 0.5})}
    )
    sources = render_sources(state)
    rebuilt = render_sources(changed)
    differing = sorted(n for n in sources if sources[n] != rebuilt[n])
    results: dict[str, Any] = {"modules": sorted(sources), "rebuild_modules": differing}
    decide: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rsi-bench-backends-") as tmp:
        for backend in args.backends.split(","):
            settings = CompileSettings(backend=backend, jobs=args.jobs)  # type: ignore[arg-type]
            cache = Path(tmp) / backend
            start = time.perf_counter()
            compiled = compile_modules(sources, settings, cache)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            compile_modules(rebuilt, settings, cache)
            rebuild = time.perf_counter() - start
            tiers = {name: m.tier for name, m in compiled.items()}
            results[backend] = {"cold_compile_s": cold, "rebuild_s": rebuild, "tiers": tiers}
            print(
                f"{backend}: cold {cold:.1f} s, rebuild {rebuild:.1f} s, tiers {tiers}", flush=True
            )
            decide[backend] = _load_scoring(backend, compiled, cache)
    samples = _time_calls(decide, plan(state).n_rows, args.calls, args.samples)
    for backend, values in samples.items():
        results[backend]["decide_us"] = values
    _table(results, samples, args.backends.split(","))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"raw samples: {args.out}")
    return 0


SMALL = "import cython\n\nK: float = 1.0\n\n\ndef f(x: float) -> float:\n    return K * x\n"
BAD_CYTHON = "import cython\n\n\ndef g() -> int:\n    x: cython.int = 'text'\n    return 1\n"
INJECTED = {
    "unsupported -march": (("-O1", "-march=no-such-cpu"), SMALL),
    "C error under -Werror=...": (("-O1", "-Werror=declaration-after-statement"), SMALL),
    "Cython error": (("-O1",), BAD_CYTHON),
}


def _feedback() -> int:
    budget = CompileSettings().max_attempts
    print(f"{'injected failure':28} {'attempts':>8} {'budget':>6} {'serves':>7} {'seconds':>8}")
    with tempfile.TemporaryDirectory(prefix="rsi-bench-feedback-") as tmp:
        for index, (label, (flags, source)) in enumerate(INJECTED.items()):
            settings = CompileSettings(cflags=flags, shared_utility=False, jobs=1)
            start = time.perf_counter()
            done = compile_modules({"m": source}, settings, Path(tmp) / str(index))["m"]
            tries = sum(a.outcome != "fallback" for a in done.attempts)
            seconds = time.perf_counter() - start
            print(f"{label:28} {tries:8d} {budget:6d} {done.tier:>7} {seconds:8.1f}")
    return 0


def _load_scoring(backend: str, compiled: dict[str, CompiledModule], cache: Path) -> Any:
    """The compiled ``scoring`` module, in a package that also finds the modules it imports."""
    if backend == "cython":
        shared = next(cache.glob("_rsi_cyutility_*/*.so"))
        exec_artifact(shared.stem.split(".")[0], shared)
    package = f"rsi_bench_{backend}"
    pkg = types.ModuleType(package)
    pkg.__path__ = [str(m.artifact.parent) for m in compiled.values()]
    sys.modules[package] = pkg
    return exec_artifact(f"{package}.scoring", compiled["scoring"].artifact)


def _time_calls(
    modules: dict[str, Any], rows: int, calls: int, samples: int
) -> dict[str, list[float]]:
    """Microseconds per ``decide_story`` call on one question (the selftest's fixed scores
    over ``rows`` evidence rows, 7 candidates), ``samples`` rounds, backends interleaved."""
    any_module = next(iter(modules.values()))
    n = 7
    scores = np.array(
        [[[((r * 7 + c * 3) % 11) / 11.0 for c in range(n)] for r in range(rows)]],
        dtype=np.float64,
    )
    n_cand = np.array([n], dtype=np.int32)
    flags = np.zeros((1, max(len(any_module.ROUTE_WORDS), 1)), dtype=np.uint8)
    best = np.zeros(1, dtype=np.int32)
    confidence = np.zeros(1, dtype=np.float64)
    out: dict[str, list[float]] = {b: [] for b in modules}
    for _ in range(samples):
        for backend, module in modules.items():
            decide = module.decide_story
            start = time.perf_counter()
            for _ in range(calls):
                decide(scores, n_cand, flags, 1, best, confidence)
            out[backend].append((time.perf_counter() - start) / calls * 1e6)
    return out


def _table(results: dict[str, Any], samples: dict[str, list[float]], backends: list[str]) -> None:
    base = samples.get("python")
    print(
        f"{'backend':8} {'cold compile s':>15} {'rebuild s':>10} {'decide us':>10} "
        f"{'vs python':>10} p"
    )
    for backend in backends:
        r = results[backend]
        median = statistics.median(samples[backend])
        ratio, p = "", ""
        if base is not None and backend != "python":
            ratio = f"{statistics.median(base) / median:.1f}x"
            p = f"{stats.mannwhitneyu(base, samples[backend]).pvalue:.2g}"
        print(
            f"{backend:8} {r['cold_compile_s']:15.1f} {r['rebuild_s']:10.2f} {median:10.2f} "
            f"{ratio:>10} {p}"
        )


if __name__ == "__main__":
    sys.exit(main())
