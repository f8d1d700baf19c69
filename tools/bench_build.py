"""Benchmark the spine: cold build, one-coefficient rebuild (both tiers), cache hit, rollback,
and per-module compile time with and without the Cython shared utility module.

    python tools/bench_build.py [--runs 5] [--json]

Every figure is a median over ``--runs`` runs in fresh temporary projects; raw samples are
printed too. With ``--json`` the last line is one JSON object with all of it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codegen.compile import compile_modules  # noqa: E402
from codegen.render import render_sources  # noqa: E402
from codegen.state import load_state  # noqa: E402
from codegen.toolchain import CompileSettings  # noqa: E402
from runtime.live import LiveProject  # noqa: E402
from runtime.project import Project  # noqa: E402

TRIVIAL = """import cython


def total(x: cython.double[::1]) -> cython.double:
    s: cython.double = 0.0
    i: cython.Py_ssize_t
    for i in range(x.shape[0]):
        s += x[i]
    return s
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--field", default="rag", help="scoring coefficient to change")
    parser.add_argument(
        "--modules",
        default="scoring,experts,attention",
        help="modules whose compile time is compared with/without the shared utility module",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {"runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="rsi-bench-") as tmp:
        root = Path(tmp)
        results["cold_build_s"] = _summary(_cold_builds(root, args.runs))
        warm = _project(root / "warm")
        warm.build(CompileSettings(backend="python"))  # both tiers built once: warm caches
        warm.build(CompileSettings())
        live = LiveProject(warm)
        for tier in ("cython", "python"):
            samples, compiled = _coefficient_rebuilds(live, tier, args.field, args.runs)
            results[f"rebuild_one_coefficient_{tier}_s"] = _summary(samples)
            results[f"rebuild_one_coefficient_{tier}_modules_compiled"] = compiled
        warm.build(CompileSettings())  # the last edit was built in the python tier only
        results["unchanged_state_s"] = _summary(
            _timed(lambda: warm.build(CompileSettings()), args.runs)
        )
        results["rollback_s"], results["rollback_compiled"] = _rollbacks(warm, args.runs)
        results["per_module_compile_s"] = _per_module(root, args.runs, args.modules.split(","))
    _print_table(results)
    if args.json:
        print(json.dumps(results, sort_keys=True))
    return 0


def _project(root: Path) -> Project:
    root.mkdir(parents=True)
    shutil.copy(REPO / "rsi_state.json", root / "rsi_state.json")
    return Project(root / "rsi_state.json")


def _cold_builds(root: Path, runs: int) -> list[float]:
    samples = []
    for i in range(runs):
        project = _project(root / f"cold{i}")  # empty generated/: nothing cached
        start = time.perf_counter()
        project.build(CompileSettings())
        samples.append(time.perf_counter() - start)
    return samples


def _coefficient_rebuilds(
    live: LiveProject, tier: str, field: str, runs: int
) -> tuple[list[float], list[int]]:
    settings = replace(CompileSettings(), backend=tier)  # type: ignore[call-arg]
    samples, compiled = [], []
    for _ in range(runs):
        data = json.loads(live.project.state_path.read_text())
        data["version"] = max(live.project.ledger.versions()) + 1
        # A value never built before, so the changed module really compiles.
        data["scoring"][field] = round(0.5 + (time.time_ns() % 10**6) / 10**6, 6)
        live.project.state_path.write_text(json.dumps(data, indent=2) + "\n")
        start = time.perf_counter()
        report = live.rebuild(settings).final
        live.current()
        samples.append(time.perf_counter() - start)
        compiled.append(report.modules_compiled)
    return samples, compiled


def _rollbacks(project: Project, runs: int) -> tuple[dict[str, object], list[bool]]:
    samples, compiled = [], []
    versions = project.ledger.versions()
    for i in range(runs):
        target = versions[-2] if i % 2 == 0 else versions[-1]
        start = time.perf_counter()
        report = project.rollback(target)
        samples.append(time.perf_counter() - start)
        compiled.append(report.compiled)
    return _summary(samples), compiled


def _per_module(root: Path, runs: int, names: list[str]) -> dict[str, dict[str, object]]:
    rendered = render_sources(load_state(REPO / "rsi_state.json"))
    sources = {name: rendered[name] for name in names}
    sources["trivial_memoryview"] = TRIVIAL
    out: dict[str, dict[str, object]] = {}
    for shared in (True, False):
        settings = CompileSettings(shared_utility=shared, jobs=1)
        label = "with_shared_utility" if shared else "without_shared_utility"
        for name, source in sources.items():
            samples = []
            for i in range(runs):
                cache = root / f"mod-{label}-{name}-{i}"
                if shared:  # the shared module itself is built once, not per module
                    _prime_shared(settings, cache, root / "shared-prime")
                start = time.perf_counter()
                compile_modules({name: source}, settings, cache)
                samples.append(time.perf_counter() - start)
            out.setdefault(name, {})[label] = _summary(samples)
    return out


def _prime_shared(settings: CompileSettings, cache: Path, prime: Path) -> None:
    from codegen.compile import shared_utility

    built = shared_utility(settings, prime)
    target = cache / built.parent.name
    if not target.exists():
        shutil.copytree(built.parent, target)


def _timed(fn: Callable[[], object], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def _summary(samples: list[float]) -> dict[str, object]:
    return {
        "median": round(statistics.median(samples), 4),
        "samples": [round(s, 4) for s in samples],
    }


def _print_table(results: dict[str, object]) -> None:
    for key, value in results.items():
        if isinstance(value, dict) and "median" in value:
            print(f"{key:48s} median {value['median']:8.3f} s   samples {value['samples']}")
        elif key == "per_module_compile_s" and isinstance(value, dict):
            for name, row in value.items():
                w = row["with_shared_utility"]["median"]
                wo = row["without_shared_utility"]["median"]
                print(f"compile {name:38s} with shared {w:7.3f} s   without {wo:7.3f} s")
        else:
            print(f"{key:48s} {value}")


if __name__ == "__main__":
    sys.exit(main())
