"""Compiler backends: rendered ``.py`` (Cython pure-Python mode) → importable artifact.

``python`` compiles nothing: the ``.py`` is the interpreted tier. ``cython`` turns it into C
(linked against a Cython shared utility module, so each extension is small and quick to
compile) and runs the C compiler. ``nuitka`` (optional, ``pip install .[nuitka]``) compiles
with ``nuitka --module``. Artifacts are cached by content key in ``cache_dir/<key>/``; a cache
entry appears atomically (temp dir + rename) and carries the sha256 of every file in it
(``SHA256SUMS``, written before it is published). Every reuse checks it: a truncated or
altered entry is discarded with a warning and compiled again, never copied into a build.

Compile feedback: a failed compile is not the end of a build. The compiler's diagnostic is
parsed (:func:`codegen.diagnostics.parse_compiler_message`); a C compiler error is retried
without machine-specific flags, then with the portable flags; a Cython or Nuitka error (the
source, not the flags) is not retried. After at most ``settings.max_attempts`` failed tries
the module falls back to the pure-Python tier. Every try is an :class:`Attempt` on the
module, recorded in the build's manifest.

Precompiled ``Python.h``: gcc spends about 0.1 s of every compile parsing Python's headers.
With gcc, the first try of a module includes them from a cache entry holding ``Python.h``
precompiled for the module's flags (:func:`python_header`, about 0.4 s once per toolchain and
flag set). gcc checks a ``.gch`` against the compile and reads the headers instead when it
does not fit, so the artifact is the same either way; retries never use it.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import io
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from codegen.errors import CompileError, RSIError
from codegen.fsutil import discard, remove_stale_staging, staging
from codegen.toolchain import (
    EXT_SUFFIX,
    CompileSettings,
    cc_command,
    content_key,
    cpu_features,
    drop_native,
    toolchain_fingerprint,
)

__all__ = [
    "Attempt",
    "CompiledModule",
    "NUITKA_MISSING",
    "SEAL",
    "artifact_name",
    "module_key",
    "compile_modules",
    "die_with_parent",
    "in_build_worker",
    "prestart_build_worker",
    "prestart_worker",
    "python_header",
    "warm_up",
    "stop_workers",
    "start_shared_utility",
    "shared_utility",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    """One try at compiling a module: backend, flags, the compiler's diagnostic, outcome
    (``compiled``, ``failed``, or ``fallback`` to the pure-Python tier)."""

    backend: str
    flags: tuple[str, ...]
    outcome: str
    diagnostic: str = ""
    kind: str = ""


@dataclass(frozen=True)
class CompiledModule:
    """One module's artifact in the cache and how long it took (0 on a hit).

    ``tier`` is the backend that produced the artifact: ``python`` for a module that fell
    back after its compile attempts (``attempts``) failed.
    """

    name: str
    key: str
    artifact: Path
    sha256: str
    seconds: float
    cache_hit: bool
    tier: str
    attempts: tuple[Attempt, ...] = ()


NUITKA_MISSING = (
    "backend 'nuitka' needs Nuitka, which is not installed: pip install '.[nuitka]' "
    "(or pip install nuitka), or use --backend cython"
)


#: The file in a cache entry naming its artifact's sha256 (``sha256sum -c`` reads it).
SEAL = "SHA256SUMS"


def artifact_name(name: str, settings: CompileSettings) -> str:
    """File name of a module's artifact for ``settings.backend``."""
    return f"{name}.py" if settings.backend == "python" else f"{name}{EXT_SUFFIX}"


def module_key(name: str, source: str, settings: CompileSettings) -> str:
    """Content key: the source, the module name and every toolchain fact that matters."""
    payload: dict[str, object] = {
        "name": name,
        "source": content_key(source),
        "toolchain": toolchain_fingerprint(settings),
    }
    if settings.backend != "python":
        flags = settings.module_cflags(source)
        payload["cflags"] = list(flags)
        payload["cpu"] = cpu_features(flags)
    if settings.backend == "cython" and settings.shared_utility:
        payload["shared"] = settings.shared_module_name
    return content_key(payload)


