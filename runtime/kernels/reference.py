"""NumPy reference implementations: the executable specification of every attention kernel.

Each function computes in float64 and returns float64; the generated kernels (float32) must
match within a max relative error of 1e-4 (:func:`max_rel_err`). Conventions shared by all:

* ``q``, ``k``, ``v`` are ``(n, d)``; ``mask`` is an optional ``(n,)`` bool array of the keys
  that may be attended (False = padding); ``causal`` lets query i see keys j <= i only.
* A query that can see no key at all (every key masked) gets a **zero output row** — a
  defined result, never NaN.
* Random features, router weights and state-space parameters are arguments; the
  ``*_params`` helpers derive them deterministically from a seed, so a state plus a seed
  fixes every number.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "Array",
    "max_rel_err",
    "visible",
    "sdpa",
    "multihead",
    "flash",
    "linear",
    "local_global",
    "moe",
    "hyperbolic",
    "differential",
    "mamba",
    "route",
    "to_ball",
    "performer_features",
    "router_weights",
    "mamba_params",
    "BALL_MARGIN",
]

Array = npt.NDArray[np.floating]

#: Points mapped into the Poincaré ball keep a norm of at most (1 - BALL_MARGIN) / sqrt(c).
BALL_MARGIN = 1e-3


def max_rel_err(out: npt.ArrayLike, ref: npt.ArrayLike) -> float:
    """Normwise relative error ``max|out - ref| / max|ref|`` (absolute when ``ref`` is 0)."""
    a = np.asarray(out, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    scale = float(np.max(np.abs(b)))
    err = float(np.max(np.abs(a - b)))
    return err / scale if scale > 0 else err


def visible(n: int, mask: Array | None = None, causal: bool = False) -> npt.NDArray[np.bool_]:
    """``(n, n)`` matrix: may query i attend key j (padding and causality)."""
    vis = np.ones((n, n), dtype=bool)
    if mask is not None:
        vis &= np.asarray(mask, dtype=bool)[None, :]
    if causal:
        vis &= np.tri(n, dtype=bool)
    return vis


def sdpa(q: Array, k: Array, v: Array, mask: Array | None = None, causal: bool = False) -> Array:
    """``softmax(q k^T / sqrt(d)) v`` over the visible keys."""
    q64, k64, v64 = _f64(q, k, v)
    scores = q64 @ k64.T / np.sqrt(q64.shape[1])
    return _softmax_apply(scores, visible(q64.shape[0], mask, causal), v64)


def flash(q: Array, k: Array, v: Array, mask: Array | None = None, causal: bool = False) -> Array:
    """Same result as :func:`sdpa`; the kernel tiles keys with an online softmax."""
    return sdpa(q, k, v, mask, causal)


def multihead(
    q: Array, k: Array, v: Array, heads: int, mask: Array | None = None, causal: bool = False
) -> Array:
    """``heads`` independent :func:`sdpa` heads on column slices of width ``d // heads``."""
    d = q.shape[1]
    if d % heads:
        raise ValueError(f"width {d} is not divisible by {heads} heads")
    dh = d // heads
    parts = [
        sdpa(
            q[:, h * dh : (h + 1) * dh],
            k[:, h * dh : (h + 1) * dh],
            v[:, h * dh : (h + 1) * dh],
            mask,
            causal,
        )
        for h in range(heads)
    ]
    return np.concatenate(parts, axis=1)


def local_global(
    q: Array,
    k: Array,
    v: Array,
    window: int,
    global_tokens: int,
    mask: Array | None = None,
    causal: bool = False,
) -> Array:
    """Sliding window ``|i - j| <= window`` plus global tokens (the first ``global_tokens``
    positions attend to and are attended by everyone), then padding and causality."""
    q64, k64, v64 = _f64(q, k, v)
    n = q64.shape[0]
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    pattern = (np.abs(i - j) <= window) | (i < global_tokens) | (j < global_tokens)
    scores = q64 @ k64.T / np.sqrt(q64.shape[1])
    return _softmax_apply(scores, pattern & visible(n, mask, causal), v64)


