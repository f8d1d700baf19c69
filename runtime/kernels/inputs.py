"""Standard inputs of every attention kernel, shared by the autotuner and the benchmark.

Arrays are float32 C-contiguous, drawn from ``seed`` (standard normal); random features,
router and state-space parameters come from the reference's seeded helpers. No mask: the
timings are of the dense case.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from codegen.state import ArchitectureParams, AttentionMechanism
from runtime.kernels import reference as ref

__all__ = ["kernel_inputs", "reference_call", "flops"]

M = AttentionMechanism


def kernel_inputs(
    mechanism: AttentionMechanism, arch: ArchitectureParams, n: int, seed: int = 0
) -> tuple[tuple[Any, ...], npt.NDArray[np.float64]]:
    """Positional arguments of ``mechanism``'s kernel for ``n`` rows, and the expected output."""
    args, call = reference_call(mechanism, arch, n, seed)
    return args, call()


def reference_call(
    mechanism: AttentionMechanism,
    arch: ArchitectureParams,
    n: int,
    seed: int = 0,
    *,
    scale: float = 1.0,
    mask: npt.NDArray[np.uint8] | None = None,
) -> tuple[tuple[Any, ...], Any]:
    """Kernel arguments and a zero-argument callable running the reference on them.

    ``scale`` multiplies the standard-normal q, k, v; a key ``mask`` (1 = attend) is passed
    to every mechanism that takes one (all but mamba) as its last argument.
    """
    d = arch.embedding_dim
    rng = np.random.default_rng(seed)
    q, k, v = ((rng.standard_normal((n, d)) * scale).astype(np.float32) for _ in range(3))
    c = arch.causal
    km = None if mask is None else mask.astype(bool)
    tail: tuple[Any, ...] = () if mask is None else (mask,)
    if mechanism is M.mamba:
        p = ref.mamba_params(seed, n, d, arch.state_dim)
        args: tuple[Any, ...] = (q, p["delta"], p["a"], p["b"], p["c"], p["skip"])
        return args, lambda: ref.mamba(*args)
    if mechanism is M.linear:
        omega = ref.performer_features(seed, arch.random_features, d)
        return (q, k, v, omega, *tail), lambda: ref.linear(q, k, v, omega, km, c)
    if mechanism is M.moe:
        router = ref.router_weights(seed, d, arch.num_experts)
        return (q, k, v, router, *tail), lambda: ref.moe(q, k, v, router, arch.top_k, km, c)
    calls = {
        M.sdpa: lambda: ref.sdpa(q, k, v, km, c),
        M.flash: lambda: ref.flash(q, k, v, km, c),
        M.multihead: lambda: ref.multihead(q, k, v, arch.heads, km, c),
        M.local_global: lambda: ref.local_global(q, k, v, arch.window, arch.global_tokens, km, c),
        M.hyperbolic: lambda: ref.hyperbolic(q, k, v, arch.curvature, km, c),
        M.differential: lambda: ref.differential(q, k, v, arch.diff_lambda, km, c),
    }
    return (q, k, v, *tail), calls[mechanism]


def flops(mechanism: AttentionMechanism, arch: ArchitectureParams, n: int) -> float:
    """Useful floating-point operations of one call (multiply-add = 2), dense, no mask.

    Counts the matrix products that dominate (scores and weighted values), not exp or
    softmax bookkeeping; causal halves the pairs.
    """
    d = arch.embedding_dim
    pairs = n * n if not arch.causal else n * (n + 1) / 2
    if mechanism in (M.sdpa, M.flash, M.multihead, M.hyperbolic):
        return 4.0 * pairs * d  # QK^T (or squared distances) and PV, d columns in all
    if mechanism is M.differential:
        return 2.0 * pairs * d + 2.0 * pairs * d  # two half-width score maps, PV at full d
    if mechanism is M.local_global:
        w, g = arch.window, arch.global_tokens
        per_row = min(n, 2 * w + 1 + g)
        return 4.0 * d * (n * per_row + g * n)
    if mechanism is M.moe:
        return 4.0 * pairs * (d // arch.num_experts) * arch.top_k + 2.0 * n * d * arch.num_experts
    if mechanism is M.linear:
        m = arch.random_features
        return 2.0 * n * d * m * 2 + 2.0 * n * m * d * 2  # features of q and k, kv and output
    # mamba: per token, channel and state: exp argument, update (2 FMA), output FMA
    return 8.0 * n * d * arch.state_dim
