"""`make demo`: the RSI loop, live. From ``states/uniform.json`` (learned knowledge, uniform
weights, no routing rules), on the embedded generated stories, a short loop proposes changes,
gates each through the real gate and promotes the winners into the running process while two
threads keep answering questions through the hot slot. Prints each decision with its
p-value and the generated-code diff, writes the HTML report and says where it is.

Works in ``.demo/`` (a copy of the project), so the repository's own state is untouched; its
module cache is the repository's (the modules ``make install`` compiled are reused).
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codegen.errors import RSIError  # noqa: E402
from codegen.toolchain import CompileSettings  # noqa: E402
from runtime.babi.builds import model_of  # noqa: E402
from runtime.babi.data import Story  # noqa: E402
from runtime.babi.evaluate import answers_match, load_split  # noqa: E402
from runtime.babi.model import BabiModel  # noqa: E402
from runtime.live import LiveProject  # noqa: E402
from runtime.project import Project  # noqa: E402
from runtime.promote import format_p  # noqa: E402
from runtime.rsi.loop import LoopSettings, run_loop  # noqa: E402
from runtime.rsi.report import write_report  # noqa: E402

#: The demo's loop: a few iterations, about two minutes on a laptop.
ITERATIONS = 3
BUDGET_S = 120.0


def main() -> int:
    start = time.perf_counter()
    root = REPO / ".demo"
    shutil.rmtree(root, ignore_errors=True)
    (root / "generated").mkdir(parents=True)
    cache = REPO / "generated" / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    (root / "generated" / ".cache").symlink_to(cache)
    shutil.copy(REPO / "states" / "uniform.json", root / "rsi_state.json")
    project = Project(root / "rsi_state.json")
    built = project.build(CompileSettings())
    print(f"1. built the uniform state: build {built.build_id} in {built.seconds:.1f} s")

    live = LiveProject(project)
    served: Counter[str] = Counter()
    right: Counter[str] = Counter()
    failures: list[BaseException] = []
    stop = threading.Event()
    stories = load_split(None, "train")
    args = (live, stories, served, right, failures, stop)
    threads = [threading.Thread(target=_caller, args=args) for _ in range(2)]
    for t in threads:
        t.start()
    print("2. two threads answer questions through the hot slot while the loop runs")

    def on_decision(record: Mapping[str, Any]) -> None:
        print(
            f"   iteration {record['iteration']} ({record['label']}): {record['verdict']}, "
            f"{format_p(record['p_value'])}: {record['reason']}"
        )
        for change in record["changes"]:
            print(f"     {change}")
        if record["promoted"]:
            diff = project.diff(record["incumbent"], record["candidate"]).splitlines()
            changed = [ln for ln in diff if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
            print(f"     generated code ({len(changed)} lines changed), first lines:")
            for line in changed[:14]:
                print(f"       {line}")

    print(f"3. rsi loop (at most {ITERATIONS} iterations or {BUDGET_S:.0f} s):")
    result = run_loop(
        project,
        LoopSettings(iterations=ITERATIONS, budget_s=BUDGET_S, seed=0),
        live=live,
        on_decision=on_decision,
    )
    stop.set()
    for t in threads:
        t.join()
    manifest = result.manifest
    print(
        f"   {len(manifest.iterations)} iterations, {result.promotions} promotions in "
        f"{manifest.elapsed_s:.0f} s ({manifest.stop_reason})"
    )
    if manifest.iterations:
        held = manifest.iterations[-1]["heldout_per_task"]
        print(f"   held-out accuracy per task now: {held}")
    report = write_report(project, manifest, root / "report")
    print(f"4. report: {report.index}")
    per_build = {b: f"{right[b]}/{n} right" for b, n in served.items()}
    print(
        f"5. questions answered per build: {per_build}; failed calls: {len(failures)}; "
        f"demo took {time.perf_counter() - start:.0f} s"
    )
    return 1 if failures else 0


def _caller(
    live: LiveProject,
    stories: list[Story],
    served: Counter[str],
    right: Counter[str],
    failures: list[BaseException],
    stop: threading.Event,
) -> None:
    models: dict[str, BabiModel] = {}
    while not stop.is_set():
        for story in stories[::7]:
            build = live.current()  # taken once per call, used for the whole call
            model = models.setdefault(build.build_id, model_of(build))
            question = story.questions[0]
            try:
                choice, _ = model.answer(story.sentences[: question.position], question.text)
            except RSIError as exc:
                failures.append(exc)
                continue
            served[build.build_id] += 1
            right[build.build_id] += answers_match(choice, question.answer)
            # A request rate (about 100/s per thread), not a busy loop: two spinning threads
            # would hold the GIL and starve the loop.
            if stop.wait(0.01):
                return


if __name__ == "__main__":
    sys.exit(main())
