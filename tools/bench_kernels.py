"""Benchmark the generated attention kernels against the NumPy reference and torch.

One process, one thread (BLAS/OpenMP pinned to 1 thread before numpy is imported, torch
``set_num_threads(1)``), the same inputs for every implementation, and interleaved
repetitions (each round calls kernel, reference and torch once, so drift hits all alike).
Shapes default to the issue's: n=100 tokens, d=64, multi-head 4 heads of 16.

    PYTHONPATH=. .venv/bin/python tools/bench_kernels.py [--json] [--repeats 300]

With ``--json`` the last line is one JSON object whose ``results`` is a list of
``{mechanism, n, d, heads, us_median, numpy_us_median, torch_us_median, max_rel_err,
gflops}`` (torch null where torch is absent or has no equivalent), plus ``us_min``,
``tile``, ``numpy_ratio_paired`` and, with ``--threads T``, ``thread_scaling``: the
throughput of T threads calling the kernel at once over one thread (about T on T idle cores
when the hot loop runs without the GIL, about 1 when it holds it). ``--march x86-64-v3``
compiles for AVX2+FMA without AVX-512, to see what such a machine gets.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402 - the thread pins above must precede numpy
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codegen.state import AttentionMechanism, RSIState, load_state  # noqa: E402
from codegen.toolchain import CompileSettings  # noqa: E402
from runtime.kernels.build import kernel_modules  # noqa: E402
from runtime.kernels.inputs import flops, reference_call  # noqa: E402
from runtime.kernels.reference import max_rel_err  # noqa: E402

M = AttentionMechanism
REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch = _torch()
    base = load_state(args.state)
    config = _config(torch)
    bench_state = _bench_state(base, args)
    mechanisms = [M(m) for m in args.mechanism] if args.mechanism else list(M)
    settings = _settings(args)
    config["march"] = args.march
    config["threads"] = args.threads
    cache = args.cache_dir or (args.state.resolve().parent / "generated" / ".cache")
    start = time.perf_counter()
    built = kernel_modules(bench_state, mechanisms, settings, cache)
    config["build_seconds"] = round(time.perf_counter() - start, 2)
    rows = []
    for mech in mechanisms:
        arch = bench_state.architecture
        kargs, ref_call = reference_call(mech, arch, args.n, args.seed)
        kernel = built[mech].kernel
        expected = ref_call()
        err = max_rel_err(kernel(*kargs), expected)
        impls: dict[str, Callable[[], object]] = {
            "kernel": lambda kernel=kernel, kargs=kargs: kernel(*kargs),
            "numpy": ref_call,
        }
        torch_call = _torch_call(torch, mech, arch, kargs)
        if torch_call is not None:
            impls["torch"] = torch_call
        times = _interleaved(impls, args.repeats, args.warmup)
        us = statistics.median(times["kernel"])
        paired = [b / a for a, b in zip(times["kernel"], times["numpy"], strict=True)]
        rows.append(
            {
                "mechanism": mech.value,
                "n": args.n,
                "d": arch.embedding_dim,
                "heads": arch.heads if mech is M.multihead else 1,
                "us_median": round(us, 2),
                "us_min": round(min(times["kernel"]), 2),
                "numpy_us_median": round(statistics.median(times["numpy"]), 2),
                "torch_us_median": (
                    round(statistics.median(times["torch"]), 2) if "torch" in times else None
                ),
                "max_rel_err": float(f"{err:.3g}"),
                "gflops": round(flops(mech, arch, args.n) / us / 1e3, 2),
                "tile": _choice(bench_state, mech),
                # Median of the per-round ratios: each round times both back to back, so
                # the machine's drift cancels (the ratio of medians is the headline).
                "numpy_ratio_paired": round(statistics.median(paired), 2),
            }
        )
        if args.threads > 1:
            scaling = _thread_scaling(impls["kernel"], args.threads, args.repeats)
            rows[-1]["thread_scaling"] = scaling
    _print_table(rows, config)
    if args.json:
        print(json.dumps({"results": rows, "config": config}, sort_keys=True))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--state", type=Path, default=REPO / "rsi_state.json")
    p.add_argument("--n", type=int, default=100, help="tokens (baked as seq_len)")
    p.add_argument("--d", type=int, default=64, help="embedding width")
    p.add_argument("--heads", type=int, default=4, help="heads of the multi-head kernel")
    p.add_argument("--mechanism", action="append", choices=[m.value for m in M])
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="parallel compiles")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.add_argument(
        "--march",
        choices=("native", "x86-64-v3", "x86-64-v2"),
        default="native",
        help="instruction set the kernels are compiled for (x86-64-v3 = AVX2+FMA, no AVX-512)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="also time THREADS threads calling each kernel at once: the throughput gain "
        "over one thread shows the hot loops run without the GIL",
    )
    return p


def _settings(args: argparse.Namespace) -> CompileSettings:
    """Compile settings; a named ``--march`` replaces the modules' own ``-march=native``."""
    if args.march == "native":
        return CompileSettings(backend="cython", jobs=args.jobs)
    base = CompileSettings().cflags
    return CompileSettings(
        backend="cython", jobs=args.jobs, native=False, cflags=(*base, f"-march={args.march}")
    )


