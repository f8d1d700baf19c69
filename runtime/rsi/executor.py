"""Where candidate builds are built and measured: a local process pool or a Ray cluster.

A job builds one candidate state into the project's ``generated/`` (content-addressed, so
the gate's own build of it is then a cache hit), runs it in the worker process, gathers the
gate's evidence (:func:`runtime.evidence.gather`: held-out and hidden correctness, tier and
kernel checks) and stores it in the project's ledger, where :func:`runtime.promote.promote`
finds it. Jobs are independent, so results do not depend on which worker ran what, nor when:
the Ray executor reaches the same decisions as the local one.

A run takes a time limit (the loop's remaining budget): jobs still running when it ends are
stopped (local workers killed, Ray tasks force-cancelled) and come back as ``None``, so a
budget is never overrun by a candidate build. Local workers die with the process that
started them (``prctl(PR_SET_PDEATHSIG)``, :func:`codegen.compile.die_with_parent`): a
``kill -9`` of ``rsi loop`` leaves no worker building on, and their compiler children die
with them the same way. Ctrl-C (SIGINT to the terminal's whole process group) is the loop's
alone: workers start with SIGINT blocked and then ignore it, so none prints a traceback;
the loop's process stops and kills them (:meth:`LocalExecutor.close`).

Ray: ``--executor ray`` starts a local Ray (or joins the running one); ``--address
ray://head:10001``, ``--address head:6379`` or ``--address auto`` joins a cluster. An
address is checked before Ray is asked (Ray retries an address where nothing listens for
minutes, then exits the process): it must parse, and its port must accept a TCP connection
within :data:`CONNECT_TIMEOUT_S`. Every node must see the project
directory at the same path (a shared file system) and have this package installed
(``pip install .[ray]``), since workers write builds and ledger rows there.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures import TimeoutError as FuturesTimeout
from contextlib import contextmanager
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from codegen.compile import die_with_parent
from codegen.errors import RSIError
from codegen.state import parse_state
from codegen.toolchain import Backend, CompileSettings
from runtime.evidence import data_fingerprint, gather
from runtime.gate import Evidence
from runtime.loader import load_build
from runtime.project import Project

__all__ = [
    "CONNECT_TIMEOUT_S",
    "EXECUTORS",
    "ExecutorError",
    "ExecutorKind",
    "CandidateJob",
    "CandidateOutcome",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "check_address",
    "make_executor",
    "measure_candidate",
]

logger = logging.getLogger(__name__)

A = TypeVar("A")
R = TypeVar("R")
ExecutorKind = Literal["local", "ray"]
EXECUTORS: tuple[ExecutorKind, ...] = ("local", "ray")
#: Seconds a Ray address may take to accept a TCP connection before it counts as unreachable.
CONNECT_TIMEOUT_S = 5.0
#: What to do about an address that does not work.
_ADDRESS_FIX = (
    "give the head node's address (HOST:6379, ray://HOST:10001, or auto on the head node) "
    "of a cluster started with `ray start --head`"
)


class ExecutorError(RSIError):
    """A Ray cluster address that does not parse or cannot be reached."""


@dataclass(frozen=True)
class CandidateJob:
    """Build and measure ``candidate`` (exact state bytes) in the project at ``state_path``."""

    state_path: str
    candidate: bytes
    backend: Backend
    data: str | None
    seed: int


@dataclass(frozen=True)
class CandidateOutcome:
    """The candidate's build id, its gate evidence and where the time went."""

    build_id: str
    evidence: Evidence
    build_s: float
    evaluate_s: float
    queued_s: float  # from submission to the job's start (executor overhead)
    overhead_s: float = 0.0  # submission to result in the caller, less build and evaluate


#: What :meth:`Executor.run` returns: an outcome per job, ``None`` for a job stopped at the
#: time limit.
Outcomes = list[CandidateOutcome | None]


