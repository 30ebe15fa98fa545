"""Every generic agreement tolerance of jxent and its tests, stated once.

Three tables, each with the reason for its numbers:

* :data:`TOLERANCES` / :func:`tolerance`: two backends (or two runs) computing the same case, per *input* dtype
  (the cross-backend check of :mod:`jxent.testing`; below).
* :data:`REFERENCE_TOLERANCES` / :func:`reference_tolerance`: a jxent result against an independent float64
  reference evaluated on the same (rounded) inputs, per *result* dtype (the test suite's ``tests/reference.py``).
* :data:`OPTAX_TOLERANCE` / :func:`optax_tolerance`: a jxent loss against the optax loss it replaces, on float32
  inputs.

A check that needs a different number for a reason of its own states it, with the reason, where it is made.

Cross-backend agreement (:data:`TOLERANCES`).

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

__all__ = [
    "OPTAX_TOLERANCE",
    "REFERENCE_TOLERANCES",
    "TOLERANCES",
    "Tolerance",
    "optax_tolerance",
    "reference_tolerance",
    "tolerance",
]


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


def _dtype_name(dtype: Any) -> str:
    return np.dtype(getattr(dtype, "dtype", dtype)).name


# ----------------------------------------------------------------------------------------------------------------
# Against a float64 reference
# ----------------------------------------------------------------------------------------------------------------

REFERENCE_TOLERANCES: dict[str, Tolerance] = {
    # float64 inputs are computed in float64. jxent and the reference evaluate different but equally stable formulas
    # (lse - z_y against scipy's log_softmax, log1p against log, ...): within about ten ulp on the test inputs, and
    # rtol 1e-12 (about 4500 ulp) leaves room for longer chains; atol 1e-14 (about 45 ulp of 1) for entries that
    # cancel to about 0 (gradients p - q of order 1).
    "float64": Tolerance(rtol=1e-12, atol=1e-14),
    # float32 results, also those of 16-bit inputs (computed and returned in float32; the reference then sees the
    # 16-bit-rounded inputs, so only the float32 arithmetic differs). A loss is a handful of exp/log/tanh/pow, each
    # within a few ulp, plus a sum over the class axis whose rounding grows with its length: measured below 2e-6 on
    # the test inputs, and rtol 1e-5 (about 84 ulp) leaves room for other CPUs' vectorised exp/log. atol 1e-6
    # (8 ulp of 1) covers values and gradient entries that cancel to about 0 (p - q, lse - z_y, KL of near-equal
    # distributions), where the error is a few ulp of the order-1 terms rather than of the result.
    "float32": Tolerance(rtol=1e-5, atol=1e-6),
    # 16-bit results (softmax, log_softmax and logsumexp return the input dtype, and so do gradients): the float32
    # result rounded once to the dtype (half an ulp), after a cancellation of order-1 terms for log_softmax = z - lse
    # and p - q. About 2 ulp in [1, 2): 2e-3 ~ 2 * 2**-10 (float16), 2e-2 ~ 2.5 * 2**-7 (bfloat16), in rtol and atol.
    "float16": Tolerance(rtol=2e-3, atol=2e-3),
    "bfloat16": Tolerance(rtol=2e-2, atol=2e-2),
}
"""Tolerance per *result* dtype name for a jxent result against an independent float64 reference."""


def reference_tolerance(dtype: Any) -> dict[str, float]:
    """``{"rtol": ..., "atol": ...}`` (for ``np.testing.assert_allclose``) of :data:`REFERENCE_TOLERANCES` for a
    result of ``dtype`` (a dtype, a dtype name or an array)."""
    name = _dtype_name(dtype)
    try:
        return REFERENCE_TOLERANCES[name]._asdict()
    except KeyError:
        known = sorted(REFERENCE_TOLERANCES)
        raise ValueError(f"No reference tolerance for dtype {name!r}; known: {known}.") from None


# ----------------------------------------------------------------------------------------------------------------
# Against optax
# ----------------------------------------------------------------------------------------------------------------

OPTAX_TOLERANCE = Tolerance(rtol=1e-6, atol=1e-6)
"""A jxent loss against the optax loss it replaces, float32 inputs and results (the optax losses compute float32).

Both evaluate the same plain loss formula on the same inputs in float32 and differ only in how they order and fuse
a few operations (``log_softmax`` then a product against ``logsumexp`` minus the label's logit, and the like): a
few ulp, so rtol 1e-6 (8 ulp). atol 1e-6 for losses near 0, whose error is a few ulp of the order-1 terms that
cancel. Where the two deliberately differ (``±inf`` logits, masked labels, NaN in optax) the tests compare other
things.
"""


def optax_tolerance() -> dict[str, float]:
    """``{"rtol": ..., "atol": ...}`` of :data:`OPTAX_TOLERANCE`, for ``np.testing.assert_allclose``."""
    return OPTAX_TOLERANCE._asdict()
