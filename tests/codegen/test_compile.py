"""The cache key changes when a source or a flag changes, and for nothing else."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import codegen.compile
from codegen.compile import (
    SEAL,
    compile_modules,
    module_key,
    prestart_worker,
    python_header,
    stop_workers,
)
from codegen.errors import CompileError
from codegen.toolchain import CompileSettings

SRC = "import cython\n\nK: float = 1.0\n\n\ndef f(x: float) -> float:\n    return K * x\n"
HOT = "# rsi: cflags = -O3 -march=native\n" + SRC


class TestCacheKey:
    def test_stable(self) -> None:
        assert module_key("m", SRC, CompileSettings()) == module_key("m", SRC, CompileSettings())

    def test_source_change(self) -> None:
        s = CompileSettings()
        assert module_key("m", SRC, s) != module_key("m", SRC.replace("1.0", "2.0"), s)

    def test_flag_change(self) -> None:
        s = CompileSettings()
        assert module_key("m", SRC, s) != module_key("m", SRC, replace(s, cflags=("-O1",)))

    def test_backend_change(self) -> None:
        s = CompileSettings()
        assert module_key("m", SRC, s) != module_key("m", SRC, replace(s, backend="python"))

    def test_not_jobs(self) -> None:
        s = CompileSettings()
        assert module_key("m", SRC, s) == module_key("m", SRC, replace(s, jobs=7))

    def test_native_flags_only_matter_where_a_module_asks(self) -> None:
        s = CompileSettings()
        portable = CompileSettings.portable()
        assert module_key("m", SRC, s) == module_key("m", SRC, portable)
        assert module_key("m", HOT, s) != module_key("m", HOT, portable)

    def test_disallowed_header_flag(self) -> None:
        with pytest.raises(CompileError, match=r"C flag '-fplugin=evil.so', which is not allowed"):
            module_key("m", "# rsi: cflags = -fplugin=evil.so\n" + SRC, CompileSettings())


class TestCompile:
    def test_python_backend_is_a_copy(self, tmp_path: Path) -> None:
        out = compile_modules({"m": SRC}, CompileSettings(backend="python"), tmp_path)
        assert out["m"].artifact.read_text() == SRC

    def test_second_compile_is_a_hit(self, tmp_path: Path) -> None:
        s = CompileSettings(backend="python")
        compile_modules({"m": SRC}, s, tmp_path)
        assert compile_modules({"m": SRC}, s, tmp_path)["m"].cache_hit

    def test_missing_compiler(self, tmp_path: Path) -> None:
        with pytest.raises(CompileError, match=r"C compiler 'no-such-cc' not found"):
            compile_modules({"m": SRC}, CompileSettings(cc="no-such-cc"), tmp_path)

    def test_cython_error_names_the_line(self, tmp_path: Path) -> None:
        # The module falls back to pure Python (tests/codegen/test_compile_feedback.py);
        # the failed attempt keeps the diagnostic.
        bad = "import cython\n\n\ndef f() -> None:\n    x: cython.int = 'text'\n"
        done = compile_modules({"m": bad}, CompileSettings(), tmp_path)["m"]
        assert done.tier == "python"
        assert re.match(r"^cython: m.py: m.py:5:\d+: ", done.attempts[0].diagnostic)


class TestPrecompiledHeader:
    FLAGS = CompileSettings().cflags

    def test_it_is_built_once_then_reused(self, tmp_path: Path) -> None:
        entry = python_header(CompileSettings(), self.FLAGS, tmp_path)
        assert entry is not None
        gch = entry / "Python.h.gch"
        built = gch.stat().st_mtime_ns
        assert python_header(CompileSettings(), self.FLAGS, tmp_path) == entry
        assert gch.stat().st_mtime_ns == built

    def test_a_truncated_one_is_built_again(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        entry = python_header(CompileSettings(), self.FLAGS, tmp_path)
        assert entry is not None
        gch = entry / "Python.h.gch"
        gch.write_bytes(gch.read_bytes()[:1000])
        assert python_header(CompileSettings(), self.FLAGS, tmp_path) == entry
        assert "does not match its seal (Python.h.gch); discarded" in caplog.text
        assert gch.stat().st_size > 1_000_000

    def test_one_built_for_other_flags_is_ignored_by_gcc(self, tmp_path: Path) -> None:
        s = CompileSettings()
        source = "# rsi: cflags = -O2\n" + SRC
        entry = python_header(s, s.module_cflags(source), tmp_path)
        other = python_header(s, ("-O0",), tmp_path)
        assert entry is not None and other is not None
        (entry / "Python.h.gch").write_bytes((other / "Python.h.gch").read_bytes())
        seal = (other / SEAL).read_text()
        (entry / SEAL).write_text(seal)  # sealed, so it is used: gcc must refuse it itself
        done = compile_modules({"m": source}, s, tmp_path)["m"]
        assert done.tier == "cython"
        assert [a.outcome for a in done.attempts] == ["compiled"]


class TestWorkerNice:
    def test_one_module_compiles_in_a_worker_process(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import codegen.compile

        def in_process(*args: object) -> None:
            raise AssertionError("compiled in the calling interpreter")

        monkeypatch.setattr(codegen.compile, "_compile_into_cache", in_process)
        s = CompileSettings(shared_utility=False, worker_nice=0)
        out = compile_modules({"m": SRC}, s, tmp_path)
        assert out["m"].artifact.exists() and not out["m"].cache_hit
        with pytest.raises(AssertionError, match="calling interpreter"):
            compile_modules({"n": SRC}, replace(s, worker_nice=None), tmp_path)


class TestWarmWorkers:
    """``worker_nice`` set (watch mode): jobs go to warm workers kept between compiles."""

    @pytest.fixture(autouse=True)
    def _fresh_pool(self) -> Iterator[None]:
        stop_workers()
        yield
        stop_workers()

    def test_a_second_compile_reuses_the_worker(self, tmp_path: Path) -> None:
        s = CompileSettings(shared_utility=False, worker_nice=0)
        compile_modules({"m": SRC}, s, tmp_path)
        (first,) = codegen.compile._warm_idle[("compile", 0)]
        out = compile_modules({"n": SRC.replace("1.0", "2.0")}, s, tmp_path)
        assert not out["n"].cache_hit and out["n"].tier == "cython"
        assert codegen.compile._warm_idle[("compile", 0)] == [first] and first.poll() is None

    def test_a_worker_gone_meanwhile_is_replaced(self, tmp_path: Path) -> None:
        s = CompileSettings(shared_utility=False, worker_nice=0)
        prestart_worker(s)
        (gone,) = codegen.compile._warm_idle[("compile", 0)]
        gone.kill()
        gone.wait()
        assert compile_modules({"m": SRC}, s, tmp_path)["m"].tier == "cython"
        (fresh,) = codegen.compile._warm_idle[("compile", 0)]
        assert fresh.pid != gone.pid

    def test_a_cython_error_in_the_worker_falls_back_and_keeps_it(self, tmp_path: Path) -> None:
        s = CompileSettings(shared_utility=False, worker_nice=0)
        bad = "import cython\n\n\ndef g() -> int:\n    x: cython.int = 'text'\n    return 1\n"
        out = compile_modules({"m": bad}, s, tmp_path)["m"]
        assert out.tier == "python"
        assert [a.outcome for a in out.attempts] == ["failed", "fallback"]
        (alive,) = codegen.compile._warm_idle[("compile", 0)]
        assert alive.poll() is None

    def test_an_idle_worker_exits(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(codegen.compile, "WARM_IDLE_S", 0.5)
        prestart_worker(CompileSettings(worker_nice=0))
        (proc,) = codegen.compile._warm_idle[("compile", 0)]
        assert proc.wait(timeout=30) == 0

    def test_a_worker_exits_when_its_caller_is_killed(self) -> None:
        caller = (
            "import sys, time, codegen.compile as c\n"
            "from codegen.toolchain import CompileSettings\n"
            "c.prestart_worker(CompileSettings(worker_nice=0))\n"
            "print(c._warm_idle[('compile', 0)][0].pid, flush=True)\n"
            "time.sleep(600)\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", caller], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        worker = int(proc.stdout.readline())
        proc.kill()  # kill -9: nothing runs in the caller
        proc.wait()
        deadline = time.monotonic() + 30
        while Path(f"/proc/{worker}").exists() and _state(worker) != "Z":
            assert time.monotonic() < deadline, "the warm worker outlived its caller"
            time.sleep(0.1)

    def test_a_worker_killed_mid_job_leaves_no_staging_dir(self, tmp_path: Path) -> None:
        """Its staging dir stayed in the cache until the next watcher's start (red team)."""
        cc = tmp_path / "slow-cc"  # a compiler that takes two minutes
        cc.write_text('#!/bin/sh\ncase "$*" in *--version*) exec cc "$@";; esac\nsleep 120\n')
        cc.chmod(0o755)
        cache = tmp_path / "cache"
        s = CompileSettings(shared_utility=False, worker_nice=0, cc=str(cc))
        failed: list[BaseException] = []

        def compile_it() -> None:
            try:
                compile_modules({"m": SRC}, s, cache)
            except CompileError as exc:
                failed.append(exc)

        thread = threading.Thread(target=compile_it)
        thread.start()
        killed: set[int] = set()
        for _ in range(2):  # the job is tried once more in a new worker: kill that one too
            deadline = time.monotonic() + 60
            while not (found := {int(p.name.split("-")[1]) for p in cache.glob(".tmp-*")} - killed):
                assert time.monotonic() < deadline, "no staging dir within 60 s"
                time.sleep(0.05)
            worker = found.pop()
            os.killpg(worker, signal.SIGKILL)  # the worker and the compiler it runs
            killed.add(worker)
        thread.join(timeout=30)
        assert [str(e) for e in failed] == ["compile worker died (exit status -9)"]
        assert sorted(cache.glob(".tmp-*")) == []


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"