class Executor(Protocol):
    """Runs candidate jobs; results come back in the jobs' order."""

    name: str

    def run(self, jobs: Sequence[CandidateJob], *, timeout_s: float | None = None) -> Outcomes:
        """Run every job; return their outcomes in order (``None``: stopped at ``timeout_s``)."""

    def call(self, fn: Callable[[A], R], arg: A, *, timeout_s: float | None = None) -> R | None:
        """``fn(arg)`` on a worker; ``None`` when stopped at ``timeout_s``."""

    def close(self) -> None:
        """Release the workers."""


def measure_candidate(job: CandidateJob, submitted_at: float = 0.0) -> CandidateOutcome:
    """Build the candidate, gather its evidence and record it in the ledger (a worker's job)."""
    start = time.time()
    project = Project(Path(job.state_path))
    state = parse_state(job.candidate, "candidate")
    built = project.build_candidate(state, job.candidate, CompileSettings(backend=job.backend))
    built_at = time.time()
    data = Path(job.data) if job.data is not None else None
    found = project.ledger.evidence(built.build_id, job.seed, data_fingerprint(data, job.seed))
    if found is None:
        found = gather(load_build(built.path), data=data, seed=job.seed)
        project.ledger.record_evidence(found)
    return CandidateOutcome(
        built.build_id,
        found,
        build_s=built_at - start,
        evaluate_s=time.time() - built_at,
        queued_s=max(0.0, start - submitted_at) if submitted_at else 0.0,
    )


class LocalExecutor:
    """A pool of ``workers`` spawned processes (spawned: the caller may run threads) that
    die with this process."""

    name = "local"

    def __init__(self, *, workers: int = 2) -> None:
        self._workers = workers
        self._pool = _pool(workers)

    def run(self, jobs: Sequence[CandidateJob], *, timeout_s: float | None = None) -> Outcomes:
        """Run the jobs on the pool; kill the workers of jobs still running at ``timeout_s``."""
        submitted = time.time()
        with _sigint_blocked():
            futures = [self._pool.submit(measure_candidate, job, submitted) for job in jobs]
        outcomes: dict[Future[CandidateOutcome], CandidateOutcome] = {}
        end = None if timeout_s is None else time.monotonic() + timeout_s
        pending = set(futures)
        while pending:
            left = None if end is None else max(0.0, end - time.monotonic())
            done, pending = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
            if not done:
                break
            for future in done:
                outcomes[future] = _received(future.result(), submitted)
        if pending:
            logger.info("time limit: %d job(s) stopped; pool workers killed", len(pending))
            self._restart()
        return [outcomes.get(f) for f in futures]

    def call(self, fn: Callable[[A], R], arg: A, *, timeout_s: float | None = None) -> R | None:
        """``fn(arg)`` on a worker; kill the workers when it is still running at ``timeout_s``."""
        with _sigint_blocked():
            future = self._pool.submit(fn, arg)
        try:
            return future.result(timeout=timeout_s)
        except FuturesTimeout:
            logger.info("time limit: %s stopped; pool workers killed", getattr(fn, "__name__", fn))
            self._restart()
            return None

    def close(self) -> None:
        """Shut the pool down, killing the workers: a job still running is one the loop
        gave up on (Ctrl-C, an error), and workers ignore SIGINT."""
        _kill(self._pool)

    def _restart(self) -> None:
        """Kill every worker (a running job cannot be cancelled otherwise); start a new pool."""
        _kill(self._pool)
        self._pool = _pool(self._workers)