def linear(
    q: Array,
    k: Array,
    v: Array,
    omega: Array,
    mask: Array | None = None,
    causal: bool = False,
) -> Array:
    """Performer (FAVOR+) linear attention with positive random features, O(n m d).

    With ``x' = x / d**0.25`` and ``phi(x) = exp(omega x' - |x'|^2 / 2)``, output row i is
    ``phi(q_i) . sum_j phi(k_j) v_j / phi(q_i) . sum_j phi(k_j)`` over the visible keys
    (prefix sums when causal). Any constant factor per query row or shared by all keys
    cancels, so implementations may stabilize the exponentials freely.
    """
    q64, k64, v64 = _f64(q, k, v)
    w = np.asarray(omega, dtype=np.float64)
    n, d = q64.shape
    keep = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    pq = _features(q64, w, d, keep=None)
    pk = _features(k64, w, d, keep=keep) * keep[:, None]
    if causal:
        kv = np.cumsum(pk[:, :, None] * v64[:, None, :], axis=0)  # (n, m, dv)
        ksum = np.cumsum(pk, axis=0)
        num = np.einsum("im,imd->id", pq, kv)
        den = np.einsum("im,im->i", pq, ksum)
    else:
        num = pq @ (pk.T @ v64)
        den = pq @ pk.sum(axis=0)
    out = np.zeros_like(num)
    ok = den > 0
    out[ok] = num[ok] / den[ok, None]
    return np.asarray(out, dtype=np.float64)


def moe(
    q: Array,
    k: Array,
    v: Array,
    router: Array,
    top_k: int,
    mask: Array | None = None,
    causal: bool = False,
) -> Array:
    """Mixture-of-heads attention: E = ``router.shape[1]`` experts, expert e is the head on
    columns ``[e*dh, (e+1)*dh)`` (dh = d / E). Each query picks its ``top_k`` experts by
    router logit ``q @ router`` (ties: lower index first); their gates are the softmax of the
    picked logits; the output of a head is ``gate * sdpa_head``, zero for unpicked experts.
    """
    q64, k64, v64 = _f64(q, k, v)
    r = np.asarray(router, dtype=np.float64)
    n, d = q64.shape
    experts = r.shape[1]
    dh = d // experts
    picked, gates = route(q64 @ r, top_k)
    out = np.zeros((n, d))
    for e in range(experts):
        cols = slice(e * dh, (e + 1) * dh)
        head = sdpa(q64[:, cols], k64[:, cols], v64[:, cols], mask, causal)
        weight = np.where(picked == e, gates, 0.0).sum(axis=1)
        out[:, cols] = head * weight[:, None]
    return out


def route(logits: Array, top_k: int) -> tuple[npt.NDArray[np.intp], Array]:
    """Top-k experts per row (ties: lower index first) and their softmax gates."""
    order = np.argsort(-logits, axis=1, kind="stable")[:, :top_k]
    chosen = np.take_along_axis(logits, order, axis=1)
    gates = np.exp(chosen - chosen[:, :1])
    return order, gates / gates.sum(axis=1, keepdims=True)


def hyperbolic(
    q: Array,
    k: Array,
    v: Array,
    curvature: float,
    mask: Array | None = None,
    causal: bool = False,
) -> Array:
    """Attention scored by Poincaré-ball distance: ``softmax(-dist_c(q_i, k_j)) v``.

    ``q`` and ``k`` are mapped into the ball of curvature ``-c`` by the exponential map at
    the origin, ``x -> tanh(sqrt(c)|x|) x / (sqrt(c)|x|)``, norms clipped to
    ``(1 - BALL_MARGIN) / sqrt(c)``; ``dist_c(x, y) = arccosh(1 + 2c|x - y|^2 /
    ((1 - c|x|^2)(1 - c|y|^2))) / sqrt(c)``. Values stay Euclidean.
    """
    q64, k64, v64 = _f64(q, k, v)
    c = float(curvature)
    qh, kh = to_ball(q64, c), to_ball(k64, c)
    diff = ((qh[:, None, :] - kh[None, :, :]) ** 2).sum(axis=2)
    fq = 1.0 - c * (qh * qh).sum(axis=1)
    fk = 1.0 - c * (kh * kh).sum(axis=1)
    z = 2.0 * c * diff / (fq[:, None] * fk[None, :])
    scores = -np.arccosh(1.0 + z) / np.sqrt(c)
    return _softmax_apply(scores, visible(q64.shape[0], mask, causal), v64, scale=1.0)


def to_ball(x: Array, c: float) -> Array:
    """Exponential map at the origin of the Poincaré ball of curvature ``-c``, clipped."""
    sc = np.sqrt(c)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    radius = np.minimum(np.tanh(sc * norm), 1.0 - BALL_MARGIN) / sc
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(norm > 0, radius / norm, 0.0)
    return np.asarray(x * factor, dtype=np.float64)


