"""Validation at the boundary of every attention kernel: one line naming what is wrong.

A kernel calls these on its arrays before its typed loops run (compiled, a wrong dtype or
layout would otherwise be a Cython error, interpreted a silent wrong answer). ``n_max`` is
the kernel's ``N`` (``architecture.seq_len``).
"""

import numpy as np

_F32 = np.dtype(np.float32)


def length(fn: str, name: str, a: object, n_max: int) -> int:
    """Rows of ``a``; a one-line ValueError unless it is a 2-D array of 1 to ``n_max`` rows."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{fn}: {name} must be a float32 numpy array, got {type(a).__name__}")
    if a.ndim != 2:
        raise ValueError(f"{fn}: {name} must be a 2-D array (rows, columns), got shape {a.shape}")
    rows = a.shape[0]
    if not 1 <= rows <= n_max:
        raise ValueError(
            f"{fn}: {name} must have 1 to {n_max} rows (architecture.seq_len), got {rows}"
        )
    return int(rows)


def check_qkv(fn: str, q: object, k: object, v: object, cols: int, n_max: int) -> int:
    """Rows n of q; q, k, v must all be C-contiguous float32 ``(n, cols)``."""
    n = length(fn, "q", q, n_max)
    shape = (n, cols)
    for name, a in (("q", q), ("k", k), ("v", v)):
        if not (
            type(a) is np.ndarray
            and a.dtype is _F32
            and a.shape == shape
            and a.flags.c_contiguous
        ):
            check(fn, name, a, shape)
    return n


def check(fn: str, name: str, a: object, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` itself if it is a C-contiguous float32 array of ``shape``; else a ValueError."""
    if (
        isinstance(a, np.ndarray)
        and a.dtype == np.float32
        and a.shape == shape
        and a.flags.c_contiguous
    ):
        return a
    raise ValueError(
        f"{fn}: {name} must be a C-contiguous float32 array of shape {shape}, got {_got(a)}"
    )


def keys(fn: str, mask: object, n: int) -> np.ndarray | None:
    """Key padding mask as uint8 (1 = attend); ``None`` (every key) stays ``None``."""
    if mask is None:
        return None
    if (
        isinstance(mask, np.ndarray)
        and mask.dtype in (np.bool_, np.uint8)
        and mask.shape == (n,)
        and mask.flags.c_contiguous
    ):
        return mask.view(np.uint8)
    raise ValueError(
        f"{fn}: mask must be a C-contiguous bool or uint8 array of shape ({n},), got {_got(mask)}"
    )


def _got(a: object) -> str:
    """What a refused argument is: dtype, layout and shape of an array, else its type."""
    if not isinstance(a, np.ndarray):
        return type(a).__name__
    order = "" if a.flags.c_contiguous else " non-contiguous"
    return f"{a.dtype}{order} {a.shape}"
