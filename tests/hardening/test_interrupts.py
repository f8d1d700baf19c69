"""A terminal's Ctrl-C during a compile (SIGINT to the whole foreground process group):
``rsi watch`` finishes the compile in flight and stops cleanly; ``rsi build`` stops its
compile at once. Either way no compiler process outlives the command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from codegen.fsutil import STAGING_PREFIX
from codegen.toolchain import CompileSettings
from runtime.project import Project
from tests.conftest import PROBE_TEMPLATES, REPO


@pytest.mark.slow
def test_ctrl_c_during_a_compile_waits_for_it(make_project: Callable[..., Project]) -> None:
    """A terminal's Ctrl-C signals the whole foreground process group, compiler workers
    included; the watcher alone must decide to stop, after the compile it waits for."""
    project = make_project()
    cache = project.generated_dir / ".cache"
    cache.unlink()  # a cold cache of its own: the compile is sure to be in flight
    cache.mkdir()
    project.build(CompileSettings(backend="python"))
    state_before = project.state_path.read_bytes()
    env = {k: v for k, v in os.environ.items() if k != "RSI_BACKEND"}
    command = [
        sys.executable,
        "-m",
        "runtime.cli",
        "watch",
        "--state",
        str(project.state_path),
        "--log-json",
        "--no-screen",
        "--templates",
        str(PROBE_TEMPLATES),
        "--backend",
        "cython",
    ]
    # Its own process group, as a shell runs a foreground job: killpg is the Ctrl-C.
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        workers = _await_workers(proc.pid, timeout_s=60)  # the warm worker, maybe idle yet
        deadline = time.monotonic() + 120
        while not _processes_naming(cache):  # a C compiler of its cache: a compile in flight
            assert time.monotonic() < deadline, "no compile started within 120 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0
    messages = [json.loads(line)["message"] for line in out.splitlines()]
    assert not [m for m in messages if m.startswith(("build-failed", "tier-mismatch"))]
    assert any(m.startswith("compiled-live: v1: compiled tier ") for m in messages), messages
    assert [pid for pid in workers if _alive(pid)] == []
    assert _processes_naming(project.generated_dir.parent) == []
    leftovers = [p for d in (project.generated_dir, cache) for p in d.glob(f"{STAGING_PREFIX}*")]
    assert leftovers == []
    assert project.state_path.read_bytes() == state_before
    assert list(project.state_path.parent.glob("*.tmp")) == []
    active = project.ledger.active()
    assert active is not None and active.tier == "cython"


@pytest.mark.slow
def test_ctrl_c_of_rsi_build_kills_its_compile(make_project: Callable[..., Project]) -> None:
    project = make_project(templates=None)
    cache = project.generated_dir / ".cache"
    cache.unlink()  # cold: every module compiles
    cache.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RSI_BACKEND"}
    command = [sys.executable, "-m", "runtime.cli", "build", "--state", str(project.state_path)]
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        # The shared utility's worker starts first; a second one compiles a module.
        workers = _await_workers(proc.pid, timeout_s=120, count=2)
        before = _module_artifacts(cache)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        "rsi: interrupted; state, builds and history are as they were "
        "(the next command removes any temp files)"
    )
    assert [pid for pid in workers if _alive(pid)] == []
    assert _processes_naming(project.generated_dir.parent) == []
    # Queued modules never start; one starting as the interrupt came may finish.
    assert len(_module_artifacts(cache) - before) <= 2
    assert project.ledger.active() is None


def _module_artifacts(cache: Path) -> set[str]:
    shared = CompileSettings().shared_module_name
    return {p.name for p in cache.glob("*/*.so") if p.parent.name != shared}


def _await_workers(parent: int, *, timeout_s: float, count: int = 1) -> list[int]:
    """Pids of ``count`` compiler workers (``python -m codegen.compile``) of ``parent``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [pid for pid, argv in _processes() if "codegen.compile" in argv]
        mine = [pid for pid in found if _parent(pid) == parent]
        if len(mine) >= count:
            return mine
        time.sleep(0.02)
    raise AssertionError(f"no compiler worker started within {timeout_s} s")


def _processes() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            found.append((int(entry.name), argv))
    return found


def _processes_naming(path: Path) -> list[tuple[int, str]]:
    """Processes whose command line names ``path`` (compilers of its cache, say)."""
    return [(pid, argv) for pid, argv in _processes() if str(path) in argv and _alive(pid)]


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