class RayExecutor:
    """Ray tasks, one per job; joins ``address`` or starts (or reuses) a local Ray."""

    name = "ray"

    def __init__(self, *, address: str | None = None, workers: int = 2) -> None:
        import ray

        self._ray: Any = ray
        if address is not None:
            check_address(address)
        if not ray.is_initialized():
            if address is None:
                # Ray's processes inherit the blocked SIGINT: Ctrl-C stops the loop, whose
                # exit shuts them down (they died with it and Ray crashed at exit).
                with _sigint_blocked():
                    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            else:
                try:
                    ray.init(address=address, log_to_driver=False)
                except (ConnectionError, ValueError, RuntimeError) as exc:
                    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise ExecutorError(
                        f"--address {address}: Ray could not join it ({first}); {_ADDRESS_FIX}"
                    ) from None
        self._task: Any = ray.remote(num_cpus=1)(measure_candidate)

    def run(self, jobs: Sequence[CandidateJob], *, timeout_s: float | None = None) -> Outcomes:
        """Submit every job as a Ray task; force-cancel those still running at ``timeout_s``."""
        submitted = time.time()
        refs = [self._task.remote(job, submitted) for job in jobs]
        outcomes: dict[Any, CandidateOutcome] = {}
        end = None if timeout_s is None else time.monotonic() + timeout_s
        pending = list(refs)
        while pending:
            left = None if end is None else max(0.0, end - time.monotonic())
            done, pending = self._ray.wait(pending, num_returns=1, timeout=left)
            if not done:
                break
            outcomes[done[0]] = _received(self._ray.get(done[0]), submitted)
        if pending:
            logger.debug("time limit: %d Ray task(s) cancelled", len(pending))
            for ref in pending:
                self._ray.cancel(ref, force=True)
        return [outcomes.get(ref) for ref in refs]

    def call(self, fn: Callable[[A], R], arg: A, *, timeout_s: float | None = None) -> R | None:
        """``fn(arg)`` as a Ray task; force-cancelled when still running at ``timeout_s``."""
        ref = self._ray.remote(num_cpus=1)(fn).remote(arg)
        done, _ = self._ray.wait([ref], num_returns=1, timeout=timeout_s)
        if not done:
            logger.debug("time limit: Ray task %s cancelled", getattr(fn, "__name__", fn))
            self._ray.cancel(ref, force=True)
            return None
        result: R = self._ray.get(ref)
        return result

    def close(self) -> None:
        """Leave Ray running (it may be shared with the caller or a cluster)."""


def check_address(address: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse a Ray address that does not parse or whose port does not accept a TCP
    connection within ``timeout_s`` (``auto`` is Ray's to find)."""
    if address == "auto":
        return
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except TimeoutError:
        why = f"no answer in {timeout_s:g} s"
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
    else:
        return
    raise ExecutorError(
        f"--address {address}: nothing answers at {host}:{port} ({why}); {_ADDRESS_FIX}"
    )


def make_executor(kind: ExecutorKind, *, address: str | None, workers: int) -> Executor:
    """The executor ``kind`` names."""
    if kind == "ray":
        return RayExecutor(address=address, workers=workers)
    return LocalExecutor(workers=workers)


def _pool(workers: int) -> ProcessPoolExecutor:
    """A pool whose workers ignore SIGINT and die with this process (spawned on demand, in
    ``submit``: submit with :func:`_sigint_blocked`)."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_worker_start,
        initargs=(os.getpid(),),
    )


def _kill(pool: ProcessPoolExecutor) -> None:
    """Kill ``pool``'s workers and shut it down (its jobs come back cancelled or broken)."""
    for process in list(pool._processes.values()):
        process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread while it spawns pool workers: they inherit the mask,
    so a Ctrl-C reaches none of them, not even while it starts up (a pending SIGINT is
    delivered here when the block ends)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _worker_start(parent_pid: int) -> None:
    """A pool worker's initializer: ignore SIGINT (the loop's process handles Ctrl-C and
    kills the workers), die with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    die_with_parent(parent_pid)


def _received(outcome: CandidateOutcome, submitted: float) -> CandidateOutcome:
    """``outcome`` with its overhead: submission to now, less the job's own work."""
    end_to_end = time.time() - submitted
    overhead = max(0.0, end_to_end - outcome.build_s - outcome.evaluate_s)
    return replace(outcome, overhead_s=overhead)


def _host_port(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` or ``ray://HOST:PORT`` (``[v6]:PORT`` too)."""
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ExecutorError(f"--address {address}: not a Ray address; {_ADDRESS_FIX}")
    return host, int(port)
