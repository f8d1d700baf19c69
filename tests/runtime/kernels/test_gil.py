"""The kernels' hot loops run without the GIL: another Python thread gets to run meanwhile.

Deterministic rather than timed: with a long switch interval, a thread spinning in Python
code only gets the GIL when the main thread gives it up on its own. A call that releases the
GIL for its loops (about a millisecond at N=512) lets the spinner in; the control, a few
milliseconds of plain Python, does not.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from codegen.state import AttentionMechanism, RSIState
from codegen.toolchain import CompileSettings
from runtime.kernels.build import kernel_module
from tests.runtime.kernels.cases import make_case, make_state

M = AttentionMechanism
SWITCH_INTERVAL_S = 0.25
ATTEMPTS = 50  # the spinner must wake within one call's nogil window (about 1 ms) at least once;
# on a loaded machine the OS may not schedule it in time for many calls in a row


class Spinner:
    """A thread counting in pure Python until stopped."""

    def __init__(self) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.count += 1

    def start(self) -> None:
        self._thread.start()
        # Sleeping releases the GIL: the spinner starts, then hands it back after the interval.
        time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def spinning() -> Iterator[Spinner]:
    """A running spinner, under a long switch interval (restored afterwards)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    spin = Spinner()
    spin.start()
    try:
        yield spin
    finally:
        spin.stop()
        sys.setswitchinterval(old)


def _long_state() -> RSIState:
    data = make_state("odd").model_dump(mode="json")
    data["architecture"].update(seq_len=512, embedding_dim=64, heads=4, num_experts=4)
    return RSIState.model_validate_json(json.dumps(data))


def _spun_during(spin: Spinner, work: Callable[[], object]) -> int:
    before = spin.count
    work()
    return spin.count - before


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", [M.sdpa, M.mamba], ids=lambda m: m.value)
def test_other_threads_run_during_a_kernel_call(
    mechanism: AttentionMechanism, kernel_cache: Path
) -> None:
    state = _long_state()
    # Compile first: the compiler would compete with the spinner for the GIL.
    kernel = kernel_module(state, mechanism, CompileSettings(), kernel_cache).kernel
    args, _ = make_case(mechanism, state, 512, seed=3)
    kernel(*args)  # warm: first-call costs happen outside the measurement
    with spinning() as spinner:
        # Control: a few milliseconds of Python, longer than a kernel call, hold the GIL.
        assert _spun_during(spinner, lambda: sum(i * i for i in range(20_000))) == 0
        spun = [_spun_during(spinner, lambda: kernel(*args)) for _ in range(ATTEMPTS)]
    assert max(spun) > 0, f"no other thread ran during {ATTEMPTS} calls of {mechanism.value}"
