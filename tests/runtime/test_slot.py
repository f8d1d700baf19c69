"""Hot swap under load: no failed call, every result from exactly one build."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from codegen.toolchain import CompileSettings
from runtime.live import LiveProject
from runtime.loader import load_build
from runtime.project import Project
from tests.conftest import edit_state


def test_swap_while_two_threads_call(make_project: Callable[..., Project]) -> None:
    project = make_project()
    settings = CompileSettings()
    edit_state(project, scoring__rag=1.0)
    live_ids = {}
    project.build(settings)
    live = LiveProject(project)
    live_ids[live.current().build_id] = 1.0
    edit_state(project, version=2, scoring__rag=2.0)
    second = live.rebuild(settings).final
    live_ids[second.build_id] = 2.0
    assert len(live_ids) == 2

    stop = threading.Event()
    seen: list[tuple[str, float]] = []
    errors: list[BaseException] = []

    def caller() -> None:
        while not stop.is_set():
            build = live.current()  # taken once per call
            try:
                seen.append((build.build_id, build.module("probe").weighted(1.0)))
            except BaseException as exc:  # noqa: BLE001 - the test counts every failure
                errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(2)]
    for t in threads:
        t.start()
    first, second_build = (
        load_build(project.generated_dir / b, template_dir=project.template_dir) for b in live_ids
    )
    for _ in range(300):
        live.slot.swap(first)
        time.sleep(0.0005)
        live.slot.swap(second_build)
        time.sleep(0.0005)
    live.rollback(1)  # a full rollback while callers run, too
    time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()

    assert errors == []
    assert len(seen) > 200
    assert {build_id for build_id, _ in seen} == set(live_ids)
    assert all(live_ids[build_id] == value for build_id, value in seen)
