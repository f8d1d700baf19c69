"""Benchmark the spine: cold build, one-coefficient rebuild (both tiers), cache hit, rollback,
per-module compile time with and without the Cython shared utility module, every kind of
single-field edit, and the CLI's start-up.

    python tools/bench_build.py [--runs 5] [--json] [--only edits,cli]

Per edit kind (a scoring coefficient, an expert weight, adding or removing a routing rule,
an association's weight, a new association, a lexicon word) it reports the modules the edit
recompiled, the time until the compiled tier is live in this process, the same for the
pure-Python tier, and the wall time of ``rsi build`` in a fresh process, through a warm build
server (runtime/server.py) and with ``--no-server``; the first build's time and the server's
start-up are reported once (``build_server``). Each sample edits to
a value never built before, so the changed module really compiles. ``cli`` times ``rsi --help`` and
``rsi status`` in fresh processes. ``answering`` builds a state (``--answering-state``,
default states/routed.json: every rule path on) twice, once as rendered and once from
templates whose ``# rsi: cflags = -O0`` / ``-Og`` headers are removed (so every module gets
the default ``-O1``), and times answering the same encoded stories with both in alternating
rounds: the price of compiling the often-rebuilt modules at a lower level.

Every figure is a median over ``--runs`` runs in fresh temporary projects; raw samples are
printed too. With ``--json`` the last line is one JSON object with all of it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codegen.build import build_state  # noqa: E402
from codegen.compile import compile_modules  # noqa: E402
from codegen.manifest import read_manifest  # noqa: E402
from codegen.render import TEMPLATE_DIR, render_sources  # noqa: E402
from codegen.state import dump_state, load_state  # noqa: E402
from codegen.toolchain import CompileSettings  # noqa: E402
from runtime.babi.builds import model_of  # noqa: E402
from runtime.babi.evaluate import load_split, prepare_all  # noqa: E402
from runtime.live import LiveProject  # noqa: E402
from runtime.loader import load_build  # noqa: E402
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
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated sections: spine, edits, cli, cold, answering (default: all)",
    )
    parser.add_argument(
        "--trees",
        default=str(REPO),
        help="cold, cli: comma-separated source trees whose fresh-process commands are timed, "
        "interleaved in one run (e.g. a checkout of the previous commit, then this one)",
    )
    parser.add_argument(
        "--answering-state",
        type=Path,
        default=REPO / "states" / "routed.json",
        help="answering: the state whose answering time is compared",
    )
    args = parser.parse_args()
    every = {"spine", "edits", "cli", "cold", "answering"}
    sections = set(args.only.split(",")) if args.only else every
    results: dict[str, object] = {"runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="rsi-bench-") as tmp:
        root = Path(tmp)
        if "cold" in sections:
            results["cold_rsi_build_s"] = _cold_trees(root, args.runs, args.trees.split(","))
        if "cli" in sections:
            results["cli"] = _cli_startup(root, args.runs, args.trees.split(","))
        if "edits" in sections:
            results["build_server"] = _server_start(root)
            try:
                results["edits"] = _edit_kinds(root, args.runs)
            finally:
                _stop_server(root)
        if "spine" in sections:
            _spine(root, args, results)
        if "answering" in sections:
            results["answering"] = _answering(root, args.runs, args.answering_state)
    _print_table(results)
    if args.json:
        print(json.dumps(results, sort_keys=True))
    return 0


def _spine(root: Path, args: argparse.Namespace, results: dict[str, object]) -> None:
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


#: Single-field edits: each takes the state's JSON and a value never used before.
Edit = Callable[[dict[str, Any], float], None]


def _coefficient(data: dict[str, Any], value: float) -> None:
    data["scoring"]["rag"] = value


def _expert_weight(data: dict[str, Any], value: float) -> None:
    data["experts"]["tracker"]["weight"] = value


def _add_rule(data: dict[str, Any], value: float) -> None:
    data["routing"].append({"when_all": ["where"], "boosts": {"tracker": value}})


def _remove_rule(data: dict[str, Any], value: float) -> None:
    del data["routing"][0]  # the project was prepared with two rules never built before


def _association_weight(data: dict[str, Any], value: float) -> None:
    data["associations"][0]["weight"] = value


def _new_association(data: dict[str, Any], value: float) -> None:
    cue = f"mood{int(value * 1e6)}"
    data["associations"].append({"cue": cue, "answer": "garden", "weight": value})


def _lexicon_word(data: dict[str, Any], value: float) -> None:
    # Only the ``encoding`` tables change: the static parser and reasoning modules (compiled
    # once per toolchain) must come from the cache, so ``modules_recompiled`` shows them absent.
    data["lexicon"]["move"] = [*data["lexicon"]["move"], f"strolled{int(value * 1e6)}"]


EDITS: dict[str, Edit] = {
    "scoring_coefficient": _coefficient,
    "expert_weight": _expert_weight,
    "add_routing_rule": _add_rule,
    "remove_routing_rule": _remove_rule,
    "association_weight": _association_weight,
    "new_association": _new_association,
    "lexicon_word": _lexicon_word,
}


def _edit_kinds(root: Path, runs: int) -> dict[str, dict[str, object]]:
    """Per edit kind: modules recompiled, compiled/pure tier live in process, fresh `rsi build`."""
    project = _project(root / "edits")
    project.build(CompileSettings(backend="python"))  # both tiers built once: warm caches
    project.build(CompileSettings())
    live = LiveProject(project)
    out: dict[str, dict[str, object]] = {}
    for kind, edit in EDITS.items():
        compiled_s, pure_s, fresh_s, in_process_s = [], [], [], []
        recompiled: list[list[str]] = []
        for _ in range(runs):
            _apply(project, kind, edit)
            start = time.perf_counter()
            report = live.rebuild(CompileSettings()).final
            live.current()
            compiled_s.append(time.perf_counter() - start)
            modules = read_manifest(Path(report.path), None).modules
            recompiled.append(sorted(n for n, m in modules.items() if not m.cache_hit))
            _apply(project, kind, edit)
            start = time.perf_counter()
            live.rebuild(CompileSettings(backend="python"))
            live.current()
            pure_s.append(time.perf_counter() - start)
            build = [
                sys.executable,
                "-m",
                "runtime.cli",
                "build",
                "--state",
                str(project.state_path),
            ]
            _apply(project, kind, edit)
            fresh_s.append(_wall(build, root, server=True))
            _apply(project, kind, edit)
            in_process_s.append(_wall([*build, "--no-server"], root))
        out[kind] = {
            "modules_recompiled": recompiled,
            "compiled_tier_live_s": _summary(compiled_s),
            "pure_tier_live_s": _summary(pure_s),
            "rsi_build_fresh_process_s": _summary(fresh_s),
            "rsi_build_fresh_process_no_server_s": _summary(in_process_s),
        }
    return out


def _server_start(root: Path) -> dict[str, object]:
    """Stop any build server of this tree; time the first `rsi build` (it builds in its own
    process and starts a server) and the server's start until it answers."""
    project = _project(root / "server")
    project.build(CompileSettings())
    cli = [sys.executable, "-m", "runtime.cli"]
    _wall([*cli, "server", "stop"], root)
    start = time.perf_counter()
    _wall([*cli, "build", "--state", str(project.state_path)], root, server=True)
    first = time.perf_counter() - start
    while not json.loads(_output([*cli, "server", "status", "--json"], root))["servers"]:
        time.sleep(0.05)
    return {
        "first_build_s": round(first, 4),
        "server_ready_s": round(time.perf_counter() - start, 4),
    }