def start_shared_utility(settings: CompileSettings, cache_dir: Path) -> Future[object] | None:
    """Start compiling the shared utility module in a worker process, if it is needed.

    It depends on no generated source, so a build starts it before rendering anything; pass
    ``shared_started=True`` to :func:`compile_modules` and wait on the future before loading.
    """
    if (
        settings.backend != "cython"
        or not settings.shared_utility
        or _sealed(_shared_artifact(settings, cache_dir)) is not None
    ):
        return None
    pool = ThreadPoolExecutor(1)
    # Not killed on an interrupt: the caller waits on it, and it dies with the caller.
    future: Future[object] = pool.submit(_in_worker, None, settings, cache_dir, [])
    pool.shutdown(wait=False)
    return future


def compile_modules(
    sources: dict[str, str],
    settings: CompileSettings,
    cache_dir: Path,
    *,
    shared_started: bool = False,
) -> dict[str, CompiledModule]:
    """Compile every module not already cached; modules compile in parallel.

    A module whose compile fails is retried and may fall back to the pure-Python tier (see
    the module docstring); only a missing tool (compiler, Nuitka) raises.
    """
    if settings.backend == "nuitka" and not _has_module("nuitka"):
        raise CompileError(NUITKA_MISSING)
    results: dict[str, CompiledModule] = {}
    todo: dict[str, str] = {}
    for name, source in sources.items():
        key = module_key(name, source, settings)
        artifact = cache_dir / key / artifact_name(name, settings)
        digest = _sealed(artifact)
        if digest is not None:
            recorded = _recorded(artifact.parent)
            results[name] = CompiledModule(
                name, key, artifact, digest, 0.0, True, settings.backend, recorded
            )
        else:
            todo[name] = key
    need_shared = (
        settings.backend == "cython"
        and settings.shared_utility
        and not shared_started
        and _sealed(_shared_artifact(settings, cache_dir)) is None
    )
    if not todo and not need_shared:
        return results
    # Largest first, so two workers finish close together (C size tracks source size).
    jobs = sorted(
        ((name, sources[name], key) for name, key in todo.items()), key=lambda j: -len(j[1])
    )
    in_process = len(jobs) + need_shared <= 1 or settings.jobs <= 1
    if settings.backend == "python" or (in_process and settings.worker_nice is None):
        # In-process: one job, or the python backend, whose "compile" is a file copy.
        if need_shared:
            shared_utility(settings, cache_dir)
        done = [_compile_with_feedback(*job, settings, cache_dir) for job in jobs]
    else:
        # Worker *processes* (Cython is not thread-safe), started as `python -m` so they never
        # re-import the caller's __main__ as multiprocessing's spawn would. The shared utility
        # module is only needed at load time, so it compiles alongside the modules.
        workers = min(settings.jobs, len(jobs) + need_shared)
        started: list[subprocess.Popen[str]] = []
        with ThreadPoolExecutor(workers) as pool:
            try:
                shared = (
                    pool.submit(_in_worker, None, settings, cache_dir, started)
                    if need_shared
                    else None
                )
                futures = [
                    pool.submit(_in_worker, job, settings, cache_dir, started) for job in jobs
                ]
                done = [_result(f.result(), settings, cache_dir) for f in futures]
                if shared is not None:
                    shared.result()
            except KeyboardInterrupt:  # Ctrl-C of `rsi build`: do not wait for the compile
                pool.shutdown(wait=False, cancel_futures=True)
                _kill_workers(started)
                raise
    results.update({m.name: m for m in done})
    return {name: results[name] for name in sources}


