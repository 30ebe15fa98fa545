"""Log-sum-exp, log-softmax and softmax with closed-form derivatives and well-defined limits.

The three functions share one max-shifted evaluation along the class axis and differ only in what they return.
Each carries a ``jax.custom_jvp`` rule written from its closed form,

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

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jxent import _axes, _checks

__all__ = ["log_softmax", "logsumexp", "soft_cap", "softmax"]


class Normalizer(NamedTuple):
    """The row statistics of a max-shifted softmax along the last axis (class axis kept with size 1)."""

    m: jax.Array  # the row maximum (no gradient)
    finite: jax.Array  # the maximum is finite
    pos_inf: jax.Array  # the row has a +inf entry
    log_total: jax.Array  # log sum exp(shift(x)); 0 where no class is present
    present: jax.Array  # the row has a class of nonzero probability (NaN rows count, so that NaN propagates)

    def shift(self, x: jax.Array) -> jax.Array:
        """``x - max`` for entries of the row (or entries gathered from it); the limit form at ``+inf``.

        Finite max: the usual shift. ``+inf`` max: only the ``+inf`` entries remain (shifted to 0). ``-inf`` max
        (no class present) or NaN: ``x`` unchanged, so the row stays ``-inf`` or NaN.
        """
        limit = jnp.where(x == jnp.inf, 0.0, -jnp.inf).astype(x.dtype)
        return jnp.where(self.finite, x - jnp.where(self.finite, self.m, 0.0), jnp.where(self.pos_inf, limit, x))

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log-probabilities of entries ``x`` of the row: ``shift(x) - log_total`` (``-inf`` if nothing present)."""
        return jnp.where(self.present, self.shift(x) - self.log_total, -jnp.inf)

    @property
    def lse(self) -> jax.Array:
        """Log-sum-exp of the row, ``[..., 1]``."""
        offset = jnp.where(self.finite, self.m, 0.0)
        return jnp.where(self.pos_inf, jnp.inf, jnp.where(self.present, offset + self.log_total, -jnp.inf))


def normalizer(x: jax.Array) -> tuple[Normalizer, jax.Array, jax.Array]:
    """Row statistics of ``x`` along its last axis, ``exp(shift(x))`` and its row sum (1 where it is 0)."""
    m = lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))
    stats = Normalizer(m, jnp.isfinite(m), m == jnp.inf, jnp.zeros_like(m), jnp.ones(m.shape, bool))
    e = jnp.exp(stats.shift(x))
    total = jnp.sum(e, axis=-1, keepdims=True)
    present = total != 0
    safe_total = jnp.where(present, total, 1.0)
    return stats._replace(log_total=jnp.log(safe_total), present=present), e, safe_total