def _stop_server(root: Path) -> None:
    _wall([sys.executable, "-m", "runtime.cli", "server", "stop"], root)


def _apply(project: Project, kind: str, edit: Edit) -> None:
    """Edit the state file once (a fresh value), bumping its version."""
    data = json.loads(project.state_path.read_text())
    if kind == "remove_routing_rule":
        for i in range(2):  # two rules never built before; removing one gives a new state
            _add_rule(data, _fresh_value() + i)
        _write(project, data)
        project.build(CompileSettings(backend="python"))
        project.build(CompileSettings())
        data = json.loads(project.state_path.read_text())
    edit(data, _fresh_value())
    _write(project, data)


def _write(project: Project, data: dict[str, Any]) -> None:
    data["version"] = max(project.ledger.versions()) + 1
    project.state_path.write_text(json.dumps(data, indent=2) + "\n")


def _fresh_value() -> float:
    return round(0.5 + (time.time_ns() % 10**9) / 10**9, 9)


def _cold_trees(root: Path, runs: int, trees: list[str]) -> dict[str, object]:
    """Fresh-process `rsi build` of the shipped state into an empty project, per source tree."""
    samples: dict[str, list[float]] = {tree: [] for tree in trees}
    for i in range(runs):
        for tree in trees:  # interleaved, so a noisy moment hits every tree alike
            project = root / f"cold-{len(samples[tree])}-{abs(hash(tree))}-{i}"
            project.mkdir()
            state = shutil.copy(REPO / "rsi_state.json", project / "rsi_state.json")
            cmd = [sys.executable, "-m", "runtime.cli", "build", "--state", str(state)]
            samples[tree].append(_wall(cmd, root, tree))
    return {tree: _summary(s) for tree, s in samples.items()}