def _in_worker(
    job: tuple[str, str, str] | None,
    settings: CompileSettings,
    cache_dir: Path,
    started: list[subprocess.Popen[str]],
) -> dict[str, object]:
    """Run one job in a worker process (appended to ``started``); return its result.

    The worker gets a session of its own: a terminal's Ctrl-C, sent to the whole foreground
    process group, reaches only the caller, which decides. ``rsi watch`` lets the compile in
    flight finish; :func:`compile_modules` kills its workers on KeyboardInterrupt. A worker
    dies with its caller all the same, and the compilers it started with it
    (:func:`die_with_parent` with ``group=True``). With ``worker_nice`` set (watch mode) the
    job goes to a warm worker, kept between jobs (:func:`prestart_worker`).
    """
    spec: dict[str, object] = {
        "job": job,
        "settings": asdict(settings),
        "cache_dir": str(cache_dir),
    }
    if settings.worker_nice is not None:
        return _in_warm_worker(spec, ("compile", settings.worker_nice), started, (cache_dir,))
    proc = subprocess.Popen(
        [sys.executable, "-m", "codegen.compile", str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_worker_env(),
        start_new_session=True,
    )
    started.append(proc)
    stdout, stderr = proc.communicate(json.dumps(spec))
    if proc.returncode != 0:
        lines = stderr.strip().splitlines()
        raise CompileError(
            lines[-1].removeprefix("rsi-compile-error: ") if lines else "worker died"
        )
    result: dict[str, object] = json.loads(stdout)
    return result


def _kill_workers(started: list[subprocess.Popen[str]]) -> None:
    """SIGKILL each worker still running, with the compilers it started (its session)."""
    for proc in started:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it ended meanwhile


def _result(raw: dict[str, object], settings: CompileSettings, cache_dir: Path) -> CompiledModule:
    name, key, tier = str(raw["name"]), str(raw["key"]), str(raw["tier"])
    digest, seconds = str(raw["sha256"]), float(raw["seconds"])  # type: ignore[arg-type]
    backend = replace(settings, backend=tier)  # type: ignore[arg-type]
    artifact = cache_dir / key / artifact_name(name, backend)
    attempts = tuple(_attempt(a) for a in raw["attempts"])  # type: ignore[attr-defined]
    return CompiledModule(name, key, artifact, digest, seconds, False, tier, attempts)


def _attempt(raw: dict[str, object]) -> Attempt:
    return Attempt(**{**raw, "flags": tuple(raw["flags"])})  # type: ignore[arg-type]


def prestart_worker(settings: CompileSettings) -> None:
    """Start a warm worker for ``settings`` now, so that the first compile finds one (watch
    mode, before the first edit). Only for settings that compile in workers
    (``worker_nice`` set); a worker idle for :data:`WARM_IDLE_S` exits."""
    if settings.worker_nice is not None and settings.backend != "python":
        pool: _Pool = ("compile", settings.worker_nice)
        _release_warm(pool, _start_warm(pool))


def prestart_build_worker() -> None:
    """Start a warm build worker now (:func:`in_build_worker`; watch mode, before the first
    edit): its imports (jinja2, black, the checks) are paid before the first build."""
    _release_warm(_BUILD_POOL, _start_warm(_BUILD_POOL))


def in_build_worker(spec: dict[str, object], staging_roots: tuple[Path, ...]) -> dict[str, object]:
    """Run one build job (``spec["build"]``, answered by :func:`codegen.build.build_job`) in
    a warm build worker: not reniced, since a person waits for it (watch mode's pure tier).

    An error of the build comes back as the :class:`~codegen.errors.RSIError` subclass it
    was raised as, with its message; a reused worker that ended meanwhile is replaced once.
    A worker that dies leaves no staging dir in ``staging_roots`` (the dirs it builds in).
    """
    return _in_warm_worker(spec, _BUILD_POOL, [], staging_roots)


def stop_workers(timeout_s: float = 10.0) -> None:
    """End every idle warm worker (closing its stdin) and wait for it; kill one that takes
    longer than ``timeout_s``. Watch mode calls this when it stops."""
    with _warm_lock:
        idle = [proc for procs in _warm_idle.values() for proc in procs]
        _warm_idle.clear()
    for proc in idle:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in idle:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


#: A warm worker exits after this long without a job (a later compile starts a new one).
WARM_IDLE_S = 300.0
#: What a warm worker is warmed up for: Cython (compile jobs) or rendering and checking
#: (build jobs, :func:`in_build_worker`).
_Role = Literal["compile", "build"]
#: Warm workers are kept per role and niceness.
_Pool = tuple[_Role, int]
_BUILD_POOL: _Pool = ("build", 0)
_warm_lock = threading.Lock()
_warm_idle: dict[_Pool, list[subprocess.Popen[str]]] = {}


def _in_warm_worker(
    spec: dict[str, object],
    pool: _Pool,
    started: list[subprocess.Popen[str]],
    staging_roots: tuple[Path, ...],
) -> dict[str, object]:
    """Run one job in a warm worker of ``pool`` (one from the idle list, or a new one). A
    worker that is gone (its idle time ran out, or it was killed mid-job) is replaced once,
    so the job is not lost to one kill. A worker that died leaves no staging dir in
    ``staging_roots``: removed as soon as its death is noticed, not at the next start."""
    proc = _take_warm(pool)
    started.append(proc)
    answer = _ask(proc, spec)
    if answer is None:
        _died(proc, staging_roots)
        proc = _start_warm(pool)
        started.append(proc)
        answer = _ask(proc, spec)
        if answer is None:
            _died(proc, staging_roots)
    if answer is None:
        raise CompileError(f"{pool[0]} worker died (exit status {proc.wait()})")
    _release_warm(pool, proc)
    if "error" in answer:
        raise _carried_error(answer)
    result: dict[str, object] = answer["ok"]  # type: ignore[assignment]
    return result


def _died(proc: subprocess.Popen[str], staging_roots: tuple[Path, ...]) -> None:
    """Reap a dead worker and remove the staging dirs it left (those of dead processes)."""
    proc.wait()
    for root in staging_roots:
        remove_stale_staging(root)


def _carried_error(answer: dict[str, object]) -> RSIError:
    """The worker's error as the :class:`RSIError` subclass it was raised as (``module:name``
    in ``answer["type"]``), with its message; :class:`CompileError` for any other name."""
    module, _, name = str(answer.get("type", "")).partition(":")
    found: object = None
    if module.startswith("codegen.") or module.startswith("runtime."):
        found = getattr(importlib.import_module(module), name, None)
    kind = found if isinstance(found, type) and issubclass(found, RSIError) else CompileError
    return kind(str(answer["error"]))


def _ask(proc: subprocess.Popen[str], spec: dict[str, object]) -> dict[str, object] | None:
    """Send one job line to a warm worker and read its answer line; None if it is gone."""
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(spec) + "\n")
        proc.stdin.flush()
    except BrokenPipeError:
        return None
    line = proc.stdout.readline()
    if not line:
        return None
    answer: dict[str, object] = json.loads(line)
    return answer


