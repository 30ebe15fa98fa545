"""Focal losses: the sigmoid (binary) form and the softmax (multi-class) form.

Both compute the modulating factor :math:`(1 - p_t)^\\gamma` as :math:`\\exp(\\gamma \\log(1 - p_t))` with
:math:`\\log(1 - p_t)` evaluated without cancellation, so values, gradients and Hessians stay finite for
:math:`|z| = 100` and any :math:`\\gamma \\ge 0` (including :math:`0 < \\gamma < 1`, where the naive power has an
infinite derivative at :math:`p_t = 1`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jxent import _checks
from jxent.binary import apply_mask_and_reduce, sigmoid_bce_elementwise
from jxent.cross_entropy import (
    _class_weight,
    check_options,
    is_zero,
    make_targets,
    prepare_rows,
)
from jxent.reduction import reduce_loss
from jxent.softmax import log_softmax_last, logsumexp_last, softmax_last

__all__ = ["log1m_softmax", "sigmoid_focal_loss", "softmax_focal_loss"]

_LOG_FLOOR = -1e4  # exp(gamma * -1e4) is 0 for any gamma >= 0.01 and 1 for gamma = 0


def _floor(log_value: jax.Array) -> jax.Array:
    """Raises log-values below ``_LOG_FLOOR`` (``-inf`` included) to it, with a zero (never NaN) tangent there."""
    return jnp.where(log_value > _LOG_FLOOR, log_value, _LOG_FLOOR)


def _modulating_factor(log_one_minus_pt: jax.Array, gamma: Any) -> jax.Array:
    """``(1 - p_t) ** gamma`` from ``log(1 - p_t)``; ``0 ** 0 = 1`` and no NaN at ``p_t = 1``."""
    safe = _floor(log_one_minus_pt)
    g = lax.stop_gradient(jnp.asarray(gamma, safe.dtype))
    return jnp.exp(g * safe)


def _check_gamma_alpha(gamma: Any, alpha: Any) -> None:
    _checks.check_scalar_range(gamma, "gamma", low=0.0)
    if alpha is not None and jnp.ndim(alpha) == 0:
        _checks.check_scalar_range(alpha, "alpha", low=0.0, high=1.0)


def _log_one_minus_pt(x: jax.Array, y: jax.Array) -> jax.Array:
    """``log(1 - p_t) = log(y sigmoid(-x) + (1 - y) sigmoid(x))``, each term in log space and floored."""
    log_y = jnp.where(y > 0, jnp.log(jnp.where(y > 0, y, 1.0)), -jnp.inf)
    log_1my = jnp.where(y < 1, jnp.log1p(-jnp.where(y < 1, y, 0.0)), -jnp.inf)
    return jnp.logaddexp(_floor(log_y + jax.nn.log_sigmoid(-x)), _floor(log_1my + jax.nn.log_sigmoid(x)))


def _focal_value(x: jax.Array, y: jax.Array, gamma: jax.Array) -> jax.Array:
    return sigmoid_bce_elementwise(x, y, jnp.ones((), x.dtype)) * _modulating_factor(_log_one_minus_pt(x, y), gamma)


@jax.custom_jvp
def _focal_elementwise(x: jax.Array, y: jax.Array, gamma: jax.Array) -> jax.Array:
    """``(1 - p_t)**gamma * BCE(x, y)`` elementwise (no alpha)."""
    return _focal_value(x, y, gamma)


def _focal_elementwise_jvp(primals, tangents):
    x, y, gamma = primals
    dx, dy, dgamma = tangents
    out = _focal_elementwise(x, y, gamma)
    tangent = jnp.zeros_like(out)
    if not isinstance(dx, SymbolicZero):
        # d/dx = (1 - p_t)^g [(p - y) + g (1 - 2y) p (1 - p) / (1 - p_t) * BCE]; the second term -> 0 as |x| -> inf,
        # where the autodiff product would be 0 * inf.
        bce = sigmoid_bce_elementwise(x, y, jnp.ones((), x.dtype))
        log_one_minus_pt = _log_one_minus_pt(x, y)
        log_pq = jax.nn.log_sigmoid(x) + jax.nn.log_sigmoid(-x)
        ratio = jnp.exp(jnp.where(log_pq == -jnp.inf, -jnp.inf, log_pq - log_one_minus_pt))
        focus = jnp.where(ratio == 0, 0.0, gamma * (1.0 - 2.0 * y) * ratio * bce)
        grad_x = _modulating_factor(log_one_minus_pt, gamma) * (jax.nn.sigmoid(x) - y + focus)
        tangent = tangent + grad_x * dx
    if not (isinstance(dy, SymbolicZero) and isinstance(dgamma, SymbolicZero)):
        zeros = jnp.zeros_like(x)
        dy = jnp.zeros_like(y) if isinstance(dy, SymbolicZero) else dy
        dgamma = jnp.zeros_like(gamma) if isinstance(dgamma, SymbolicZero) else dgamma
        tangent = tangent + jax.jvp(_focal_value, (x, y, gamma), (zeros, dy, dgamma))[1]
    return out, tangent


_focal_elementwise.defjvp(_focal_elementwise_jvp, symbolic_zeros=True)


def sigmoid_focal_loss(
    logits: Any,
    labels: Any,
    *,
    alpha: Any = None,
    gamma: Any = 2.0,
    weight: Any = None,
    where: Any = None,
    reduction: str = "none",
) -> jax.Array:
    """Sigmoid focal loss: :math:`\\alpha_t (1 - p_t)^\\gamma \\,\\mathrm{BCE}(x, y)`.

    Drop-in for :func:`optax.losses.sigmoid_focal_loss`, with torchvision's semantics for ``alpha``:
    :math:`p_t = y p + (1-y)(1-p)`, :math:`\\alpha_t = \\alpha y + (1-\\alpha)(1-y)`, :math:`p = \\sigma(x)`.
    For hard labels, with :math:`s = 2y - 1`, the derivative is

    .. math::
      \\frac{\\partial \\ell}{\\partial x} = \\alpha_t\\, s\\, (1-p_t)^{\\gamma}
      \\big(\\gamma\\, p_t \\log p_t - (1 - p_t)\\big).

    Args:
      logits: Logits, any shape.
      labels: Labels in ``[0, 1]`` (hard or soft), broadcastable to ``logits``.
      alpha: Weight of the positive class in ``[0, 1]``, or ``None`` (no weighting).
      gamma: Focusing parameter :math:`\\gamma \\ge 0`; ``gamma=0`` is binary cross-entropy.
      weight: Element weights, broadcastable.
      where: Boolean mask; masked elements give 0 and do not count in ``"mean"``.
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.

    Returns:
      Elementwise losses in float32 (float64 for float64 logits), or a scalar when reduced.

    References:
      Lin et al., `Focal Loss for Dense Object Detection <https://arxiv.org/abs/1708.02002>`_, 2017.
    """
    logits = _checks.as_float_array(logits, "logits")
    _check_gamma_alpha(gamma, alpha)
    _checks.check_reduction(reduction)
    labels = jnp.asarray(labels)
    _checks.check_broadcastable(logits.shape, labels, "labels")
    dtype = _checks.compute_dtype(logits.dtype)
    x, y = jnp.broadcast_arrays(logits.astype(dtype), labels.astype(dtype))
    if is_zero(gamma):
        losses = sigmoid_bce_elementwise(x, y, jnp.ones((), dtype))
    else:
        losses = _focal_elementwise(x, y, lax.stop_gradient(jnp.asarray(gamma, dtype)))
    if alpha is not None:
        a = jnp.asarray(alpha, dtype)
        losses = (a * y + (1.0 - a) * (1.0 - y)) * losses
    return apply_mask_and_reduce(losses, weight=weight, where=where, reduction=reduction)


def log1m_softmax(z: jax.Array) -> jax.Array:
    """:math:`\\log(1 - \\mathrm{softmax}(z))` along the last axis, without cancellation.

    For the largest entry, :math:`\\log(1 - p_{c^*}) = \\mathrm{lse}(z_{\\setminus c^*}) - \\mathrm{lse}(z)`; every
    other entry has :math:`p_c \\le 1/2`, where ``log1p(-p)`` is exact. Derivatives are finite everywhere.
    """
    top = lax.stop_gradient(jnp.argmax(z, axis=-1))
    is_top = jnp.arange(z.shape[-1]) == top[..., None]
    lse_rest = logsumexp_last(jnp.where(is_top, -jnp.inf, z))
    top_value = (lse_rest - logsumexp_last(z))[..., None]
    p = softmax_last(z)
    others = jnp.log1p(-jnp.where(is_top, 0.0, p))
    return jnp.where(is_top, top_value, others)


def softmax_focal_loss(
    logits: Any,
    labels: Any,
    axis: int = -1,
    where: Any = None,
    *,
    alpha: Any = None,
    gamma: Any = 2.0,
    ignore_index: int | None = None,
    label_smoothing: Any = 0.0,
    reduction: str = "none",
) -> jax.Array:
    """Multi-class (softmax) focal loss: :math:`-\\sum_c \\alpha_c\\, t_c (1 - p_c)^\\gamma \\log p_c`.

    For an integer label this is :math:`-\\alpha_y (1-p_y)^\\gamma \\log p_y`, whose gradient w.r.t. the logits is

    .. math::
      \\frac{\\partial \\ell}{\\partial z_j} = \\alpha_y (1-p_y)^{\\gamma}
      \\Big(1 - \\frac{\\gamma\\, p_y \\log p_y}{1-p_y}\\Big) (p_j - [j = y]).

    Args:
      logits: Logits ``[..., num_classes]``.
      labels: Integer class indices ``[...]`` or target distributions ``[..., num_classes]``.
      axis: Class axis.
      where: Boolean mask of ``logits``' shape or its batch shape.
      alpha: Per-class weights ``[num_classes]`` (or a scalar), or ``None``.
      gamma: :math:`\\gamma \\ge 0`; ``gamma=0`` is (weighted) softmax cross-entropy.
      ignore_index: Integer label value to ignore (loss 0, not counted in ``"mean"``).
      label_smoothing: :math:`\\varepsilon`, as in :func:`jxent.softmax_cross_entropy`.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over the examples that count; ``alpha`` is not part of
        the denominator, as in torchvision).

    Returns:
      Losses ``[...]`` in float32 (float64 for float64 logits), or a scalar when reduced.

    References:
      Lin et al., `Focal Loss for Dense Object Detection <https://arxiv.org/abs/1708.02002>`_, 2017.
    """
    _check_gamma_alpha(gamma, alpha)
    check_options(label_smoothing=label_smoothing, reduction=reduction, ignore_index=ignore_index)
    rows = prepare_rows(logits, axis=axis, where=where, soft_cap=None, temperature=1.0)
    num_classes = rows.z.shape[-1]
    class_weight = None
    if alpha is not None:
        a = jnp.asarray(alpha)
        if a.ndim != 0 and a.shape != (num_classes,):
            raise ValueError(
                f"`alpha` must be a scalar or hold one weight per class, shape ({num_classes},); "
                f"got shape {tuple(a.shape)}."
            )
        class_weight = _class_weight(
            jnp.broadcast_to(a, (num_classes,)) if a.ndim == 0 else a, num_classes, rows.z.dtype
        )
    targets = make_targets(
        rows,
        labels,
        class_weight=class_weight,
        label_smoothing=label_smoothing,
        ignore_index=ignore_index,
    )
    z = jnp.where(targets.counted[..., None], rows.z, 0.0)
    log_p = log_softmax_last(z)
    log_p = jnp.where((targets.q == 0) & (log_p == -jnp.inf), 0.0, log_p)
    per_class = targets.q * -log_p
    if not is_zero(gamma):
        per_class = per_class * _modulating_factor(log1m_softmax(z), gamma)
    losses = jnp.sum(per_class, axis=-1)
    return reduce_loss(losses, weights=targets.counted, reduction=reduction)
