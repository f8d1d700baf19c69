"""Watch mode under load: scripted edits while two threads answer questions continuously.

100 edits (70 valid, 20 invalid, 10 valid but worse), written in place, by temp-file rename
or vim-style backup-and-rename, some as two saves within one debounce window; a third of the
valid ones keep the old "version" (committed as the next one). Checks: no
failed call, every answer reproduced by the one build that gave it, every edit accounted for
(valid: committed; invalid: refused, file untouched; worse: rolled back, content kept), and
measures write-to-live latency of both tiers and serving throughput during compiles against
idle (same run). Raw samples go to ``--out``.

    .venv/bin/python tools/bench_watch.py --out bench_watch.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codegen.state import parse_state  # noqa: E402
from codegen.toolchain import CompileSettings  # noqa: E402
from runtime.babi.builds import model_of  # noqa: E402
from runtime.babi.data import Story  # noqa: E402
from runtime.babi.evaluate import load_split  # noqa: E402
from runtime.babi.model import BabiModel  # noqa: E402
from runtime.loader import LoadedBuild, load_build  # noqa: E402
from runtime.project import Project  # noqa: E402
from runtime.watch import Outcome, WatchEvent, WatchHandle, watch  # noqa: E402

FINAL = (Outcome.PURE_LIVE, Outcome.REFUSED, Outcome.ROLLED_BACK, Outcome.BUILD_FAILED)
STYLES = ("in-place", "rename", "vim-backup")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--compiled-every", type=int, default=10, help="valid edits per timed compile"
    )
    parser.add_argument("--idle-s", type=float, default=5.0, help="idle throughput window")
    parser.add_argument("--out", type=Path, default=None, help="raw samples and summary (JSON)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="rsi-bench-watch-"))
    state_path = root / "rsi_state.json"
    shutil.copy(REPO / "rsi_state.json", state_path)
    (root / "generated").mkdir()
    if (REPO / "generated" / ".cache").is_dir():  # reuse compiled modules of the checkout
        (root / "generated" / ".cache").symlink_to(REPO / "generated" / ".cache")
    project = Project(state_path)
    project.build(CompileSettings())
    handle = watch(state_path)
    stories = load_split(None, "heldout")[:60]
    serving = _Serving(handle.current, stories)
    threads = [threading.Thread(target=serving.run) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(args.idle_s)
    idle = (time.monotonic() - args.idle_s, time.monotonic())
    plan = _plan(rng)
    results = []
    compile_windows: list[tuple[float, float]] = []
    valid_seen = 0
    for index, kind in enumerate(plan):
        style = STYLES[index % len(STYLES)]
        burst = kind == "valid" and rng.random() < 0.2
        good = json.loads(project.ledger.state(project.ledger.versions()[-1]).data)
        data = _edit(kind, good, rng)
        raw = (json.dumps(data, indent=2) + "\n").encode()
        count = len(handle.history())
        start = time.monotonic()
        if burst:  # half of the file first (a save in progress), the rest 5 ms later
            _write(state_path, raw[: len(raw) // 2], style)
            time.sleep(0.005)
        before_write = state_path.read_bytes() if kind != "valid" else b""
        _write(state_path, raw, style)
        event = _await(handle, count, raw)
        row = {
            "index": index,
            "kind": kind,
            "style": style,
            "burst": burst,
            "outcome": str(event.outcome) if event else "missed",
            "write_to_final_s": (event.at - start) if event else None,
            "message": event.message if event else "",
        }
        if kind == "valid" and event and event.outcome is Outcome.PURE_LIVE:
            valid_seen += 1
            if valid_seen % args.compiled_every == 0:
                done = _await(handle, count, raw, Outcome.COMPILED_LIVE, timeout_s=300)
                row["write_to_compiled_s"] = (done.at - start) if done else None
                if done:
                    compile_windows.append((event.at, done.at))
        print(
            f"{index:3d} {kind:7s} {style:10s} {row['outcome']:13s} "
            f"{row['write_to_final_s'] or 0:.3f} s {row.get('write_to_compiled_s') or ''}",
            file=sys.stderr,
        )
        row["file_after"] = _sha(state_path.read_bytes())
        row["file_written"] = _sha(raw)
        row["kept"] = _kept(project, raw) if kind == "worse" else None
        row["file_before"] = _sha(before_write) if before_write else None
        results.append(row)
    serving.stop.set()
    for t in threads:
        t.join()
    handle.stop()
    summary = _summary(results, serving, idle, compile_windows, handle)
    summary["interference"] = _interference(project, stories, args.idle_s, rng)
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(
            json.dumps({"summary": summary, "edits": results, "answers": serving.times}, indent=1)
        )
    shutil.rmtree(root, ignore_errors=True)
    return 0 if summary["ok"] else 1


class _Serving:
    """Two threads answer questions; each answer records the one build it used."""

    def __init__(self, current: Callable[[], LoadedBuild], stories: list[Story]) -> None:
        self.current = current
        self.stories = stories
        self.stop = threading.Event()
        self.times: list[float] = []
        self.failures: list[str] = []
        self.answers: list[tuple[str, int, str]] = []
        self.builds: dict[str, LoadedBuild] = {}
        self.models: dict[str, BabiModel] = {}

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            build = self.current()  # once per call, used for the whole call
            model = self.models.get(build.build_id) or self._model(build)
            k = i % len(self.stories)
            story = self.stories[k]
            question = story.questions[0]
            try:
                choice, _ = model.answer(story.sentences[: question.position], question.text)
            except Exception as exc:  # noqa: BLE001 - the bench counts every failure
                self.failures.append(repr(exc))
                continue
            self.answers.append((build.build_id, k, choice))
            self.times.append(time.monotonic())
            i += 1
            time.sleep(0.001)  # a request stream, not a spin: lets the watcher's thread run

    def _model(self, build: LoadedBuild) -> BabiModel:
        self.builds[build.build_id] = build
        return self.models.setdefault(build.build_id, model_of(build))


def _interference(
    project: Project, stories: list[Story], idle_s: float, rng: random.Random
) -> dict[str, float]:
    """Throughput on one fixed compiled build: idle, during a worker compile, in-process.

    The watch loop's compile windows serve the pure tier (slower than the compiled one by
    itself), so the compiler's cost to serving is measured here on a fixed build.
    """
    active = project.ledger.active()
    assert active is not None
    build = load_build(project.generated_dir / active.build_id)
    serving = _Serving(lambda: build, stories)
    threads = [threading.Thread(target=serving.run) for _ in range(2)]
    for t in threads:
        t.start()
    windows: dict[str, tuple[float, float]] = {}
    start = time.monotonic()
    time.sleep(idle_s)
    windows["idle"] = (start, time.monotonic())
    base = project.ledger.state(active.version).data
    for label, nice in (("workers", 0), ("in_process", None)):
        data = json.loads(base)
        # The temperature is baked into every state's scoring loop, and the value is new to
        # the module cache (a seeded one was compiled by the previous run): a real compile.
        data["scoring"]["temperature"] = round(0.9 + (time.time_ns() % 10**9) / 5e9, 9)
        raw = (json.dumps(data, indent=2) + "\n").encode()
        settings = CompileSettings(worker_nice=nice)
        start = time.monotonic()
        built = project.build_candidate(parse_state(raw), raw, settings)
        windows[label] = (start, time.monotonic())
        if not built.compiled:
            raise SystemExit(f"interference: the {label} build compiled nothing")
    serving.stop.set()
    for t in threads:
        t.join()
    rates = {k: _rate(serving.times, [w]) for k, w in windows.items()}
    return {
        "idle_answers_per_s": rates["idle"],
        "worker_compile_answers_per_s": rates["workers"],
        "worker_compile_s": windows["workers"][1] - windows["workers"][0],
        "in_process_compile_answers_per_s": rates["in_process"],
        "in_process_compile_s": windows["in_process"][1] - windows["in_process"][0],
        "worker_ratio": rates["workers"] / rates["idle"] if rates["idle"] else 0.0,
        "in_process_ratio": rates["in_process"] / rates["idle"] if rates["idle"] else 0.0,
        "failed_calls": len(serving.failures),
    }


def _plan(rng: random.Random) -> list[str]:
    kinds = ["valid"] * 70 + ["invalid"] * 20 + ["worse"] * 10
    rng.shuffle(kinds)
    return kinds


def _edit(kind: str, good: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(good))
    version = int(data["version"])
    scoring: dict[str, float] = data["scoring"]
    experts: dict[str, dict[str, float]] = data["experts"]
    if kind == "valid":
        # One in three saved without bumping "version" (a hand edit): committed as the next.
        data["version"] = version + 1 if rng.random() < 2 / 3 else version
        if rng.random() < 0.5:
            key = rng.choice(["entity_attribute", "attention", "rag", "commonsense"])
            scoring[key] = round(scoring[key] * rng.uniform(0.98, 1.02), 6)
        else:
            name = rng.choice(["tracker", "motive", "counter"])
            experts[name]["weight"] = round(experts[name]["weight"] * rng.uniform(0.98, 1.02), 6)
    elif kind == "worse":
        data["version"] = version + 1
        for name in ("tracker", "motive"):
            experts[name]["weight"] = 0.0
    else:  # each invalid save differs from the last (an identical save is no change)
        choice = rng.randrange(4)
        data["version"] = version + 1
        scoring["commonsense"] = round(rng.uniform(0.01, 0.05), 6)
        if choice == 0:
            scoring["attention"] = "fast"  # type: ignore[assignment]
        elif choice == 1:
            experts["tracker"]["weight"] = -1.0
        elif choice == 2:
            data["unknown_field"] = 1
        else:
            data["version"] = "next"  # not an integer
    return data


def _write(path: Path, raw: bytes, style: str) -> None:
    if style == "in-place":
        with open(path, "r+b") as fh:
            fh.truncate(0)
            fh.write(raw)
    elif style == "rename":
        tmp = path.with_name(f".{path.name}.edit")
        tmp.write_bytes(raw)
        os.replace(tmp, path)
    else:
        backup = path.with_name(path.name + "~")
        os.rename(path, backup)
        path.write_bytes(raw)
        backup.unlink()


def _await(
    handle: WatchHandle,
    count: int,
    raw: bytes,
    outcomes: tuple[Outcome, ...] | Outcome = FINAL,
    timeout_s: float = 120.0,
) -> WatchEvent | None:
    wanted = (outcomes,) if isinstance(outcomes, Outcome) else outcomes
    digest = _sha(raw)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = handle.wait_for(count + 1, timeout_s=max(0.0, deadline - time.monotonic()))
        for event in events[count:]:
            if event.state_sha256 == digest and event.outcome in wanted:
                return event
        count = len(events)
    return None


def _kept(project: Project, raw: bytes) -> bool:
    rejected = project.state_path.with_name(f"{project.state_path.stem}.rejected.json")
    in_ledger = any(
        project.ledger.decision_candidate(d.id) == raw for d in project.ledger.decisions(5)
    )
    return rejected.exists() and rejected.read_bytes() == raw and in_ledger


def _summary(
    results: list[dict[str, Any]],
    serving: _Serving,
    idle: tuple[float, float],
    compiles: list[tuple[float, float]],
    handle: WatchHandle,
) -> dict[str, Any]:
    by_kind = Counter(str(r["kind"]) for r in results)
    outcome = Counter(f"{r['kind']}:{r['outcome']}" for r in results)
    pure = [
        float(r["write_to_final_s"])
        for r in results
        if r["kind"] == "valid" and r["outcome"] == "pure-live"
    ]
    compiled = [float(r["write_to_compiled_s"]) for r in results if r.get("write_to_compiled_s")]
    invalid_ok = all(
        r["outcome"] == "refused" and r["file_after"] == r["file_written"]
        for r in results
        if r["kind"] == "invalid"
    )
    worse_ok = all(
        r["outcome"] == "rolled-back" and r["kept"] for r in results if r["kind"] == "worse"
    )
    missed = sum(1 for r in results if r["outcome"] == "missed")
    live_ids = {
        e.serving
        for e in handle.history()
        if e.outcome in (Outcome.PURE_LIVE, Outcome.COMPILED_LIVE)
    }
    served_ids = {b for b, _, _ in serving.answers}
    mismatched = _replay(serving)
    idle_rate = _rate(serving.times, [idle])
    compile_rate = _rate(serving.times, compiles)
    ratio = compile_rate / idle_rate if idle_rate else 0.0
    summary: dict[str, Any] = {
        "edits": dict(by_kind),
        "outcomes": dict(outcome),
        "failed_calls": len(serving.failures),
        "answers": len(serving.answers),
        "builds_served": len(served_ids),
        "served_a_build_never_live": sorted(served_ids - live_ids - {_first(serving)}),
        "answers_not_reproduced_by_their_build": mismatched,
        "missed_edits": missed,
        "invalid_refused_file_untouched": invalid_ok,
        "worse_rolled_back_content_kept": worse_ok,
        "pure_write_to_live_median_s": statistics.median(pure) if pure else None,
        "compiled_write_to_live_median_s": statistics.median(compiled) if compiled else None,
        "pure_samples_s": pure,
        "compiled_samples_s": compiled,
        "loop_idle_answers_per_s": idle_rate,  # compiled tier serving
        "loop_compile_window_answers_per_s": compile_rate,  # pure tier serving
        "loop_ratio_pure_during_compile_to_compiled_idle": ratio,
    }
    summary["ok"] = bool(  # correctness only; the timings are reported, not judged here
        not serving.failures
        and not mismatched
        and not missed
        and invalid_ok
        and worse_ok
        and not summary["served_a_build_never_live"]
    )
    return summary


def _first(serving: _Serving) -> str:
    return serving.answers[0][0] if serving.answers else ""


def _replay(serving: _Serving) -> int:
    """Answers a fresh call of the recorded build does not reproduce (a mixed build would)."""
    bad = 0
    models: dict[str, BabiModel] = {}
    for build_id, k, choice in serving.answers[:: max(1, len(serving.answers) // 2000)]:
        if build_id not in models:  # a fresh model over the build's directory
            models[build_id] = model_of(load_build(serving.builds[build_id].path))
        model = models[build_id]
        story = serving.stories[k]
        q = story.questions[0]
        if model.answer(story.sentences[: q.position], q.text)[0] != choice:
            bad += 1
    return bad


def _rate(times: list[float], windows: list[tuple[float, float]]) -> float:
    span = sum(b - a for a, b in windows)
    n = sum(1 for t in times for a, b in windows if a <= t < b)
    return n / span if span > 0 else 0.0


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


if __name__ == "__main__":
    sys.exit(main())