def _take_warm(pool: _Pool) -> subprocess.Popen[str]:
    with _warm_lock:
        idle = _warm_idle.setdefault(pool, [])
        while idle:
            proc = idle.pop()
            if proc.poll() is None:
                return proc
    return _start_warm(pool)


def _release_warm(pool: _Pool, proc: subprocess.Popen[str]) -> None:
    with _warm_lock:
        _warm_idle.setdefault(pool, []).append(proc)


def _start_warm(pool: _Pool) -> subprocess.Popen[str]:
    """``python -m codegen.compile PID --serve NICE IDLE_S ROLE``. Its stderr goes to an
    unnamed temp file: a pipe nobody reads between jobs could fill and stall it."""
    role, nice = pool
    pid, idle = str(os.getpid()), str(WARM_IDLE_S)
    cmd = [sys.executable, "-m", "codegen.compile", pid, "--serve", str(nice), idle, role]
    with tempfile.TemporaryFile("w+") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=_worker_env(),
            start_new_session=True,
        )


def _worker_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([_IMPORT_ROOT, *sys.path[1:]]))


def _worker_main(argv: list[str]) -> int:
    """``python -m codegen.compile PARENT_PID``: compile one job read as JSON from stdin.
    With ``--serve NICE IDLE_S ROLE``: a warm worker, one JSON job per line, one answer line
    each."""
    if argv[1:2] == ["--serve"]:
        # Not PR_SET_PDEATHSIG: its "parent" is the thread that started the worker, and a
        # warm worker outlives the pool thread of one build (see _serve).
        role: _Role = "build" if argv[4] == "build" else "compile"
        return _serve(int(argv[0]), int(argv[2]), float(argv[3]), role)
    die_with_parent(int(argv[0]), group=True)
    spec = json.loads(sys.stdin.read())
    try:
        print(json.dumps(_run_job(spec)))
    except CompileError as exc:
        print(f"rsi-compile-error: {exc}", file=sys.stderr)
        return 1
    return 0


