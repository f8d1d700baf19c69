"""Compile settings and the fingerprint of everything that can change a compiled artifact."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from typing import Literal

from codegen.errors import CompileError

__all__ = [
    "Backend",
    "BACKENDS",
    "CompileSettings",
    "EXT_SUFFIX",
    "toolchain_fingerprint",
    "content_key",
    "cpu_features",
    "cc_command",
    "drop_native",
]

Backend = Literal["python", "cython", "nuitka"]
BACKENDS: tuple[Backend, ...] = ("python", "cython", "nuitka")
EXT_SUFFIX: str = sysconfig.get_config_var("EXT_SUFFIX") or ".so"

_MODULE_FLAGS = re.compile(r"^# rsi: cflags = (.*)$", re.MULTILINE)
_ALLOWED_MODULE_FLAG = re.compile(
    r"-O[0-3sg]|-march=native|-mtune=native|-funroll-loops|-fno-math-errno|-ffp-contract=fast|-fno-trapping-math"
)
_NATIVE = ("-march=", "-mtune=", "-mcpu=")


@dataclass(frozen=True)
class CompileSettings:
    """How a build is compiled: a value object, hashed into every cache key.

    ``cflags`` apply to every module (``-O1``: most generated code is glue, and gcc's time
    on Cython's C grows fast with the level: about 0.55 / 1.0 / 1.5 s at -O0/-O1/-O2 for the
    scoring module). A hot module asks for more in its own header,
    ``# rsi: cflags = -O3 -march=native``, and a module rebuilt on every edit for less
    (``-Og`` for ``scoring``, ``-O0`` for ``knowledge``); ``native=False`` (wheels) drops
    machine-specific flags so the artifact runs on any CPU of this architecture.

    ``specialize`` lists ``module:function`` targets decorated with ``@rsi_optimized``: each
    gets a specialized copy in the build (:mod:`codegen.specialize`). ``max_attempts``
    bounds the compile attempts per module before it falls back to the pure-Python tier
    (:func:`codegen.compile.compile_modules`).
    """

    backend: Backend = "cython"
    cc: str = field(default_factory=lambda: os.environ.get("CC") or "cc")
    cflags: tuple[str, ...] = ("-O1", "-pipe", "-fno-strict-aliasing")
    native: bool = True
    shared_utility: bool = True
    jobs: int = 2
    specialize: tuple[str, ...] = ()
    max_attempts: int = 3
    #: Compile even a single module in a worker process, at this added niceness (0: as
    #: the caller), never in the calling interpreter (watch mode: serving threads keep the
    #: GIL). ``None`` keeps one-module rebuilds in-process, saving the worker's start-up.
    worker_nice: int | None = None

    @classmethod
    def portable(cls, backend: Backend = "cython") -> CompileSettings:
        """Settings for artifacts that must run on any CPU of this architecture."""
        return cls(backend=backend, native=False)

    def module_cflags(self, source: str) -> tuple[str, ...]:
        """Flags for one module: the base flags plus the allowed ones its header asks for."""
        match = _MODULE_FLAGS.search(source)
        extra = match.group(1).split() if match else []
        for flag in extra:
            if not _ALLOWED_MODULE_FLAG.fullmatch(flag):
                raise CompileError(f"module header asks for C flag {flag!r}, which is not allowed")
        if not self.native:
            extra = [f for f in extra if not f.startswith(_NATIVE)]
        return (*self.cflags, *extra)

    @property
    def portable_cflags(self) -> tuple[str, ...]:
        """The last flags a failing module is retried with: the defaults, nothing per CPU."""
        return drop_native(CompileSettings.cflags)

    @property
    def shared_module_name(self) -> str:
        """Name of the Cython shared utility module these settings link against."""
        digest = content_key({"kind": "cyutility", "toolchain": toolchain_fingerprint(self)})
        return f"_rsi_cyutility_{digest[:12]}"


def content_key(payload: object) -> str:
    """sha256 of a JSON-serializable payload with sorted keys."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def toolchain_fingerprint(settings: CompileSettings) -> dict[str, str]:
    """Everything outside the source that can change what a backend produces."""
    info = {
        "backend": settings.backend,
        "python": sys.version.split()[0],
        "soabi": str(sysconfig.get_config_var("SOABI")),
        "machine": platform.machine(),
    }
    if settings.backend == "python":
        return info
    # Imported here: `rsi --help` and `rsi status` need this module but not Cython.
    from Cython import __version__ as cython_version  # type: ignore[attr-defined]

    info.update(
        cython=cython_version,
        cc=_compiler_version(settings.cc),
        cflags=" ".join(settings.cflags),
        shared_utility=str(settings.shared_utility),
    )
    return info


def cpu_features(cflags: tuple[str, ...]) -> str:
    """The CPU's feature flags when ``cflags`` tune for this CPU, else ``""``."""
    return _cpu_flags() if any(f.startswith(_NATIVE) for f in cflags) else ""


def cc_command(cc: str) -> list[str]:
    """``$CC`` as a command: a compiler and its flags (``CC="gcc -w"``), shell-quoted."""
    try:
        words = shlex.split(cc)
    except ValueError as exc:
        raise CompileError(f"CC={cc!r} cannot be split into words: {exc}") from None
    if not words:
        raise CompileError("CC is empty; set it to a C compiler such as gcc, or unset it")
    return words


def drop_native(flags: tuple[str, ...]) -> tuple[str, ...]:
    """``flags`` without the machine-specific ones (``-march=``, ``-mtune=``, ``-mcpu=``)."""
    return tuple(f for f in flags if not f.startswith(_NATIVE))


@functools.lru_cache(maxsize=8)
def _compiler_version(cc: str) -> str:
    compiler, *flags = cc_command(cc)
    path = shutil.which(compiler)
    if path is None:
        source = f" (from CC={cc!r})" if flags else ""
        raise CompileError(
            f"C compiler {compiler!r}{source} not found on PATH "
            "(install gcc, or use --backend python)"
        )
    try:
        out = subprocess.run(
            [path, *flags, "--version"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CompileError(f"C compiler CC={cc!r} does not run: {exc}") from None
    # The flags change the artifact, so they are part of the toolchain's identity.
    head = out.stdout.splitlines()[0] if out.stdout else "?"
    return f"{path}{''.join(' ' + f for f in flags)}: {head}"


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return hashlib.sha256(line.split(":", 1)[1].strip().encode()).hexdigest()
    except OSError:
        pass
    return platform.processor() or "unknown"
