"""One comparison for "both tiers agree": nested results, floats within a tolerance.

The differential self-test (:func:`runtime.live.differential_check`) allows float32 rounding
(:data:`SELFTEST_REL_TOL`); the model's answers (:func:`runtime.babi.evaluate.compare_tiers`)
must match exactly (tolerance 0).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["SELFTEST_ABS_TOL", "SELFTEST_REL_TOL", "agree"]

#: Tolerances of the differential self-test: float32 kernels against float64 interpretation.
SELFTEST_REL_TOL = 1e-4
SELFTEST_ABS_TOL = 1e-6


def agree(a: Any, b: Any, *, rel_tol: float, abs_tol: float) -> bool:
    """True when ``a`` and ``b`` (numbers, strings, arrays, nested lists or tuples) agree:
    numbers within the tolerances, anything else equal."""
    if isinstance(a, float | int) and isinstance(b, float | int):
        return math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=abs_tol)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return False
        if all(isinstance(x, float | int) for x in (*a, *b)):
            # A float32 vector against a float64 one: error relative to the vector's scale,
            # since single elements near zero carry only absolute rounding error.
            scale = max((abs(float(x)) for x in a), default=0.0)
            worst = max((abs(float(x) - float(y)) for x, y in zip(a, b, strict=True)), default=0.0)
            return worst <= rel_tol * scale + abs_tol
        return all(agree(x, y, rel_tol=rel_tol, abs_tol=abs_tol) for x, y in zip(a, b, strict=True))
    if hasattr(a, "tolist") and hasattr(b, "tolist"):
        return agree(a.tolist(), b.tolist(), rel_tol=rel_tol, abs_tol=abs_tol)
    return bool(a == b)