def _serve(parent_pid: int, nice: int, idle_s: float, role: _Role) -> int:
    """Answer jobs until stdin closes or none comes for ``idle_s``; die with the caller, and
    the compilers this worker started with it (a thread watches the parent pid). An error a
    job raises is answered with its message and its class (``module:name``)."""
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if nice:
        os.nice(nice)  # inherited by the C compiler it runs
    if role == "build":
        _warm_up_build()
    else:
        warm_up()
    while select.select([sys.stdin], [], [], idle_s)[0]:
        line = sys.stdin.readline()
        if not line:
            break
        try:
            answer: dict[str, object] = {"ok": _run_job(json.loads(line))}
        except RSIError as exc:
            kind = type(exc)
            answer = {"error": str(exc), "type": f"{kind.__module__}:{kind.__qualname__}"}
        try:
            print(json.dumps(answer), flush=True)
        except BrokenPipeError:
            break  # the caller is gone
    return 0


def _watch_parent(parent_pid: int) -> None:
    """SIGKILL this worker's process group (itself, a compiler in flight) once the process
    that started it is gone; a warm worker leads its own group (``start_new_session``)."""
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_POLL_S)
    os.killpg(0, signal.SIGKILL)


_PARENT_POLL_S = 0.2


def warm_up() -> None:
    """What a first Cython compile in a process costs (its imports, lexicon and builtins:
    about a second), paid before the first job arrives."""
    from codegen.diagnostics import parse_compiler_message  # noqa: F401  (its imports)

    with tempfile.TemporaryDirectory(prefix="rsi-warm-") as tmp:
        source = Path(tmp) / "warm.py"
        source.write_text("import cython\n\nX: cython.int = 1\n")
        _cythonize(source, source.with_suffix(".c"), "warm", CompileSettings())


def _warm_up_build() -> None:
    """What a first build in a process costs before its own work: importing the renderer
    (jinja2), the checks and black, black's first format and the templates' compilation."""
    from codegen.build import build_job  # noqa: F401  (its imports)
    from codegen.check import check_sources  # noqa: F401  (its imports)
    from codegen.diagnostics import with_origin  # noqa: F401  (its imports)
    from codegen.render import warm_up as warm_up_renderer

    warm_up_renderer()


def _run_job(spec: dict[str, Any]) -> dict[str, object]:
    raw = spec["settings"]
    settings = CompileSettings(
        **{**raw, "cflags": tuple(raw["cflags"]), "specialize": tuple(raw["specialize"])}
    )
    if "build" in spec:
        from codegen.build import build_job

        return build_job(spec["build"], settings)
    cache_dir = Path(spec["cache_dir"])
    if spec["job"] is None:
        shared_utility(settings, cache_dir)
        return {}
    name, source, key = spec["job"]
    done = _compile_with_feedback(name, source, key, settings, cache_dir)
    return {**asdict(done), "artifact": str(done.artifact)}