def _cli_startup(root: Path, runs: int, trees: list[str]) -> dict[str, object]:
    """`rsi --help` and `rsi status` wall time in fresh processes (a built project), per
    source tree, with a bare interpreter start as the yardstick of this machine's load."""
    project = _project(root / "cli")
    project.build(CompileSettings(backend="python"))
    state = str(project.state_path)
    commands = {
        "python_bare_s": [sys.executable, "-c", "pass"],
        "rsi_help_s": [sys.executable, "-m", "runtime.cli", "--help"],
        "rsi_status_s": [sys.executable, "-m", "runtime.cli", "status", "--state", state],
    }
    samples: dict[str, list[float]] = {}
    for tree in trees:
        _wall(commands["rsi_help_s"], root, tree)  # warm the bytecode caches
    for _ in range(runs):
        for tree in trees:  # interleaved, so a noisy moment hits every tree alike
            for name, cmd in commands.items():
                key = name if len(trees) == 1 else f"{tree}:{name}"
                samples.setdefault(key, []).append(_wall(cmd, root, tree))
    return {name: _summary(s) for name, s in samples.items()}


def _wall(cmd: list[str], cwd: Path, tree: str = str(REPO), *, server: bool = False) -> float:
    """Wall time of ``cmd`` in a fresh process; ``server``: `rsi build` may use the build
    server (every other command here runs without it)."""
    start = time.perf_counter()
    _output(cmd, cwd, tree, server=server)
    return time.perf_counter() - start


def _answering(root: Path, runs: int, state_path: Path) -> dict[str, object]:
    """Answering time of a state's compiled tier as rendered and with no module asking for
    ``-O0`` or ``-Og``, alternating rounds over the same encoded stories."""
    templates = root / "templates-O1"
    shutil.copytree(TEMPLATE_DIR, templates)
    for template in templates.glob("*.j2"):
        text = template.read_text()
        template.write_text(re.sub(r"^# rsi: cflags = -O[0g]\n", "", text, flags=re.MULTILINE))
    state = load_state(state_path)
    settings = CompileSettings()
    models = {}
    for label, template_dir in (("as_rendered", None), ("all_O1", templates)):
        built = build_state(state, dump_state(state), settings, root / label, template_dir)
        models[label] = model_of(load_build(built.path, template_dir=template_dir))
    data = os.environ.get("RSI_BABI_DIR")
    prepared = prepare_all(models["as_rendered"], load_split(Path(data) if data else None, "train"))
    samples: dict[str, list[float]] = {label: [] for label in models}
    answers: dict[str, list[str]] = {}
    for _ in range(max(runs, 3)):
        for label, model in models.items():
            start = time.perf_counter()
            answers[label] = [choice for p in prepared for choice, _ in model.answer_all(p)]
            samples[label].append(time.perf_counter() - start)
    medians = {label: statistics.median(s) for label, s in samples.items()}
    return {
        "state": str(state_path),
        "questions": sum(p.n_questions for p in prepared),
        "data": data or "generator",
        **{f"{label}_s": _summary(s) for label, s in samples.items()},
        "ratio_as_rendered_to_all_O1": round(medians["as_rendered"] / medians["all_O1"], 3),
        "same_answers": answers["as_rendered"] == answers["all_O1"],
    }


def _output(cmd: list[str], cwd: Path, tree: str = str(REPO), *, server: bool = False) -> str:
    env = dict(os.environ, PYTHONPATH=tree, RSI_BUILD_SERVER="1" if server else "0")
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return (done.stdout.splitlines() or [""])[-1]


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
    settings = replace(CompileSettings(), backend=tier)  # type: ignore[arg-type]
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
        elif key in ("cli", "cold_rsi_build_s") and isinstance(value, dict):
            for name, row in value.items():
                print(f"{name:48s} median {row['median']:8.3f} s   samples {row['samples']}")
        elif key == "edits" and isinstance(value, dict):
            print(
                f"{'edit':22s} {'recompiled':24s} compiled live   pure live   fresh rsi build"
                "   (no server)"
            )
            for kind, row in value.items():
                modules = ",".join(sorted({m for run in row["modules_recompiled"] for m in run}))
                print(
                    f"{kind:22s} {modules:24s} "
                    f"{row['compiled_tier_live_s']['median']:10.3f} s "
                    f"{row['pure_tier_live_s']['median']:9.3f} s "
                    f"{row['rsi_build_fresh_process_s']['median']:12.3f} s"
                    f"{row['rsi_build_fresh_process_no_server_s']['median']:12.3f} s"
                )
        elif key == "per_module_compile_s" and isinstance(value, dict):
            for name, row in value.items():
                w = row["with_shared_utility"]["median"]
                wo = row["without_shared_utility"]["median"]
                print(f"compile {name:38s} with shared {w:7.3f} s   without {wo:7.3f} s")
        else:
            print(f"{key:48s} {value}")


if __name__ == "__main__":
    sys.exit(main())
