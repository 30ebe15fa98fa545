"""Entropy, Kullback-Leibler and Jensen-Shannon divergences between discrete distributions (in nats).

:math:`0 \\log 0 = 0` throughout, through :func:`jax.scipy.special.xlogy`, and ``-inf`` log-predictions where the
target is 0 contribute 0 with a zero gradient, so padded or masked vocabularies give no NaN.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from jxent import _axes, _checks
from jxent.reduction import reduce_loss

__all__ = ["entropy", "js_divergence", "kl_divergence", "kl_divergence_with_log_targets"]


def _sum_classes(
    elementwise: jax.Array, layout: _axes.ClassLayout, mask: jax.Array | None, reduction: str
) -> jax.Array:
    """Sums over the class axes (``where=False`` entries left out) and applies the reduction over examples."""
    if mask is not None:
        elementwise = jnp.where(mask, elementwise, 0.0)
    per_example = jnp.sum(layout.to_last(elementwise), axis=-1)
    weights = None if mask is None else jnp.any(layout.to_last(mask), axis=-1)
    return reduce_loss(per_example, weights=weights, reduction=reduction)


def _prepare(a: Any, b: Any, name_a: str, name_b: str, axis: Any, where: Any):
    a = _checks.as_float_array(a, name_a)
    b = _checks.as_float_array(b, name_b)
    _checks.check_broadcastable(a.shape, b, name_b)
    layout = _axes.class_layout(axis, a.ndim, name_a)
    mask = _axes.expand_where(where, layout, a.shape)
    dtype = _checks.compute_dtype(jnp.result_type(a.dtype, b.dtype))
    a, b = jnp.broadcast_arrays(a.astype(dtype), b.astype(dtype))
    return a, b, layout, mask


def _cross_term(t: jax.Array, log_q: jax.Array) -> jax.Array:
    """``t * log_q`` with ``0 * (-inf) = 0`` and no NaN in either gradient."""
    safe_log_q = jnp.where((t == 0) & (log_q == -jnp.inf), 0.0, log_q)
    return t * safe_log_q


def kl_divergence(
    log_predictions: Any,
    targets: Any,
    axis: _axes.Axis | None = -1,
    where: Any = None,
    *,
    reduction: str = "none",
) -> jax.Array:
    """Kullback-Leibler divergence :math:`\\mathrm{KL}(t \\,\\|\\, q) = \\sum_c t_c (\\log t_c - \\log q_c)`.

    Drop-in for :func:`optax.losses.kl_divergence` (argument order: predictions in log space first, then target
    probabilities), and for ``torch.nn.functional.kl_div(log_predictions, targets, reduction="none").sum(-1)``.
    Gradient w.r.t. ``log_predictions``: :math:`-t`.

    Args:
      log_predictions: Predicted log-probabilities :math:`\\log q` ``[..., num_classes]``; ``-inf`` allowed.
      targets: Target probabilities :math:`t`, broadcastable; zeros allowed (:math:`0 \\log 0 = 0`).
      axis: Class axis or axes.
      where: Boolean mask; masked classes are left out of the sum.
      reduction: ``"none"`` (per example), ``"sum"`` or ``"mean"`` (over examples).

    Returns:
      Divergences ``[...]`` (``+inf`` where :math:`t_c > 0` and :math:`q_c = 0`).
    """
    _checks.check_reduction(reduction)
    log_q, t, layout, mask = _prepare(log_predictions, targets, "log_predictions", "targets", axis, where)
    return _sum_classes(xlogy(t, t) - _cross_term(t, log_q), layout, mask, reduction)


def kl_divergence_with_log_targets(
    log_predictions: Any,
    log_targets: Any,
    axis: _axes.Axis | None = -1,
    where: Any = None,
    *,
    reduction: str = "none",
) -> jax.Array:
    """:math:`\\mathrm{KL}(t \\,\\|\\, q) = \\sum_c e^{\\log t_c} (\\log t_c - \\log q_c)`, targets in log space.

    Drop-in for :func:`optax.losses.kl_divergence_with_log_targets` (``torch``'s ``kl_div(..., log_target=True)``).
    ``log_targets = -inf`` (zero probability) contributes 0.
    """
    _checks.check_reduction(reduction)
    log_q, log_t, layout, mask = _prepare(log_predictions, log_targets, "log_predictions", "log_targets", axis, where)
    absent = log_t == -jnp.inf
    safe_log_t = jnp.where(absent, 0.0, log_t)
    t = jnp.where(absent, 0.0, jnp.exp(safe_log_t))
    elementwise = t * safe_log_t - _cross_term(t, log_q)
    return _sum_classes(elementwise, layout, mask, reduction)


def entropy(
    probabilities: Any,
    axis: _axes.Axis | None = -1,
    where: Any = None,
    *,
    reduction: str = "none",
) -> jax.Array:
    """Shannon entropy :math:`H(p) = -\\sum_c p_c \\log p_c` (nats), with :math:`0 \\log 0 = 0`.

    Satisfies ``softmax_cross_entropy``'s identity :math:`\\mathrm{CE}(t, q) = H(t) + \\mathrm{KL}(t \\| q)`.
    Gradient: :math:`-(\\log p_c + 1)`.
    """
    _checks.check_reduction(reduction)
    p = _checks.as_float_array(probabilities, "probabilities")
    layout = _axes.class_layout(axis, p.ndim, "probabilities")
    mask = _axes.expand_where(where, layout, p.shape)
    p = p.astype(_checks.compute_dtype(p.dtype))
    return _sum_classes(-xlogy(p, p), layout, mask, reduction)


def js_divergence(
    p: Any,
    q: Any,
    axis: _axes.Axis | None = -1,
    where: Any = None,
    *,
    reduction: str = "none",
) -> jax.Array:
    """Jensen-Shannon divergence :math:`\\tfrac12 \\mathrm{KL}(p\\|m) + \\tfrac12 \\mathrm{KL}(q\\|m)`,
    :math:`m = (p + q)/2`, of two probability vectors (nats; bounded by :math:`\\log 2`).

    References:
      Lin, `Divergence measures based on the Shannon entropy <https://doi.org/10.1109/18.61115>`_, 1991.
    """
    _checks.check_reduction(reduction)
    p, q, layout, mask = _prepare(p, q, "p", "q", axis, where)
    m = 0.5 * (p + q)
    elementwise = 0.5 * (xlogy(p, p) - xlogy(p, m) + xlogy(q, q) - xlogy(q, m))
    return _sum_classes(elementwise, layout, mask, reduction)
