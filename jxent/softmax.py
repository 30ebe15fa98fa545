"""Log-sum-exp, log-softmax and softmax with closed-form derivatives and well-defined limits.

The three functions share one max-shifted evaluation along the class axis (:func:`jxent._rowmath.row_stats`) and
differ only in what they return. Each carries the ``jax.custom_jvp`` rule of :mod:`jxent._rowmath`, written from its
closed form,

.. math::
  \\partial\\, \\mathrm{lse}(x) = p \\cdot dx, \\qquad
  \\partial\\, p = p \\odot (dx - p \\cdot dx), \\qquad
  \\partial \\log p = dx - p \\cdot dx,

with :math:`p = \\mathrm{softmax}(x)`, so ``grad``, ``jvp``, ``vmap`` and ``jax.hessian`` compose and never pass
through ``exp(x - max)`` of a non-finite value. Conventions that differ from :mod:`jax.nn`:

* ``-inf`` entries (and entries with ``where=False``) are absent classes: probability 0, log-probability
  ``-inf``, tangent 0.
* A row with no present class gives ``logsumexp = -inf``, ``softmax = 0`` and ``log_softmax = -inf`` with zero
  derivatives (``jax.nn`` gives NaN).
* A row with ``+inf`` entries gives the limit: the probability is uniform over the ``+inf`` entries,
  ``logsumexp = +inf`` (``jax.nn`` gives NaN).
* NaN propagates to the whole row.

16-bit inputs are computed in float32 and returned in their own dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jxent import _axes, _checks, _rowmath

__all__ = ["log_softmax", "logsumexp", "soft_cap", "softmax"]


def _stats(x: jax.Array) -> _rowmath.RowStats:
    return lax.stop_gradient(_rowmath.row_stats(x, select_free=False))


def logsumexp_last(x: jax.Array) -> jax.Array:
    """Log-sum-exp along the last axis (removed), with the closed-form derivative ``softmax(x)``."""
    return _rowmath.logsumexp_of(x, _stats(x))[..., 0]


def softmax_last(x: jax.Array) -> jax.Array:
    """Softmax along the last axis, with the closed-form Jacobian ``diag(p) - p p^T``."""
    return _rowmath.probabilities(x, _stats(x))


def log_softmax_last(x: jax.Array) -> jax.Array:
    """Log-softmax along the last axis, with the closed-form Jacobian ``I - 1 p^T`` (0 at ``-inf`` outputs)."""
    return _rowmath.log_probabilities(x, _stats(x))


def _apply_last(
    kernel, x: Any, axis: _axes.Axis | None, where: Any, name: str
) -> tuple[jax.Array, _axes.ClassLayout, jax.Array]:
    x = _checks.as_float_array(x, name)
    layout = _axes.class_layout(axis, x.ndim, name)
    mask = _axes.expand_where(where, layout, x.shape)
    xc = x.astype(_checks.compute_dtype(x.dtype))
    if mask is not None:
        xc = jnp.where(mask, xc, -jnp.inf)
    return kernel(layout.to_last(xc)), layout, x


def logsumexp(
    x: ArrayLike,
    axis: _axes.Axis | None = -1,
    *,
    where: ArrayLike | None = None,
    keepdims: bool = False,
) -> jax.Array:
    """Log-sum-exp along ``axis``: :math:`\\log \\sum_j \\exp(x_j)`, max-shifted.

    Args:
      x: Array ``[..., num_classes]``.
      axis: Axis or axes to reduce (default ``-1``; ``None`` reduces all axes).
      where: Optional boolean mask of ``x``'s shape (or its batch shape); masked entries are left out.
      keepdims: Keep the reduced axes with size 1.

    Returns:
      The log-sum-exp, in ``x``'s dtype. ``-inf`` for a row with no present entry, ``+inf`` if any entry is
      ``+inf``. Derivative: ``softmax(x)``, zero at absent entries.

    References:
      Blanchard, Higham and Higham, `Accurately computing the log-sum-exp and softmax functions
      <https://doi.org/10.1093/imanum/draa038>`_, 2021.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> round(float(jxent.logsumexp(jnp.array([1000.0, 1000.0]))), 4)
      1000.6932
    """
    out, layout, x = _apply_last(logsumexp_last, x, axis, where, "x")
    out = out.astype(x.dtype)
    if keepdims:
        out = jnp.expand_dims(out, layout.class_axes)
    return out


def softmax(x: ArrayLike, axis: _axes.Axis | None = -1, *, where: ArrayLike | None = None) -> jax.Array:
    """Softmax along ``axis``: :math:`p_i = \\exp(x_i) / \\sum_j \\exp(x_j)`.

    Args:
      x: Array ``[..., num_classes]``.
      axis: Class axis or axes (default ``-1``).
      where: Optional boolean mask; masked entries get probability 0.

    Returns:
      Probabilities with ``x``'s shape and dtype; all zeros on rows with no present entry, uniform over the
      ``+inf`` entries of a row that has some. Jacobian: ``diag(p) - p p^T``.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> print(np.asarray(jxent.softmax(jnp.array([0.0, 1.0, -jnp.inf]))).round(4))
      [0.2689 0.7311 0.    ]
    """
    out, layout, x = _apply_last(softmax_last, x, axis, where, "x")
    return layout.from_last(out, x.shape).astype(x.dtype)


def log_softmax(x: ArrayLike, axis: _axes.Axis | None = -1, *, where: ArrayLike | None = None) -> jax.Array:
    """Log-softmax along ``axis``: :math:`x_i - \\log \\sum_j \\exp(x_j)`.

    Args:
      x: Array ``[..., num_classes]``.
      axis: Class axis or axes (default ``-1``).
      where: Optional boolean mask; masked entries give ``-inf``.

    Returns:
      Log-probabilities with ``x``'s shape and dtype. Jacobian: ``I - 1 p^T``; zero rows at ``-inf`` outputs.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> print(np.asarray(jxent.log_softmax(jnp.array([0.0, 1.0, -jnp.inf]))).round(4))
      [-1.3133 -0.3133    -inf]
    """
    out, layout, x = _apply_last(log_softmax_last, x, axis, where, "x")
    return layout.from_last(out, x.shape).astype(x.dtype)


def soft_cap(logits: ArrayLike, cap: ArrayLike) -> jax.Array:
    """Logit soft-capping: :math:`c \\tanh(z / c)`, as in Gemma 2.

    ``-inf`` entries (masked classes) stay ``-inf``; ``+inf`` maps to ``cap``. Derivative:
    :math:`1 - \\tanh^2(z / c)`, zero at ``±inf``.

    Args:
      logits: Floating-point array.
      cap: Positive scalar.

    References:
      Gemma Team, `Gemma 2: Improving Open Language Models at a Practical Size
      <https://arxiv.org/abs/2408.00118>`_, 2024.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> print(np.asarray(jxent.soft_cap(jnp.array([0.5, 30.0, -jnp.inf]), 10.0)).round(4))
      [0.4996 9.9505   -inf]
    """
    logits = _checks.as_float_array(logits, "logits")
    _checks.check_scalar_range(cap, "soft_cap", low=0.0, low_open=True)
    if _checks.concrete_value(cap) == float("inf"):
        return logits  # the limit: no capping
    z = logits.astype(_checks.compute_dtype(logits.dtype))  # 16-bit inputs are computed in float32
    return _rowmath.capped(z, cap, may_be_inf=_checks.concrete_value(cap) is None).astype(logits.dtype)
