"""The tolerances of every agreement check in :mod:`jxent.testing`, stated once, per input dtype.

Two results of the same computation on the same inputs agree when, element by element,
``|actual - desired| <= atol + rtol * |desired|`` (``chex.assert_trees_all_close``), and non-finite entries
(NaN, ``+inf``, ``-inf``) sit at the same positions. The tolerance is chosen by the dtype of the *inputs* of the
case and applied to all its outputs (losses are float32 for 16-bit inputs; gradients and Hessian-vector products
come back in the input dtype).

Why these numbers: every jxent loss computes 16-bit inputs in float32, so two backends differ only by the float32
rounding of ``exp``/``log``/``tanh`` (a few ulp) and the summation order of the class-axis reductions, and then by
at most one ulp of the 16-bit dtype when the gradient is rounded back to it. For the 16-bit dtypes ``rtol`` and
``atol`` are two ulp in ``[1, 2)`` (gradients are probabilities minus targets, of order 1); float32 gets 1e-5, about
a hundred ulp, for reductions over the class axis summed in a different order.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["TOLERANCES", "Tolerance", "tolerance"]


class Tolerance(NamedTuple):
    rtol: float
    atol: float


TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(rtol=1e-12, atol=1e-12),
    "float32": Tolerance(rtol=1e-5, atol=1e-5),
    "float16": Tolerance(rtol=2e-3, atol=2e-3),  # 2 ulp in [1, 2): 2 * 2**-10
    "bfloat16": Tolerance(rtol=1.6e-2, atol=1.6e-2),  # 2 ulp in [1, 2): 2 * 2**-7
}
"""Tolerance per input dtype name: the one place where cross-backend and re-run agreement is defined."""


def tolerance(dtype: Any) -> Tolerance:
    """The :data:`TOLERANCES` entry of ``dtype`` (a dtype, a dtype name or an array)."""
    name = np.dtype(getattr(dtype, "dtype", dtype)).name
    try:
        return TOLERANCES[name]
    except KeyError:
        raise ValueError(f"No agreement tolerance for dtype {name!r}; known: {sorted(TOLERANCES)}.") from None
