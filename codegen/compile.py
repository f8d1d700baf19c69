"""Compiler backends: rendered ``.py`` (Cython pure-Python mode) → importable artifact.

``python`` compiles nothing: the ``.py`` is the interpreted tier. ``cython`` turns it into C
(linked against a Cython shared utility module, so each extension is small and quick to
compile) and runs the C compiler. ``nuitka`` is optional. Artifacts are cached by content key
in ``cache_dir/<key>/``; a cache entry appears atomically (temp dir + rename).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass
from pathlib import Path

from codegen.errors import CompileError
from codegen.fsutil import staging
from codegen.toolchain import (
    EXT_SUFFIX,
    CompileSettings,
    content_key,
    cpu_features,
    toolchain_fingerprint,
)

__all__ = [
    "CompiledModule",
    "artifact_name",
    "module_key",
    "compile_modules",
    "start_shared_utility",
    "shared_utility",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompiledModule:
    """One module's artifact in the cache and how long it took (0 on a hit)."""

    name: str
    key: str
    artifact: Path
    seconds: float
    cache_hit: bool


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
        or _shared_artifact(settings, cache_dir).exists()
    ):
        return None
    pool = ThreadPoolExecutor(1)
    future: Future[object] = pool.submit(_in_worker, None, settings, cache_dir)
    pool.shutdown(wait=False)
    return future


def compile_modules(
    sources: dict[str, str],
    settings: CompileSettings,
    cache_dir: Path,
    *,
    shared_started: bool = False,
) -> dict[str, CompiledModule]:
    """Compile every module not already cached; modules compile in parallel."""
    results: dict[str, CompiledModule] = {}
    todo: dict[str, str] = {}
    for name, source in sources.items():
        key = module_key(name, source, settings)
        artifact = cache_dir / key / artifact_name(name, settings)
        if artifact.exists():
            results[name] = CompiledModule(name, key, artifact, 0.0, True)
        else:
            todo[name] = key
    need_shared = (
        settings.backend == "cython"
        and settings.shared_utility
        and not shared_started
        and not _shared_artifact(settings, cache_dir).exists()
    )
    if not todo and not need_shared:
        return results
    # Largest first, so two workers finish close together (C size tracks source size).
    jobs = sorted(
        ((name, sources[name], key) for name, key in todo.items()), key=lambda j: -len(j[1])
    )
    if len(jobs) + need_shared <= 1 or settings.jobs <= 1 or settings.backend == "python":
        # In-process: one job, or the python backend, whose "compile" is a file copy.
        if need_shared:
            shared_utility(settings, cache_dir)
        done = [_compile_into_cache(*job, settings, cache_dir) for job in jobs]
    else:
        # Worker *processes* (Cython is not thread-safe), started as `python -m` so they never
        # re-import the caller's __main__ as multiprocessing's spawn would. The shared utility
        # module is only needed at load time, so it compiles alongside the modules.
        workers = min(settings.jobs, len(jobs) + need_shared)
        with ThreadPoolExecutor(workers) as pool:
            shared = pool.submit(_in_worker, None, settings, cache_dir) if need_shared else None
            futures = [pool.submit(_in_worker, job, settings, cache_dir) for job in jobs]
            done = [_result(f.result(), settings, cache_dir) for f in futures]
            if shared is not None:
                shared.result()
    results.update({m.name: m for m in done})
    return {name: results[name] for name in sources}


