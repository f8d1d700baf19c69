"""`make demo`: build the shipped state, answer bAbI questions from the embedded generator,
hot-swap a changed state into the running process while two threads keep answering, show
what changed in the generated code, and roll back.

Works in ``.demo/`` (a copy of the project), so the repository's own state is untouched.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codegen.errors import RSIError  # noqa: E402
from codegen.state import parse_state  # noqa: E402
from codegen.toolchain import CompileSettings  # noqa: E402
from runtime.babi.builds import model_of  # noqa: E402
from runtime.babi.data import Story  # noqa: E402
from runtime.babi.evaluate import answers_match, evaluate, load_split  # noqa: E402
from runtime.babi.model import BabiModel  # noqa: E402
from runtime.live import LiveProject  # noqa: E402
from runtime.loader import LoadedBuild  # noqa: E402
from runtime.project import Project  # noqa: E402


def main() -> int:
    root = REPO / ".demo"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    shutil.copy(REPO / "rsi_state.json", root / "rsi_state.json")
    project = Project(root / "rsi_state.json")
    settings = CompileSettings()

    report = project.build(settings)
    print(
        f"1. built state v{report.state_version} -> build {report.build_id} ({report.tier}), "
        f"{report.modules_compiled} modules compiled in {report.seconds:.1f} s"
    )
    stories = load_split(None, "heldout")
    live = LiveProject(project)
    result = evaluate(_model(live, live.current()), stories, report.build_id)
    print(
        f"   bAbI on embedded generated stories ({result.questions} questions): mean accuracy "
        f"{result.mean:.3f}, {result.passed}/{len(result.per_task)} task families >= 0.95, "
        f"{result.questions_per_s:,.0f} questions/s"
    )

    served: Counter[str] = Counter()
    failures: list[BaseException] = []
    stop = threading.Event()
    args = (live, stories, served, failures, stop)
    threads = [threading.Thread(target=_caller, args=args) for _ in range(2)]
    for t in threads:
        t.start()
    print("2. two threads now answer questions with the active build continuously")

    data = json.loads(project.state_path.read_text())
    old = data["scoring"]["temperature"]
    data["version"] += 1
    data["scoring"]["temperature"] = round(old * 1.5, 4)
    project.state_path.write_text(json.dumps(data, indent=2) + "\n")
    swap = live.rebuild(settings, two_tier=True)
    assert swap.interim is not None
    print(
        f"3. changed scoring.temperature {old} -> {data['scoring']['temperature']} "
        f"(state v{data['version']}):"
    )
    print(
        f"   pure-Python tier live after {swap.interim.seconds:.2f} s "
        f"(build {swap.interim.build_id})"
    )
    print(
        f"   compiled tier live after {swap.final.seconds:.2f} s more "
        f"(build {swap.final.build_id}, {swap.final.modules_compiled} module recompiled), "
        "once both tiers agreed on their self-tests (meanwhile the threads answered on the "
        "slower pure-Python tier, sharing the one interpreter with the compiler)"
    )
    diff = project.diff(report.build_id, swap.final.build_id).splitlines()
    changed = [ln for ln in diff if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    print("   generated code that changed:")
    for line in changed[:6]:
        print(f"     {line}")

    back = live.rollback()
    print(
        f"4. rolled back to state v{back.state_version}: build {back.build_id} live again in "
        f"{back.seconds * 1000:.0f} ms, no compiler run: {not back.compiled}"
    )
    identical = project.state_path.read_bytes() == project.ledger.state(back.state_version).data
    print(f"   state file restored byte for byte: {identical}")

    stop.set()
    for t in threads:
        t.join()
    print(f"5. questions answered per build: {dict(served)}; wrong or failed: {len(failures)}")
    return 1 if failures or not identical else 0


def _caller(
    live: LiveProject,
    stories: list[Story],
    served: Counter[str],
    failures: list[BaseException],
    stop: threading.Event,
) -> None:
    models: dict[str, BabiModel] = {}
    while not stop.is_set():
        for story in stories[:50]:
            build = live.current()  # taken once per call, used for the whole call
            model = models.setdefault(build.build_id, _model(live, build))
            question = story.questions[0]
            try:
                choice, _ = model.answer(story.sentences[: question.position], question.text)
            except RSIError as exc:
                failures.append(exc)
                continue
            if not answers_match(choice, question.answer):
                failures.append(AssertionError(f"{question.text} -> {choice}"))
            served[build.build_id] += 1
            # A request rate (about 200/s per thread), not a busy loop: two threads spinning
            # in Python would hold the GIL and starve the in-process compile.
            if stop.wait(0.005):
                return


def _model(live: LiveProject, build: LoadedBuild) -> BabiModel:
    """The model over ``build``, planned from the committed state it was built for."""
    record = live.project.ledger.state(int(build.manifest["state_version"]))
    return model_of(build, parse_state(record.data))


if __name__ == "__main__":
    sys.exit(main())