def die_with_parent(parent_pid: int, *, group: bool = False) -> None:
    """Have the kernel SIGKILL this worker when the process that started it dies.

    A ``kill -9`` of ``rsi build`` (or of ``rsi loop``, whose pool workers call this too)
    must not leave workers compiling into the cache for seconds. Linux only
    (``prctl(PR_SET_PDEATHSIG)``); the parent-pid check covers a parent that died before
    the request was made.

    ``group``: this worker leads its own process group (``start_new_session``) and the
    processes it starts (the C compiler, and the compiler's own ``cc1`` and ``as``) must die
    with it: the kernel signals SIGTERM instead, on which the whole group is SIGKILLed.
    (The death signal is not inherited by children, so SIGKILL alone left them compiling.)
    """
    if group:
        signal.signal(signal.SIGTERM, _kill_own_group)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        sent = signal.SIGTERM if group else signal.SIGKILL
        if libc.prctl(_PR_SET_PDEATHSIG, sent, 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent_pid:
        os._exit(1)


def _kill_own_group(signum: int, frame: FrameType | None) -> None:
    """SIGTERM of a compile worker (its parent died, or someone stopped it): SIGKILL its
    process group, the worker and every compiler it started (only ever its own group)."""
    if os.getpgrp() == os.getpid():
        os.killpg(0, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


_PR_SET_PDEATHSIG = 1
_IMPORT_ROOT = str(Path(__file__).resolve().parents[1])


def _shared_artifact(settings: CompileSettings, cache_dir: Path) -> Path:
    name = settings.shared_module_name
    return cache_dir / name / f"{name}{EXT_SUFFIX}"


def shared_utility(settings: CompileSettings, cache_dir: Path) -> Path:
    """Build (once per toolchain) the Cython shared utility module; return its artifact."""
    name = settings.shared_module_name
    artifact = _shared_artifact(settings, cache_dir)
    entry = artifact.parent
    if _sealed(artifact) is not None:
        return artifact
    with staging(cache_dir) as work:
        c_file = work / f"{name}.c"
        _run(
            [sys.executable, "-c", _CYTHON_MAIN, f"--generate-shared={c_file}"],
            "cython --generate-shared",
        )
        # Utility code is not hot: -O1 keeps this one-off compile short.
        _cc(settings, ("-O1",), c_file, work / artifact.name)
        c_file.unlink()
        _seal_and_publish(work, artifact.name, entry)
    return artifact


_CYTHON_MAIN = "from Cython.Compiler.Main import setuptools_main; setuptools_main()"


def _compile_with_feedback(
    name: str, source: str, key: str, settings: CompileSettings, cache_dir: Path
) -> CompiledModule:
    """Compile, reading each failure's diagnostic to pick the next try; at most
    ``settings.max_attempts`` tries, then the pure-Python tier."""
    # jinja2 and the renderer come with it: not for commands that only read builds.
    from codegen.diagnostics import parse_compiler_message

    start = time.perf_counter()
    failed: list[Attempt] = []
    for flags in _flag_plans(name, source, settings)[: max(1, settings.max_attempts)]:
        try:
            return _compile_into_cache(name, source, key, settings, cache_dir, flags, failed)
        except CompileError as exc:
            diagnostic = parse_compiler_message(str(exc))
            failed.append(Attempt(settings.backend, flags, "failed", str(exc), diagnostic.kind))
            logger.warning("%s: attempt %d failed: %s", name, len(failed), exc)
            if not diagnostic.flags_may_help:
                break
    python = replace(settings, backend="python")
    fallback = _compile_into_cache(
        name, source, module_key(name, source, python), python, cache_dir, (), []
    )
    logger.warning("%s: serving the pure-Python tier after %d failed attempts", name, len(failed))
    attempts = (*failed, Attempt("python", (), "fallback"))
    return replace(fallback, seconds=time.perf_counter() - start, attempts=attempts)


def _flag_plans(name: str, source: str, settings: CompileSettings) -> list[tuple[str, ...]]:
    """The C flags of each try: as asked, without machine-specific flags, the portable ones."""
    if settings.backend != "cython":
        return [()]
    asked = settings.module_cflags(source)
    plans = [asked, drop_native(asked), settings.portable_cflags]
    return list(dict.fromkeys(plans))


def _compile_into_cache(
    name: str,
    source: str,
    key: str,
    settings: CompileSettings,
    cache_dir: Path,
    flags: tuple[str, ...],
    failed: list[Attempt],
) -> CompiledModule:
    start = time.perf_counter()
    entry = cache_dir / key
    compiled = settings.backend != "python"
    attempts = (*failed, Attempt(settings.backend, flags, "compiled")) if compiled else ()
    with staging(cache_dir) as work:
        py_file = work / f"{name}.py"
        py_file.write_text(source)
        if settings.backend == "cython":
            c_file = work / f"{name}.c"
            _cythonize(py_file, c_file, name, settings)
            header = None if failed else python_header(settings, flags, cache_dir)
            _cc_mapped(settings, flags, c_file, work / artifact_name(name, settings), header)
            c_file.unlink()
        elif settings.backend == "nuitka":
            _nuitka(py_file, work, cache_dir)
        if failed:
            # A recovered module's record travels with its artifact, so a cache hit shows it.
            (work / _ATTEMPTS).write_text(json.dumps([asdict(a) for a in attempts]))
        digest = _seal_and_publish(work, artifact_name(name, settings), entry)
    seconds = time.perf_counter() - start
    logger.info("compiled %s with %s in %.2f s", name, settings.backend, seconds)
    artifact = entry / artifact_name(name, settings)
    return CompiledModule(name, key, artifact, digest, seconds, False, settings.backend, attempts)


_ATTEMPTS = "attempts.json"


def _recorded(entry: Path) -> tuple[Attempt, ...]:
    """The attempts a recovered module's cache entry records (none for a first-try compile)."""
    path = entry / _ATTEMPTS
    if not path.exists():
        return ()
    return tuple(_attempt(a) for a in json.loads(path.read_text()))


def _cythonize(py_file: Path, c_file: Path, name: str, settings: CompileSettings) -> None:
    from Cython.Compiler.Main import (  # type: ignore[attr-defined]
        CompilationOptions,
        compile_single,
        default_options,
    )

    options = CompilationOptions(  # type: ignore[no-untyped-call]
        default_options,
        language_level=3,
        output_file=str(c_file),
        shared_utility_qualified_name=(
            settings.shared_module_name if settings.shared_utility else None
        ),
    )
    log = io.StringIO()
    with redirect_stderr(log), redirect_stdout(log):
        result = compile_single(  # type: ignore[no-untyped-call]
            str(py_file), options, full_module_name=name
        )
    if result.num_errors:
        raise CompileError(f"cython: {name}.py: {_first_error(log.getvalue(), py_file)}")


def _cc_mapped(
    settings: CompileSettings,
    flags: tuple[str, ...],
    c_file: Path,
    out: Path,
    header: Path | None = None,
) -> None:
    """:func:`_cc`; a C error's line is mapped to the ``.py`` line Cython generated it from,
    so the diagnostic can be traced on to the template line and the state field."""
    from codegen.diagnostics import c_line_origin

    try:
        _cc(settings, flags, c_file, out, header)
    except CompileError as exc:
        message = str(exc).replace(f"{c_file.parent}/", "")
        where = c_line_origin(message, c_file)
        raise CompileError(f"{message} (from {where})" if where else message) from None


def _cc(
    settings: CompileSettings,
    cflags: tuple[str, ...],
    c_file: Path,
    out: Path,
    header: Path | None = None,
) -> None:
    """Compile and link ``c_file``; ``header``: a :func:`python_header` dir, searched first."""
    include = sysconfig.get_paths()["include"]
    first = [f"-I{header}"] if header is not None else []
    cmd = [*cc_command(settings.cc), *cflags, "-fPIC", "-shared", *first, f"-I{include}"]
    _run([*cmd, str(c_file), "-o", str(out)], f"{settings.cc} {c_file.name}")


def python_header(
    settings: CompileSettings, cflags: tuple[str, ...], cache_dir: Path
) -> Path | None:
    """A cache dir holding ``Python.h`` precompiled with ``cflags``, built on first use.

    ``-I`` it before Python's include dir: its ``Python.h`` includes the real one, and gcc
    takes its ``Python.h.gch`` instead when the ``.gch`` fits the compile. Keyed by the
    toolchain, the flags and the include dir; sealed like every cache entry. None for clang
    (it reads no ``.gch`` this way) or when the compiler cannot build the header.
    """
    if "clang" in toolchain_fingerprint(settings)["cc"]:
        return None
    include = sysconfig.get_paths()["include"]
    key = content_key(
        {"toolchain": toolchain_fingerprint(settings), "cflags": list(cflags), "include": include}
    )
    entry = cache_dir / f"{PCH_PREFIX}{key[:16]}"
    if _sealed(entry / _PCH) is not None:
        return entry
    try:
        with staging(cache_dir) as work:
            (work / "Python.h").write_text(f'#include "{include}/Python.h"\n')
            # Cython's C defines PY_SSIZE_T_CLEAN (empty) before the include: so must this.
            cmd = [*cc_command(settings.cc), *cflags, "-fPIC", "-DPY_SSIZE_T_CLEAN="]
            _run([*cmd, "-x", "c-header", str(work / "Python.h"), "-o", str(work / _PCH)], _PCH)
            _seal_and_publish(work, _PCH, entry)
    except CompileError as exc:
        logger.info("no precompiled Python.h for %s: %s", " ".join(cflags), exc)
        return None
    return entry


#: Cache entries of precompiled ``Python.h`` (not module keys: ``rsi gc`` keeps them).
PCH_PREFIX = "_rsi_pch_"
_PCH = "Python.h.gch"


def _nuitka(py_file: Path, work: Path, cache_dir: Path) -> None:
    """``nuitka --module`` into ``work/<name><EXT_SUFFIX>``.

    As with Cython, the extension is compiled under the module's own name: a build imports
    it as ``rsi_build_<id>.<name>`` from its private copy, so two contents of one module
    load side by side and none is ever re-imported under an old name. Nuitka's cache (its
    compiled C objects and bytecode) is ``cache_dir/nuitka``, kept between builds.
    """
    env = dict(os.environ, NUITKA_CACHE_DIR=str(cache_dir / "nuitka"))
    cmd = [sys.executable, "-m", "nuitka", "--module", "--quiet", "--remove-output"]
    _run([*cmd, f"--output-dir={work}", str(py_file)], f"nuitka {py_file.name}", env=env)
    py_file.with_suffix(".pyi").unlink(missing_ok=True)


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    except OSError as exc:
        raise CompileError(f"{what}: cannot run {cmd[0]!r}: {exc.strerror}") from None
    if proc.returncode != 0:
        raise CompileError(f"{what} failed: {_first_error(proc.stderr + proc.stdout, None)}")


def _first_error(log: str, py_file: Path | None) -> str:
    """The most specific diagnostic line: ``file.py:L:C: msg`` (Cython) or ``error:`` (cc)."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    prefix = f"{py_file.parent}/" if py_file else ""
    for pattern in (_CYTHON_DIAG, _CC_DIAG):
        for ln in lines:
            if pattern.search(ln):
                return ln.replace(prefix, "") if prefix else ln
    return lines[-1] if lines else "no diagnostic"


_CYTHON_DIAG = re.compile(r"\.py:\d+:\d+: ")
_CC_DIAG = re.compile(r"\b(error|fatal error):")


def _seal_and_publish(work: Path, artifact: str, entry: Path) -> str:
    """Write the entry's seal (every file's sha256), then publish it; return the artifact's.

    A present entry that fails its check is discarded first, so a bad entry never blocks
    the rename of a good one.
    """
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in work.iterdir()}
    (work / SEAL).write_text("".join(f"{digests[n]}  {n}\n" for n in sorted(digests)))
    if entry.exists():
        _sealed(entry / artifact)  # discards a bad entry, so that the rename can replace it
    try:
        os.rename(work, entry)
    except OSError:
        # Another process published the same key first. Its bytes may differ from ours (a
        # compile embeds its temp dir's path), so the entry's own seal is what counts.
        published = _sealed(entry / artifact)
        if published is not None:
            logger.debug("cache entry %s already present", entry.name)
            return published
        os.rename(work, entry)  # the other entry was bad and is gone: publish ours
    return digests[artifact]


def _sealed(artifact: Path) -> str | None:
    """``artifact``'s sha256 if its cache entry is present and intact, else None.

    Intact: the seal names the artifact and every file it names has its sha256. An entry
    that exists but fails (truncated, altered, unsealed, a file missing) is discarded with a
    one-line warning, so the caller compiles it again.
    """
    entry = artifact.parent
    if entry.is_symlink() or (entry.exists() and not entry.is_dir()):
        _drop(entry, "is not a directory")  # the link itself goes, never what it points to
        return None
    try:
        seal = (entry / SEAL).read_text()
    except FileNotFoundError:
        if entry.exists():
            _drop(entry, "has no seal")
        return None
    except (OSError, UnicodeDecodeError):
        _drop(entry, "has an unreadable seal")
        return None
    expected: dict[str, str] = {}
    for line in seal.splitlines():
        digest, _, name = line.partition("  ")
        expected[name] = digest
    if artifact.name not in expected:
        _drop(entry, f"has a seal that does not name {artifact.name}")
        return None
    for name, digest in expected.items():
        try:
            actual = hashlib.sha256((entry / name).read_bytes()).hexdigest()
        except OSError:
            actual = ""
        if actual != digest:
            _drop(entry, f"does not match its seal ({name})")
            return None
    return expected[artifact.name]


def _drop(entry: Path, why: str) -> None:
    logger.warning("cache entry %s %s; discarded, it is compiled again", entry.name, why)
    try:
        discard(entry)
    except FileNotFoundError:
        pass  # another process discarded it first


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
