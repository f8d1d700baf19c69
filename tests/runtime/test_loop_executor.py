"""The local executor: jobs stopped at a time limit, workers that die with the loop; Ray
addresses that do not work."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.cli import main
from runtime.rsi.executor import LocalExecutor

REPO = Path(__file__).resolve().parents[2]
UNIFORM = REPO / "states" / "uniform.json"

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

#: A parent whose pool worker sleeps on a job; it prints the worker's pid, and on Ctrl-C
#: closes the executor and says so.
PARENT_INTERRUPTED = """
import time
from runtime.rsi.executor import LocalExecutor
executor = LocalExecutor(workers=2)
print(executor.call(os.readlink, "/proc/self", timeout_s=60), flush=True)
try:
    executor.call(time.sleep, 60)
except KeyboardInterrupt:
    executor.close()
    print("interrupted", flush=True)
"""


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has finished)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_call_past_its_time_limit_is_stopped_and_its_worker_killed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    executor = LocalExecutor(workers=1)
    try:
        assert executor.call(abs, -3, timeout_s=60) == 3
        workers = list(executor._pool._processes)
        clock = time.monotonic()
        with caplog.at_level(logging.WARNING):
            assert executor.call(time.sleep, 60, timeout_s=1.0) is None
        # The loop says what stopped, in its terms; not "time limit: sleep stopped".
        assert not caplog.records
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


def _free_port() -> int:
    """A local TCP port where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


FIX = (
    "give the head node's address (HOST:6379, ray://HOST:10001, or auto on the head node) "
    "of a cluster started with `ray start --head`"
)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("nonsense", "not a Ray address"),
        ("ray://head", "not a Ray address"),
        ("head:99999", "not a Ray address"),
        ("127.0.0.1:{port}", "nothing answers at 127.0.0.1:{port} (Connection refused)"),
        ("ray://127.0.0.1:{port}", "nothing answers at 127.0.0.1:{port} (Connection refused)"),
    ],
)
def test_a_bad_ray_address_is_one_line_before_anything_is_built(
    tmp_path: Path, address: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray", reason="ray is not installed (pip install .[ray])")
    port = _free_port()
    address, why = address.format(port=port), why.format(port=port)
    state = tmp_path / "rsi_state.json"
    state.write_bytes(UNIFORM.read_bytes())
    argv = ["loop", "--state", str(state), "--iterations", "1", "--backend", "python"]
    clock = time.monotonic()
    assert main([*argv, "--executor", "ray", "--address", address]) == 2
    assert time.monotonic() - clock < 30
    assert capsys.readouterr().err == f"rsi: error: --address {address}: {why}; {FIX}\n"
    assert not (tmp_path / "generated").exists(), "the start state was built first"
    assert state.read_bytes() == UNIFORM.read_bytes()


def _ignores_sigint(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as fh:
        ignored = next(line for line in fh if line.startswith("SigIgn:")).split()[1]
    return bool(int(ignored, 16) & (1 << (signal.SIGINT - 1)))


def test_ctrl_c_reaches_the_loop_alone_and_its_workers_are_killed() -> None:
    """Ctrl-C signals the terminal's whole process group: a pool worker that took it printed
    a traceback (or raised it into its job); workers ignore it, the parent kills them."""
    parent = subprocess.Popen(
        [sys.executable, "-c", "import os\n" + PARENT_INTERRUPTED],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    try:
        assert _ignores_sigint(worker)
        time.sleep(0.5)  # the sleep job has reached the worker
        clock = time.monotonic()
        os.killpg(parent.pid, signal.SIGINT)
        out, err = parent.communicate(timeout=30)
        assert time.monotonic() - clock < 20
        assert (out, err) == ("interrupted\n", "")
        assert not _alive(worker)
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)
        parent.kill()
