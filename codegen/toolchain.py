"""Compile settings and the fingerprint of everything that can change a compiled artifact."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from typing import Literal

import Cython

from codegen.errors import CompileError

__all__ = [
    "Backend",
    "BACKENDS",
    "CompileSettings",
    "EXT_SUFFIX",
    "toolchain_fingerprint",
    "content_key",
]

Backend = Literal["python", "cython", "nuitka"]
BACKENDS: tuple[Backend, ...] = ("python", "cython", "nuitka")
EXT_SUFFIX: str = sysconfig.get_config_var("EXT_SUFFIX") or ".so"

_PORTABLE_CFLAGS = ("-O3", "-fno-strict-aliasing")


@dataclass(frozen=True)
class CompileSettings:
    """How a build is compiled: a value object, hashed into every cache key.

    ``cflags`` default to ``-O3 -march=native``: builds are made for the machine that runs
    them. Wheels use :meth:`portable`, which drops machine-specific flags.
    """

    backend: Backend = "cython"
    cc: str = "cc"
    cflags: tuple[str, ...] = ("-O3", "-march=native", "-fno-strict-aliasing")
    shared_utility: bool = True
    jobs: int = 2
    extra: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def portable(cls, backend: Backend = "cython") -> CompileSettings:
        """Settings for artifacts that must run on any CPU of this architecture."""
        return cls(backend=backend, cflags=_PORTABLE_CFLAGS)

    @property
    def machine_specific(self) -> bool:
        """True when the flags tune code for this CPU, so its features belong in the key."""
        return any(f.startswith(("-march=", "-mtune=", "-mcpu=")) for f in self.cflags)

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
    info.update(
        cython=Cython.__version__,
        cc=_compiler_version(settings.cc),
        cflags=" ".join(settings.cflags),
        shared_utility=str(settings.shared_utility),
    )
    if settings.machine_specific:
        info["cpu_flags"] = _cpu_flags()
    return info


@functools.lru_cache(maxsize=8)
def _compiler_version(cc: str) -> str:
    path = shutil.which(cc)
    if path is None:
        raise CompileError(f"C compiler {cc!r} not found on PATH (install gcc, or use --backend python)")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CompileError(f"C compiler {cc!r} does not run: {exc}") from None
    return f"{path}: {out.stdout.splitlines()[0] if out.stdout else '?'}"


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
