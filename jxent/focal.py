"""Focal losses: the sigmoid (binary) form and the softmax (multi-class) form.

Both compute the modulating factor :math:`(1 - p_t)^\\gamma` as :math:`\\exp(\\gamma \\log(1 - p_t))` with
:math:`\\log(1 - p_t)` evaluated without cancellation, so values, gradients and Hessians stay finite for
:math:`|z| = 100` and any :math:`\\gamma \\ge 0` (including :math:`0 < \\gamma < 1`, where the naive power has an
infinite derivative at :math:`p_t = 1`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from jxent import _checks
from jxent._options import CrossEntropyOptions, is_zero
from jxent._targets import class_weight_vector, make_targets, prepare_rows
from jxent._typing import Reduction
from jxent.binary import (
    apply_mask_and_reduce,
    bce_value,
    compute_cast,
    isolate,
    labels_for,
    sigmoid_bce_elementwise,
    with_reference_derivatives,
    zero_masked,
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
    if alpha is not None and np.ndim(alpha) == 0:
        _checks.check_scalar_range(alpha, "alpha", low=0.0, high=1.0)


# ----------------------------------------------------------------------------------------------------------------
# Sigmoid focal loss. The reference formulas (log space, `where`) define the derivatives of every order; the fast
# ones give the loss and the gradient, following the speed rules in jxent/binary.py: the loss without
# `select`, the gradient through `isolate`. gamma is a stop-gradient array; `power` is gamma when it is a small
# integer known at trace time (then (1 - p_t)^gamma is a product, with no log/exp).
# ----------------------------------------------------------------------------------------------------------------


def _log_one_minus_pt(x: jax.Array, y: jax.Array) -> jax.Array:
    """``log(1 - p_t) = log(y sigmoid(-x) + (1 - y) sigmoid(x))``, each term in log space and floored."""
    log_y = jnp.where(y > 0, jnp.log(jnp.where(y > 0, y, 1.0)), -jnp.inf)
    log_1my = jnp.where(y < 1, jnp.log1p(-jnp.where(y < 1, y, 0.0)), -jnp.inf)
    return jnp.logaddexp(_floor(log_y + jax.nn.log_sigmoid(-x)), _floor(log_1my + jax.nn.log_sigmoid(x)))


def _alpha_t(alpha: jax.Array, y: jax.Array, one: Any = 1.0) -> jax.Array:
    return alpha * y + (one - alpha) * (one - y)


def _cast_all(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    dtype = _checks.compute_dtype(x.dtype)
    return compute_cast(x, dtype), compute_cast(y, dtype)


def _focal_value_reference(x: jax.Array, y: jax.Array, gamma: jax.Array, alpha: jax.Array, has_alpha: bool) -> Any:
    x, y = _cast_all(x, y)
    out = sigmoid_bce_elementwise(x, y) * _modulating_factor(_log_one_minus_pt(x, y), gamma)
    return _alpha_t(alpha, y) * out if has_alpha else out


def _focal_coefficient_reference(
    x: jax.Array, y: jax.Array, gamma: jax.Array, alpha: jax.Array, has_alpha: bool
) -> jax.Array:
    """d/dx = (1 - p_t)^g [(p - y) + g (1 - 2y) p (1 - p) / (1 - p_t) * BCE]; the second term -> 0 as |x| -> inf,
    where the autodiff product would be 0 * inf."""
    x, y = _cast_all(x, y)
    bce = sigmoid_bce_elementwise(x, y)
    log_one_minus_pt = _log_one_minus_pt(x, y)
    log_pq = jax.nn.log_sigmoid(x) + jax.nn.log_sigmoid(-x)
    ratio = jnp.exp(jnp.where(log_pq == -jnp.inf, -jnp.inf, log_pq - log_one_minus_pt))
    focus = jnp.where(ratio == 0, 0.0, gamma * (1.0 - 2.0 * y) * ratio * bce)
    out = _modulating_factor(log_one_minus_pt, gamma) * (jax.nn.sigmoid(x) - y + focus)
    return _alpha_t(alpha, y) * out if has_alpha else out


def _focal_value_fast(
    x: jax.Array, y: jax.Array, gamma: jax.Array, alpha: jax.Array, power: int | None, has_alpha: bool
) -> jax.Array:
    """``alpha_t (1 - p_t)^gamma BCE`` with no ``select`` (see jxent/binary.py)."""
    x, y = _cast_all(x, y)
    bce = bce_value(x, y, None)
    # 1 - p_t = y sigmoid(-x) + (1 - y) sigmoid(x), both terms with full relative accuracy. (Not from the clamped
    # logits inside `bce_value`: the fused reduction is slow on their `sign`.)
    one_minus_pt = y * jax.nn.sigmoid(-x) + (1.0 - y) * jax.nn.sigmoid(x)
    if power is not None:
        factor = lax.integer_pow(one_minus_pt, power)
    else:
        factor = jnp.exp(gamma * jnp.maximum(jnp.log(one_minus_pt), _LOG_FLOOR))
    out = bce * factor
    return ((1.0 - alpha) + (2.0 * alpha - 1.0) * y) * out if has_alpha else out


def _focal_coefficient_fast(
    x: jax.Array, y: jax.Array, gamma: jax.Array, alpha: jax.Array, power: int | None, has_alpha: bool
) -> jax.Array:
    """The gradient coefficient (the reference's formula, with ``where``, on isolated inputs)."""
    dtype = _checks.compute_dtype(x.dtype)
    (x, y, gamma, alpha), (one, zero, floor) = isolate((x, y, gamma, alpha), (1.0, 0.0, _LOG_FLOOR), dtype)
    x, y = compute_cast(x, dtype), compute_cast(y, dtype)
    e = jnp.exp(-jnp.abs(x))
    denominator = one + e  # R: sigmoid(|x|) = 1 / R, sigmoid(-|x|) = e / R
    nonneg = x >= -x
    not_y = one - y
    c = jnp.where(nonneg, not_y, y)
    d = jnp.where(nonneg, y, not_y)
    scaled = c + d * e  # (1 - p_t) R
    # (p - y) R = (1 - y) - y e for x >= 0, (1 - y) e - y for x < 0.
    p_minus_y = jnp.where(nonneg, one, -one) * (c - d * e)
    live = e > zero  # p (1 - p) = e / R^2 > 0: finite x, where the BCE below is finite
    bce = jnp.where(nonneg, not_y, -y) * jnp.where(live, x, zero) + jnp.log1p(e)
    slope = gamma * (not_y - y) * e * bce  # g (1 - 2y) p (1 - p) R^2 BCE
    if power is not None:
        # (1-p_t)^n (p-y) + n (1-2y) (1-p_t)^(n-1) p (1-p) BCE, over R^(n+1).
        grad = lax.integer_pow(scaled, power - 1) * (scaled * p_minus_y + slope)
        grad = grad * lax.integer_pow(one / denominator, power + 1)
    else:
        # (1-p_t)^g [(p-y) + g (1-2y) p (1-p) / (1-p_t) BCE]; p (1-p) / (1-p_t) = e / (R (1-p_t) R).
        factor = jnp.exp(gamma * jnp.maximum(jnp.log(scaled) - jnp.log1p(e), floor))
        grad = factor / denominator * (p_minus_y + jnp.where(live, slope / scaled, zero))
    return _alpha_t(alpha, y, one) * grad if has_alpha else grad


@functools.cache
def _sigmoid_focal_elementwise(power: int | None, has_alpha: bool) -> Any:
    """``f(x, y, gamma, alpha) = alpha_t (1 - p_t)^gamma BCE(x, y)`` elementwise, as a ``custom_jvp``."""
    coefficient = with_reference_derivatives(
        functools.partial(_focal_coefficient_fast, power=power, has_alpha=has_alpha),
        functools.partial(_focal_coefficient_reference, has_alpha=has_alpha),
    )
    reference = functools.partial(_focal_value_reference, has_alpha=has_alpha)

    @jax.custom_jvp
    def focal(x, y, gamma, alpha):
        return _focal_value_fast(x, y, gamma, alpha, power=power, has_alpha=has_alpha)

    def focal_jvp(primals, tangents):
        x = primals[0]
        dx, *others = tangents
        out = focal(*primals)
        tangent = None
        if not isinstance(dx, SymbolicZero):
            tangent = coefficient(*primals) * dx.astype(out.dtype)
        if not all(isinstance(t, SymbolicZero) for t in others):
            others = [
                jnp.zeros_like(p) if isinstance(t, SymbolicZero) else t
                for p, t in zip(primals[1:], others, strict=True)
            ]
            term = jax.jvp(reference, primals, (jnp.zeros_like(x), *others))[1]
            tangent = term if tangent is None else tangent + term
        if tangent is None:
            tangent = jnp.zeros_like(out)
        return out, jnp.broadcast_to(tangent, out.shape)

    focal.defjvp(focal_jvp, symbolic_zeros=True)
    return focal


def _integer_power(gamma: Any) -> int | None:
    g = _checks.concrete_value(gamma)
    if g is not None and g.is_integer() and 1 <= g <= 8:
        return int(g)
    return None


def sigmoid_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike | None = None,
    gamma: ArrayLike = 2.0,
    weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: Reduction = "none",
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
      gamma: Focusing parameter :math:`\\gamma \\ge 0`; ``gamma=0`` is binary cross-entropy. A constant: no
        gradient flows to it (optax's does).
      weight: Element weights, broadcastable.
      where: Boolean mask; masked elements give 0 and do not count in ``"mean"``.
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.

    Returns:
      Elementwise losses in float32 (float64 for float64 logits), or a scalar when reduced.

    References:
      Lin et al., `Focal Loss for Dense Object Detection <https://arxiv.org/abs/1708.02002>`_, 2017.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> logits, labels = jnp.array([2.0, -1.0]), jnp.array([1.0, 1.0])
      >>> print(np.asarray(jxent.sigmoid_focal_loss(logits, labels, gamma=2.0)).round(4))
      [0.0018 0.7019]
    """
    logits = _checks.as_float_array(logits, "logits")
    _check_gamma_alpha(gamma, alpha)
    _checks.check_reduction(reduction)
    labels = jnp.asarray(labels)
    _checks.check_broadcastable(logits.shape, labels, "labels")
    dtype = _checks.compute_dtype(logits.dtype)
    shape = jnp.broadcast_shapes(logits.shape, labels.shape)
    x, y = zero_masked(where, *jnp.broadcast_arrays(logits, labels_for(labels, dtype, shape)))
    if is_zero(gamma):
        losses = sigmoid_bce_elementwise(x, y)
        if alpha is not None:
            losses = _alpha_t(jnp.asarray(alpha, dtype), compute_cast(y, dtype)) * losses
    else:
        a = jnp.zeros((), dtype) if alpha is None else jnp.asarray(alpha, dtype)
        focal = _sigmoid_focal_elementwise(_integer_power(gamma), alpha is not None)
        losses = focal(x, y, lax.stop_gradient(jnp.asarray(gamma, dtype)), a)
    return apply_mask_and_reduce(losses, weight=weight, where=where, reduction=reduction)


def log1m_softmax(z: jax.Array) -> jax.Array:
    """:math:`\\log(1 - \\mathrm{softmax}(z))` along the last axis, without cancellation.

    For the largest entry, :math:`\\log(1 - p_{c^*}) = \\mathrm{lse}(z_{\\setminus c^*}) - \\mathrm{lse}(z)`; every
    other entry has :math:`p_c \\le 1/2`, where ``log1p(-p)`` is exact. Derivatives are finite everywhere.
    """
    # Shift by the (finite) row maximum first: the difference of two log-sum-exps of 1e8-sized logits would
    # otherwise lose all its digits.
    m = lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    z = z - jnp.where(jnp.isfinite(m), m, 0.0)
    top = lax.stop_gradient(jnp.argmax(z, axis=-1))
    is_top = jnp.arange(z.shape[-1]) == top[..., None]
    lse_rest = logsumexp_last(jnp.where(is_top, -jnp.inf, z))
    top_value = (lse_rest - logsumexp_last(z))[..., None]
    p = softmax_last(z)
    others = jnp.log1p(-jnp.where(is_top, 0.0, p))
    return jnp.where(is_top, top_value, others)


def softmax_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int = -1,
    where: ArrayLike | None = None,
    *,
    alpha: ArrayLike | None = None,
    gamma: ArrayLike = 2.0,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    reduction: Reduction = "none",
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
      alpha: Per-class weights ``[num_classes]`` (or a scalar), or ``None``. A constant (no gradient).
      gamma: :math:`\\gamma \\ge 0`; ``gamma=0`` is (weighted) softmax cross-entropy. A constant (no gradient).
      ignore_index: Integer label value to ignore (loss 0, not counted in ``"mean"``).
      label_smoothing: :math:`\\varepsilon`, as in :func:`jxent.softmax_cross_entropy`.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over the examples that count; ``alpha`` is not part of
        the denominator, as in torchvision).

    Returns:
      Losses ``[...]`` in float32 (float64 for float64 logits), or a scalar when reduced.

    References:
      Lin et al., `Focal Loss for Dense Object Detection <https://arxiv.org/abs/1708.02002>`_, 2017.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> logits = jnp.array([[2.0, 0.0, -1.0]])
      >>> print(np.asarray(jxent.softmax_focal_loss(logits, jnp.array([0]), gamma=2.0)).round(4))
      [0.0041]
    """
    _check_gamma_alpha(gamma, alpha)
    CrossEntropyOptions(label_smoothing=label_smoothing, reduction=reduction, ignore_index=ignore_index)
    rows = prepare_rows(logits, axis=axis, where=where)
    num_classes = rows.z.shape[-1]
    class_weight = None
    if alpha is not None:
        a = jnp.asarray(alpha)
        if a.ndim != 0 and a.shape != (num_classes,):
            raise ValueError(
                f"`alpha` must be a scalar or hold one weight per class, shape ({num_classes},); "
                f"got shape {tuple(a.shape)}."
            )
        class_weight = class_weight_vector(
            jnp.broadcast_to(a, (num_classes,)) if a.ndim == 0 else a, num_classes, rows.z.dtype, "alpha"
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
