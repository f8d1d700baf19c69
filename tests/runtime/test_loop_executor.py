"""The local executor: jobs stopped at a time limit, workers that die with the loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from runtime.rsi.executor import LocalExecutor

REPO = Path(__file__).resolve().parents[2]

#: A parent that starts a pool worker on a long job, prints the worker's pid and waits.
PARENT = """
import os, sys, time
from runtime.rsi.executor import LocalExecutor
executor = LocalExecutor(workers=1)
future = executor._pool.submit(time.sleep, 120)
while not executor._pool._processes:
    time.sleep(0.05)
print(*executor._pool._processes, flush=True)
future.result()
"""


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has finished)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_call_past_its_time_limit_is_stopped_and_its_worker_killed() -> None:
    executor = LocalExecutor(workers=1)
    try:
        assert executor.call(abs, -3, timeout_s=60) == 3
        workers = list(executor._pool._processes)
        clock = time.monotonic()
        assert executor.call(time.sleep, 60, timeout_s=1.0) is None
        assert time.monotonic() - clock < 30
        assert not any(_alive(pid) for pid in workers)
        assert executor.call(abs, -4, timeout_s=60) == 4  # a fresh pool serves on
    finally:
        executor.close()


def test_kill_9_of_the_parent_leaves_no_worker() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert parent.stdout is not None
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    try:
        assert workers and all(_alive(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "a pool worker outlived the loop"
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