def _thread_scaling(call: Callable[[], object], threads: int, calls: int) -> float:
    """Throughput of ``threads`` threads calling at once over one thread, same total calls."""

    def run(count: int) -> None:
        for _ in range(count):
            call()

    def wall(workers: int) -> float:
        pool = [threading.Thread(target=run, args=(calls // workers,)) for _ in range(workers)]
        t0 = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return time.perf_counter() - t0

    one = min(wall(1) for _ in range(3))
    many = min(wall(threads) for _ in range(3))
    return round(one / many, 2)


def _bench_state(base: RSIState, args: argparse.Namespace) -> RSIState:
    """The state's knobs (tuned choices included) with the benchmark's shapes baked in."""
    arch = base.architecture.model_dump()
    arch.update(seq_len=args.n, embedding_dim=args.d, heads=args.heads, causal=False)
    data = base.model_dump(mode="json")
    data["architecture"] = arch
    return RSIState.model_validate_json(json.dumps(data))


def _choice(state: RSIState, mech: AttentionMechanism) -> str:
    choice = state.kernels.tuned.get(mech)
    if mech is M.mamba:
        return "-"
    if choice is None:
        return "4x4x1 (default)"
    return f"{choice.tile}x{choice.unroll}x{choice.width}"


def _interleaved(
    impls: dict[str, Callable[[], object]], repeats: int, warmup: int
) -> dict[str, list[float]]:
    for _ in range(warmup):
        for call in impls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in impls}
    clock = time.perf_counter
    for _ in range(repeats):
        for name, call in impls.items():
            t0 = clock()
            call()
            times[name].append((clock() - t0) * 1e6)
    return times


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


def _torch_call(
    torch: Any, mech: AttentionMechanism, arch: Any, kargs: tuple[Any, ...]
) -> Callable[[], object] | None:
    """torch's closest equivalent on the same arrays (no copies: ``from_numpy`` views)."""
    if torch is None or mech not in (M.sdpa, M.flash, M.multihead, M.local_global, M.differential):
        return None
    sdpa = torch.nn.functional.scaled_dot_product_attention
    q, k, v = (torch.from_numpy(a) for a in kargs[:3])
    n, d = q.shape
    if mech is M.multihead:
        h = arch.heads
        q4, k4, v4 = (t.view(n, h, d // h).transpose(0, 1) for t in (q, k, v))
        return _no_grad(torch, lambda: sdpa(q4, k4, v4).transpose(0, 1).reshape(n, d))
    q3, k3, v3 = q[None], k[None], v[None]
    if mech is M.local_global:
        i = torch.arange(n)[:, None]
        j = torch.arange(n)[None, :]
        g = arch.global_tokens
        allowed = ((i - j).abs() <= arch.window) | (i < g) | (j < g)
        return _no_grad(torch, lambda: sdpa(q3, k3, v3, attn_mask=allowed))
    if mech is M.differential:
        hd = d // 2
        lam = arch.diff_lambda
        return _no_grad(
            torch,
            lambda: (
                sdpa(q3[..., :hd], k3[..., :hd], v3) - lam * sdpa(q3[..., hd:], k3[..., hd:], v3)
            ),
        )
    return _no_grad(torch, lambda: sdpa(q3, k3, v3))


def _no_grad(torch: Any, fn: Callable[[], object]) -> Callable[[], object]:
    def call() -> object:
        with torch.no_grad():
            return fn()

    return call


def _config(torch: Any) -> dict[str, Any]:
    """Threads, BLAS and CPU: what the numbers were measured with."""
    flags, model, mhz = _cpu()
    isa = "avx512f" if "avx512f" in flags else ("avx2+fma" if "fma" in flags else "other")
    per_cycle = {"avx512f": 64, "avx2+fma": 32}.get(isa, 8)  # 2 FMA ports x lanes x 2
    config: dict[str, Any] = {
        "threads_env": {
            v: os.environ.get(v)
            for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        },
        "numpy": np.__version__,
        "blas": _blas(),
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "python": platform.python_version(),
        "cpu": model,
        "cpu_mhz": mhz,
        "isa": isa,
        "peak_gflops_1core": round(mhz * per_cycle / 1e3, 1),
        "peak_gflops_1core_avx2_fma": round(mhz * 32 / 1e3, 1),
        "load_avg": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }
    return config


def _cpu() -> tuple[set[str], str, float]:
    flags: set[str] = set()
    model, mhz = platform.processor(), 0.0
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "flags" and not flags:
                    flags = set(value.split())
                elif key == "model name" and model == platform.processor():
                    model = value.strip()
                elif key == "cpu MHz" and not mhz:
                    mhz = float(value)
    except OSError:
        pass
    return flags, model, mhz


def _blas() -> str:
    try:
        info = np.show_config(mode="dicts")  # type: ignore[call-arg]
        blas = info["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except (TypeError, KeyError):
        return "unknown"


def _print_table(rows: list[dict[str, Any]], config: dict[str, Any]) -> None:
    print(
        f"# 1 thread; -march={config['march']}; BLAS {config['blas']}; torch {config['torch']} "
        f"(threads {config['torch_threads']}); {config['cpu']} @ {config['cpu_mhz']:.0f} MHz, "
        f"{config['isa']}: single-core peak ~{config['peak_gflops_1core']} GFLOP/s "
        f"(AVX2+FMA ~{config['peak_gflops_1core_avx2_fma']}); load {config['load_avg']:.1f}"
    )
    head = f"{'mechanism':13s} {'n':>4s} {'d':>4s} {'h':>2s} {'tile':>15s} {'kernel us':>10s} "
    head += f"{'numpy us':>10s} {'torch us':>10s} {'x numpy':>8s} {'x torch':>8s} "
    head += f"{'GFLOP/s':>8s} {'rel err':>8s}"
    print(head)
    for r in rows:
        torch_us = r["torch_us_median"]
        vs_torch = f"{torch_us / r['us_median']:8.2f}" if torch_us else f"{'-':>8s}"
        print(
            f"{r['mechanism']:13s} {r['n']:4d} {r['d']:4d} {r['heads']:2d} {r['tile']:>15s} "
            f"{r['us_median']:10.1f} {r['numpy_us_median']:10.1f} "
            f"{(torch_us if torch_us else float('nan')):10.1f} "
            f"{r['numpy_us_median'] / r['us_median']:8.2f} {vs_torch} {r['gflops']:8.2f} "
            f"{r['max_rel_err']:8.1e}"
        )
    scaling = [f"{r['mechanism']} {r['thread_scaling']}x" for r in rows if "thread_scaling" in r]
    if scaling:
        print(f"# throughput of {config['threads']} threads over 1: " + ", ".join(scaling))


if __name__ == "__main__":
    sys.exit(main())
