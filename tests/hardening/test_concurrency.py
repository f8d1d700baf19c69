"""Two processes changing one project at once: serialized by the lock, never corrupt; the
one that waits too long gets a clear message."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import PURE, Served, serve

from codegen.errors import LockTimeout
from codegen.locking import LockError, lock_path_for, project_lock
from codegen.state import load_state

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

HOLD = """
import sys, time
from pathlib import Path
from codegen.locking import LockError, lock_path_for, project_lock
with project_lock(Path(sys.argv[1])):
    Path(sys.argv[2]).write_text("held")
    time.sleep(float(sys.argv[3]))
"""

# Read-modify-write of the state under the (re-entrant) project lock, many times over.
BUMP = """
import sys
from pathlib import Path
from codegen.locking import LockError, lock_path_for, project_lock
from codegen.state import load_state, save_state
path, n, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
seen = []
for _ in range(n):
    with project_lock(path, timeout_s=60):
        state = load_state(path)
        save_state(path, state.model_copy(update={"version": state.version + 1}))
        seen.append(state.version + 1)
out.write_text(" ".join(map(str, seen)))
"""

# Reads the state file without the lock as fast as it can: must never see a partial file.
READ = """
import sys, time
from pathlib import Path
from codegen.state import load_state
path, stop = Path(sys.argv[1]), Path(sys.argv[2])
reads = 0
while not stop.exists():
    load_state(path)
    reads += 1
print(reads)
"""


def _script(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _hold_lock(state: Path, seconds: float, tmp: Path) -> subprocess.Popen[str]:
    ready = tmp / "held"
    holder = _script(HOLD, state, ready, seconds)
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert holder.poll() is None, holder.communicate()
        assert time.monotonic() < deadline, "lock holder did not start"
        time.sleep(0.02)
    return holder


def _rsi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True, env=ENV
    )


def test_waiting_too_long_gives_a_clear_message(served: Served, tmp_path: Path) -> None:
    state = served.project.state_path
    before = state.read_bytes()
    holder = _hold_lock(state, 30, tmp_path)
    try:
        start = time.monotonic()
        proc = _rsi("build", "--backend", "python", "--state", str(state), "--lock-timeout", "0.5")
        waited = time.monotonic() - start
        rollback = _rsi("rollback", "--state", str(state), "--lock-timeout", "0.2")
    finally:
        holder.kill()
        holder.wait()
    expected = (
        f"rsi: error: rsi_state.json.lock: held by process {holder.pid}; gave up after 0.5 s "
        "(retry when it finishes, or raise --lock-timeout)\n"
    )
    assert (proc.returncode, proc.stderr) == (2, expected)
    assert rollback.returncode == 2
    assert re.fullmatch(
        r"rsi: error: rsi_state.json.lock: held by process \d+; gave up after "
        r"0.2 s \(retry when it finishes, or raise --lock-timeout\)\n",
        rollback.stderr,
    )
    assert waited >= 0.5
    assert state.read_bytes() == before
    served.project.ledger.check_integrity()
    assert served.project.status().active_build == served.build_id


def test_a_killed_lock_holder_does_not_block_the_next_command(
    served: Served, tmp_path: Path
) -> None:
    holder = _hold_lock(served.project.state_path, 60, tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with project_lock(served.project.state_path, timeout_s=2):
        pass  # the kernel released the flock with the process


def test_another_thread_waiting_too_long_gets_a_clear_message(served: Served) -> None:
    state = served.project.state_path
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with project_lock(state):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        holding.wait(10)
        with (
            pytest.raises(
                LockTimeout,
                match=r"^rsi_state.json.lock: another thread held the lock for over 0.1 s$",
            ),
            project_lock(state, timeout_s=0.1),
        ):
            pass
    finally:
        release.set()
        thread.join()


@pytest.mark.slow
def test_concurrent_writers_are_serialized_and_readers_never_see_a_torn_file(
    tmp_path: Path,
) -> None:
    state = tmp_path / "rsi_state.json"
    state.write_bytes(json.dumps({"version": 1, "experts": {"a": {"kind": "tracking"}}}).encode())
    stop = tmp_path / "stop"
    reader = _script(READ, state, stop)
    writers = [_script(BUMP, state, 25, tmp_path / f"seen{i}") for i in range(3)]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
    stop.write_text("")
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err  # a torn or half-written file would raise StateError
    assert int(out) > 0
    seen = [int(v) for i in range(3) for v in (tmp_path / f"seen{i}").read_text().split()]
    assert sorted(seen) == list(range(2, 77))  # no lost update: every bump saw the last one
    assert load_state(state).version == 76
    assert not list(tmp_path.glob(".rsi_state.json.*.tmp"))


def test_two_concurrent_builds_both_succeed_one_after_the_other(
    tmp_path: Path, hardening_cache: Path
) -> None:
    served = serve(tmp_path / "proj", hardening_cache)
    state = served.project.state_path
    edited = state.read_text().replace('"version": 1', '"version": 2', 1)
    edited = edited.replace('"rag": 1.0', '"rag": 2.5', 1)
    state.write_text(edited)
    code = (
        "import sys; from pathlib import Path; from runtime.project import Project; "
        "from codegen.toolchain import CompileSettings; from hardening_corpus import TEMPLATES; "
        "r = Project(Path(sys.argv[1]), template_dir=TEMPLATES, lock_timeout_s=120)"
        ".build(CompileSettings(backend='python')); print(r.build_id)"
    )
    env = {**ENV, "PYTHONPATH": f"{REPO}{os.pathsep}{Path(__file__).parent}"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(state)],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0] != served.build_id + "\n"
    served.project.ledger.check_integrity()
    assert served.project.ledger.versions() == [1, 2]
    assert served.project.load_active().module("tiny").RAG == 2.5


def test_a_symlink_planted_as_the_lock_file_is_refused(served: Served, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    lock = lock_path_for(served.project.state_path)
    lock.unlink()
    lock.symlink_to(victim)
    try:
        with pytest.raises(
            LockError,
            match=r"^rsi_state.json.lock: cannot open the lock file: Too many levels of "
            r"symbolic links$",
        ):
            served.project.build(PURE)
    finally:
        lock.unlink()
    assert victim.read_text() == "precious\n"  # not truncated, no pid written into it