def shifted_statistics(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Max-shifted quantities of ``x`` along its last axis.

    Returns ``(lse, p, log_p, present)`` where ``lse`` has the class axis kept (size 1), ``p``/``log_p`` are the
    (log-)probabilities and ``present`` marks rows with at least one class of nonzero probability.
    """
    stats, e, total = normalizer(x)
    return stats.lse, e / total, stats.log_prob(x), stats.present


@jax.custom_jvp
def _logsumexp_last(x: jax.Array) -> jax.Array:
    return shifted_statistics(x)[0][..., 0]


@_logsumexp_last.defjvp
def _logsumexp_last_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    p = _softmax_last(x)
    return _logsumexp_last(x), jnp.sum(jnp.where(p == 0, 0.0, p * dx), axis=-1)


@jax.custom_jvp
def _softmax_last(x: jax.Array) -> jax.Array:
    return shifted_statistics(x)[1]


@_softmax_last.defjvp
def _softmax_last_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    p = _softmax_last(x)
    pdx = jnp.where(p == 0, 0.0, p * dx)
    return p, pdx - p * jnp.sum(pdx, axis=-1, keepdims=True)


@jax.custom_jvp
def _log_softmax_last(x: jax.Array) -> jax.Array:
    return shifted_statistics(x)[2]


@_log_softmax_last.defjvp
def _log_softmax_last_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    p = _softmax_last(x)
    log_p = _log_softmax_last(x)
    mean_dx = jnp.sum(jnp.where(p == 0, 0.0, p * dx), axis=-1, keepdims=True)
    return log_p, jnp.where(log_p == -jnp.inf, 0.0, dx - mean_dx)


# Public entry points: exported for the other modules, which work on a trailing class axis.
logsumexp_last = _logsumexp_last
softmax_last = _softmax_last
log_softmax_last = _log_softmax_last


def _apply_last(
    kernel, x: Any, axis: _axes.Axis | None, where: Any, name: str
) -> tuple[jax.Array, _axes.ClassLayout, Any]:
    x = _checks.as_float_array(x, name)
    layout = _axes.class_layout(axis, x.ndim, name)
    mask = _axes.expand_where(where, layout, x.shape)
    xc = x.astype(_checks.compute_dtype(x.dtype))
    if mask is not None:
        xc = jnp.where(mask, xc, -jnp.inf)
    return kernel(layout.to_last(xc)), layout, x


def logsumexp(
    x: Any,
    axis: _axes.Axis | None = -1,
    *,
    where: Any = None,
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
    """
    out, layout, x = _apply_last(_logsumexp_last, x, axis, where, "x")
    out = out.astype(x.dtype)
    if keepdims:
        out = jnp.expand_dims(out, layout.class_axes)
    return out


def softmax(x: Any, axis: _axes.Axis | None = -1, *, where: Any = None) -> jax.Array:
    """Softmax along ``axis``: :math:`p_i = \\exp(x_i) / \\sum_j \\exp(x_j)`.

    Args:
      x: Array ``[..., num_classes]``.
      axis: Class axis or axes (default ``-1``).
      where: Optional boolean mask; masked entries get probability 0.

    Returns:
      Probabilities with ``x``'s shape and dtype; all zeros on rows with no present entry, uniform over the
      ``+inf`` entries of a row that has some. Jacobian: ``diag(p) - p p^T``.
    """
    out, layout, x = _apply_last(_softmax_last, x, axis, where, "x")
    return layout.from_last(out, x.shape).astype(x.dtype)


def log_softmax(x: Any, axis: _axes.Axis | None = -1, *, where: Any = None) -> jax.Array:
    """Log-softmax along ``axis``: :math:`x_i - \\log \\sum_j \\exp(x_j)`.

    Args:
      x: Array ``[..., num_classes]``.
      axis: Class axis or axes (default ``-1``).
      where: Optional boolean mask; masked entries give ``-inf``.

    Returns:
      Log-probabilities with ``x``'s shape and dtype. Jacobian: ``I - 1 p^T``; zero rows at ``-inf`` outputs.
    """
    out, layout, x = _apply_last(_log_softmax_last, x, axis, where, "x")
    return layout.from_last(out, x.shape).astype(x.dtype)


def soft_cap(logits: Any, cap: Any) -> jax.Array:
    """Logit soft-capping: :math:`c \\tanh(z / c)`, as in Gemma 2.

    ``-inf`` entries (masked classes) stay ``-inf``; ``+inf`` maps to ``cap``. Derivative:
    :math:`1 - \\tanh^2(z / c)`, zero at ``±inf``.

    Args:
      logits: Floating-point array.
      cap: Positive scalar.

    References:
      Gemma Team, `Gemma 2: Improving Open Language Models at a Practical Size
      <https://arxiv.org/abs/2408.00118>`_, 2024.
    """
    logits = _checks.as_float_array(logits, "logits")
    _checks.check_scalar_range(cap, "soft_cap", low=0.0, low_open=True)
    z = logits.astype(_checks.compute_dtype(logits.dtype))  # 16-bit inputs are computed in float32
    capped = cap * jnp.tanh(z / cap)
    return jnp.where(z == -jnp.inf, -jnp.inf, capped).astype(logits.dtype)