def differential(
    q: Array,
    k: Array,
    v: Array,
    lam: float,
    mask: Array | None = None,
    causal: bool = False,
) -> Array:
    """Differential attention: ``(softmax(q1 k1^T / sqrt(h)) - lam softmax(q2 k2^T /
    sqrt(h))) v`` where q1|q2 and k1|k2 are the two column halves (h = d / 2)."""
    q64, k64, v64 = _f64(q, k, v)
    h = q64.shape[1] // 2
    vis = visible(q64.shape[0], mask, causal)
    eye = np.eye(q64.shape[0])
    a1 = _softmax_apply(q64[:, :h] @ k64[:, :h].T / np.sqrt(h), vis, eye)
    a2 = _softmax_apply(q64[:, h:] @ k64[:, h:].T / np.sqrt(h), vis, eye)
    return np.asarray((a1 - lam * a2) @ v64, dtype=np.float64)


def mamba(x: Array, delta: Array, a: Array, b: Array, c: Array, skip: Array) -> Array:
    """Selective state-space scan (Mamba's S6), O(n d N), causal by construction.

    ``x``, ``delta``: ``(n, d)`` (delta >= 0, e.g. a softplus); ``a``: ``(d, N)`` (<= 0);
    ``b``, ``c``: ``(n, N)``; ``skip``: ``(d,)``. With ``h_0 = 0``:
    ``h_t = exp(delta_t a) * h_{t-1} + (delta_t x_t) b_t`` (per channel, outer in N) and
    ``y_t = h_t c_t + skip * x_t``.
    """
    x64, d64, a64, b64, c64, s64 = _f64(x, delta, a, b, c, skip)
    n, d = x64.shape
    h = np.zeros_like(a64)
    y = np.empty((n, d))
    for t in range(n):
        h = np.exp(d64[t][:, None] * a64) * h + (d64[t] * x64[t])[:, None] * b64[t][None, :]
        y[t] = h @ c64[t] + s64 * x64[t]
    return y


def performer_features(seed: int, m: int, d: int) -> npt.NDArray[np.float32]:
    """Random features ``omega`` (m, d): standard normal, from ``seed``."""
    return np.random.default_rng(seed).standard_normal((m, d)).astype(np.float32)


def router_weights(seed: int, d: int, experts: int) -> npt.NDArray[np.float32]:
    """Router matrix (d, experts), scaled like a fresh linear layer, from ``seed``."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((d, experts)) / np.sqrt(d)
    return np.asarray(weights, dtype=np.float32)


def mamba_params(seed: int, n: int, d: int, state: int) -> dict[str, npt.NDArray[np.float32]]:
    """Inputs of :func:`mamba` except ``x`` (delta, a, b, c, skip), from ``seed``.

    ``a = -(1..N)`` per channel (S4D-real initialisation), ``delta`` a softplus of noise.
    """
    rng = np.random.default_rng(seed)
    a = -np.tile(np.arange(1, state + 1, dtype=np.float64), (d, 1))
    delta = np.log1p(np.exp(rng.standard_normal((n, d)) - 2.0))
    return {
        "delta": delta.astype(np.float32),
        "a": a.astype(np.float32),
        "b": rng.standard_normal((n, state)).astype(np.float32),
        "c": rng.standard_normal((n, state)).astype(np.float32),
        "skip": rng.standard_normal(d).astype(np.float32),
    }


def _f64(*arrays: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], ...]:
    return tuple(np.asarray(a, dtype=np.float64) for a in arrays)


def _softmax_apply(
    scores: Array, vis: npt.NDArray[np.bool_], v: Array, scale: float = 1.0
) -> npt.NDArray[np.float64]:
    """Row softmax of ``scores * scale`` over ``vis``, times ``v``; empty rows give 0."""
    s = np.where(vis, scores * scale, -np.inf)
    peak = s.max(axis=1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    p = np.where(vis, np.exp(s - peak), 0.0)
    total = p.sum(axis=1, keepdims=True)
    p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    return np.asarray(p @ v, dtype=np.float64)


def _features(x: Array, omega: Array, d: int, *, keep: npt.NDArray[np.bool_] | None) -> Array:
    """phi(x) up to a constant: per row for queries (``keep`` None, the constant cancels in
    the row's ratio), one shared by the attended keys (it cancels in every ratio)."""
    xs = x / d**0.25
    proj = xs @ omega.T - 0.5 * (xs * xs).sum(axis=1, keepdims=True)
    if keep is None:
        shift = proj.max(axis=1, keepdims=True)
    else:
        shift = proj[keep].max() if keep.any() else 0.0
    return np.asarray(np.exp(proj - shift), dtype=np.float64)
