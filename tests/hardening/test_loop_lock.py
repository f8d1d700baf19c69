"""One ``rsi loop`` per project at a time: a second is refused at its start, naming the
running one; a loop killed with ``kill -9`` leaves no lock that blocks the next."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.cli import main

REPO = Path(__file__).resolve().parents[2]
UNIFORM = REPO / "states" / "uniform.json"


def _running_loop(state: Path) -> subprocess.Popen[bytes]:
    """An ``rsi loop`` on ``state``, once it holds the loop lock (it is then building)."""
    lock = state.parent / ".rsi" / state.name / "loop.lock"
    command = [sys.executable, "-m", "runtime.cli", "loop", "--state", str(state)]
    command += ["--iterations", "1", "--backend", "python", "--no-knobs", "--json"]
    child = subprocess.Popen(command, cwd=REPO, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (lock.exists() and lock.read_text() == str(child.pid)):
        assert child.poll() is None, "the loop ended before it took its lock"
        assert time.monotonic() < deadline, "the loop took no lock in 60 s"
        time.sleep(0.05)
    return child


def test_a_second_loop_is_refused_at_its_start_and_a_killed_one_blocks_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "rsi_state.json"
    state.write_bytes(UNIFORM.read_bytes())
    argv = ["loop", "--state", str(state), "--iterations", "1", "--backend", "python"]
    argv += ["--no-knobs", "--executor", "ray", "--address", "127.0.0.1:1"]
    first = _running_loop(state)
    try:
        clock = time.monotonic()
        assert main(argv) == 2
        assert time.monotonic() - clock < 30  # imports included; a late failure takes minutes
        assert capsys.readouterr().err == (
            f"rsi: error: rsi_state.json: a loop already runs on it (process {first.pid}; "
            "lock .rsi/rsi_state.json/loop.lock); wait for it to finish or stop it, "
            "then run rsi loop again\n"
        )
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # The killed loop's lock is stale: the next loop takes it (and goes on to refuse the
    # unreachable Ray address, which it checks before building anything).
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("rsi: error: --address 127.0.0.1:1: nothing answers")
