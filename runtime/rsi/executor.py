"""Where candidate builds are built and measured: a local process pool or a Ray cluster.

A job builds one candidate state into the project's ``generated/`` (content-addressed, so
the gate's own build of it is then a cache hit), runs it in the worker process, gathers the
gate's evidence (:func:`runtime.evidence.gather`: held-out and hidden correctness, tier and
kernel checks) and stores it in the project's ledger, where :func:`runtime.promote.promote`
finds it. Jobs are independent, so results do not depend on which worker ran what, nor when:
the Ray executor reaches the same decisions as the local one.

Ray: ``--executor ray`` starts a local Ray (or joins the running one); ``--address
ray://head:10001`` or ``--address auto`` joins a cluster. Every node must see the project
directory at the same path (a shared file system) and have this package installed
(``pip install .[ray]``), since workers write builds and ledger rows there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal, Protocol

from codegen.state import parse_state
from codegen.toolchain import Backend, CompileSettings
from runtime.evidence import data_fingerprint, gather
from runtime.gate import Evidence
from runtime.loader import load_build
from runtime.project import Project

__all__ = [
    "EXECUTORS",
    "ExecutorKind",
    "CandidateJob",
    "CandidateOutcome",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
    "measure_candidate",
]

logger = logging.getLogger(__name__)

ExecutorKind = Literal["local", "ray"]
EXECUTORS: tuple[ExecutorKind, ...] = ("local", "ray")


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


class Executor(Protocol):
    """Runs candidate jobs; results come back in the jobs' order."""

    name: str

    def run(self, jobs: Sequence[CandidateJob]) -> list[CandidateOutcome]:
        """Run every job; return their outcomes in order."""

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
    """A pool of ``workers`` spawned processes (spawned: the caller may run threads)."""

    name = "local"

    def __init__(self, *, workers: int = 2) -> None:
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))

    def run(self, jobs: Sequence[CandidateJob]) -> list[CandidateOutcome]:
        """Run the jobs on the pool."""
        futures = [self._pool.submit(measure_candidate, job, time.time()) for job in jobs]
        return [f.result() for f in futures]

    def close(self) -> None:
        """Shut the pool down."""
        self._pool.shutdown()


class RayExecutor:
    """Ray tasks, one per job; joins ``address`` or starts (or reuses) a local Ray."""

    name = "ray"

    def __init__(self, *, address: str | None = None, workers: int = 2) -> None:
        import ray

        self._ray: Any = ray
        if not ray.is_initialized():
            if address is None:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        self._task: Any = ray.remote(num_cpus=1)(measure_candidate)

    def run(self, jobs: Sequence[CandidateJob]) -> list[CandidateOutcome]:
        """Submit every job as a Ray task and wait for all of them."""
        refs = [self._task.remote(job, time.time()) for job in jobs]
        outcomes: list[CandidateOutcome] = self._ray.get(refs)
        return outcomes

    def close(self) -> None:
        """Leave Ray running (it may be shared with the caller or a cluster)."""


def make_executor(kind: ExecutorKind, *, address: str | None, workers: int) -> Executor:
    """The executor ``kind`` names."""
    if kind == "ray":
        return RayExecutor(address=address, workers=workers)
    return LocalExecutor(workers=workers)