def _in_worker(
    job: tuple[str, str, str] | None, settings: CompileSettings, cache_dir: Path
) -> dict[str, object]:
    spec = {"job": job, "settings": asdict(settings), "cache_dir": str(cache_dir)}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([_IMPORT_ROOT, *sys.path[1:]]))
    proc = subprocess.run(
        [sys.executable, "-m", "codegen.compile"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise CompileError(
            lines[-1].removeprefix("rsi-compile-error: ") if lines else "worker died"
        )
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def _result(raw: dict[str, object], settings: CompileSettings, cache_dir: Path) -> CompiledModule:
    name, key = str(raw["name"]), str(raw["key"])
    seconds = float(raw["seconds"])  # type: ignore[arg-type]
    return CompiledModule(
        name, key, cache_dir / key / artifact_name(name, settings), seconds, False
    )


def _worker_main() -> int:
    """``python -m codegen.compile``: compile one job read as JSON from stdin."""
    spec = json.loads(sys.stdin.read())
    raw = spec["settings"]
    settings = CompileSettings(**{**raw, "cflags": tuple(raw["cflags"])})
    cache_dir = Path(spec["cache_dir"])
    try:
        if spec["job"] is None:
            shared_utility(settings, cache_dir)
            print(json.dumps({}))
        else:
            name, source, key = spec["job"]
            done = _compile_into_cache(name, source, key, settings, cache_dir)
            print(json.dumps({"name": done.name, "key": done.key, "seconds": done.seconds}))
    except CompileError as exc:
        print(f"rsi-compile-error: {exc}", file=sys.stderr)
        return 1
    return 0


_IMPORT_ROOT = str(Path(__file__).resolve().parents[1])


def _shared_artifact(settings: CompileSettings, cache_dir: Path) -> Path:
    name = settings.shared_module_name
    return cache_dir / name / f"{name}{EXT_SUFFIX}"


def shared_utility(settings: CompileSettings, cache_dir: Path) -> Path:
    """Build (once per toolchain) the Cython shared utility module; return its artifact."""
    name = settings.shared_module_name
    artifact = _shared_artifact(settings, cache_dir)
    entry = artifact.parent
    if artifact.exists():
        return artifact
    with staging(cache_dir) as work:
        c_file = work / f"{name}.c"
        _run(
            [sys.executable, "-c", _CYTHON_MAIN, f"--generate-shared={c_file}"],
            "cython --generate-shared",
        )
        # Utility code is not hot: -O1 keeps this one-off compile short.
        _cc(settings, ("-O1",), c_file, work / artifact.name)
        _publish(work, entry)
    return artifact


_CYTHON_MAIN = "from Cython.Compiler.Main import setuptools_main; setuptools_main()"


def _compile_into_cache(
    name: str, source: str, key: str, settings: CompileSettings, cache_dir: Path
) -> CompiledModule:
    start = time.perf_counter()
    entry = cache_dir / key
    with staging(cache_dir) as work:
        py_file = work / f"{name}.py"
        py_file.write_text(source)
        if settings.backend == "cython":
            c_file = work / f"{name}.c"
            _cythonize(py_file, c_file, name, settings)
            flags = settings.module_cflags(source)
            _cc(settings, flags, c_file, work / artifact_name(name, settings))
            c_file.unlink()
        elif settings.backend == "nuitka":
            _nuitka(py_file, work)
        _publish(work, entry)
    seconds = time.perf_counter() - start
    logger.info("compiled %s with %s in %.2f s", name, settings.backend, seconds)
    return CompiledModule(name, key, entry / artifact_name(name, settings), seconds, False)


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


def _cc(settings: CompileSettings, cflags: tuple[str, ...], c_file: Path, out: Path) -> None:
    include = sysconfig.get_paths()["include"]
    cmd = [settings.cc, *cflags, "-fPIC", "-shared", f"-I{include}", str(c_file)]
    _run([*cmd, "-o", str(out)], f"{settings.cc} {c_file.name}")


def _nuitka(py_file: Path, work: Path) -> None:
    if shutil.which("nuitka") is None and not _has_module("nuitka"):
        raise CompileError(
            "backend 'nuitka' needs Nuitka: pip install nuitka, or use --backend cython"
        )
    cmd = [sys.executable, "-m", "nuitka", "--module", "--quiet", f"--output-dir={work}"]
    _run([*cmd, str(py_file)], f"nuitka {py_file.name}")


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
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


def _publish(work: Path, entry: Path) -> None:
    try:
        os.rename(work, entry)
    except OSError:
        # Another process published the same key first; contents are identical by key.
        logger.debug("cache entry %s already present", entry.name)


if __name__ == "__main__":
    sys.exit(_worker_main())
