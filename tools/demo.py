"""`make demo`: build the shipped state, hot-swap a changed state into a running process while
two threads keep calling it, show what changed in the generated code, and roll back.

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

from codegen.toolchain import CompileSettings  # noqa: E402
from runtime.live import LiveProject  # noqa: E402
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

    live = LiveProject(project)
    served: Counter[str] = Counter()
    failures: list[BaseException] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_caller, args=(live, served, failures, stop)) for _ in range(2)
    ]
    for t in threads:
        t.start()
    print("2. two threads now call the active build continuously")

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
        "after both tiers agreed on their self-tests"
    )
    changed = [
        ln
        for ln in project.diff(report.build_id, swap.final.build_id).splitlines()
        if ln.startswith(("+", "-")) and not ln.startswith(("+++", "---"))
    ]
    print("   generated code that changed:")
    for line in changed[:6]:
        print(f"     {line}")

    back = live.rollback()
    print(
        f"4. rolled back to state v{back.state_version}: build {back.build_id} live again in "
        f"{back.seconds * 1000:.0f} ms, no compiler run: {not back.compiled}"
    )
    identical = project.state_path.read_bytes() == project.ledger.state(1).data
    print(f"   state file restored byte for byte: {identical}")

    stop.set()
    for t in threads:
        t.join()
    print(f"5. calls served per build: {dict(served)}; failed calls: {len(failures)}")
    return 1 if failures or not identical else 0


def _caller(
    live: LiveProject, served: Counter[str], failures: list[BaseException], stop: threading.Event
) -> None:
    while not stop.is_set():
        build = live.current()
        try:
            for module in build.modules.values():
                probe = getattr(module, "rsi_selftest", None)
                if probe is not None:
                    probe()
        except Exception as exc:  # noqa: BLE001 - the demo reports every failed call
            failures.append(exc)
        served[build.build_id] += 1


if __name__ == "__main__":
    sys.exit(main())
