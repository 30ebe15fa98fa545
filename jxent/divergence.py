"""Entropy, Kullback-Leibler and Jensen-Shannon divergences between discrete distributions (in nats).

:math:`0 \\log 0 = 0` throughout, and ``-inf`` log-predictions where the target is 0 contribute 0 with a zero
gradient, so padded or masked vocabularies give no NaN. The derivative of :math:`t \\log t`, :math:`\\log t + 1`, is
taken at :math:`\\max(t, \\text{tiny})` (``tiny`` the smallest normal number: a slope of about -86 in float32 at
:math:`t = 0`, where the exact one is :math:`-\\infty`), so gradients through a softmax with masked or underflowed
classes are 0 there rather than NaN (``jax.scipy.special.xlogy``'s derivative is :math:`0/0` at :math:`t = 0`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jax.scipy.special import xlogy
from jax.typing import ArrayLike

from jxent import _axes, _checks
from jxent._typing import Reduction
from jxent.reduction import reduce_loss

__all__ = [
    "convex_kl_divergence",
    "entropy",
    "generalized_kl_divergence",
    "js_divergence",
    "kl_divergence",
    "kl_divergence_with_log_targets",
]


def _sum_classes(
    elementwise: jax.Array, layout: _axes.ClassLayout, mask: jax.Array | None, reduction: Reduction
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


@jax.custom_jvp
def xlogx(t: jax.Array) -> jax.Array:
    """``t * log(t)`` with ``0 log 0 = 0``; derivative ``log(max(t, tiny)) + 1`` (see the module docstring)."""
    return xlogy(t, t)


@xlogx.defjvp
def _xlogx_jvp(primals, tangents):
    (t,), (dt,) = primals, tangents
    return xlogx(t), (jnp.log(jnp.maximum(t, jnp.finfo(t.dtype).tiny)) + 1.0) * dt


@jax.custom_jvp
def _ratio(x: jax.Array, y: jax.Array) -> jax.Array:
    """``x / y`` with ``0 / 0 = 0``; derivative ``(dx - (x/y) dy) / y``, which never forms ``y**2`` (it underflows
    for ``y < 1e-19`` in float32, where ``x / y**2`` itself is finite)."""
    absent = y == 0
    return jnp.where(absent, 0.0, x / jnp.where(absent, 1.0, y))


@_ratio.defjvp
def _ratio_jvp(primals, tangents):
    (x, y), (dx, dy) = primals, tangents
    r = _ratio(x, y)
    absent = y == 0
    return r, jnp.where(absent, 0.0, (dx - r * dy) / jnp.where(absent, 1.0, y))


@jax.custom_jvp
def _xlogy_guarded(x: jax.Array, y: jax.Array) -> jax.Array:
    """``x * log(y)`` for ``x >= 0`` and ``y`` that is 0 only where ``x`` is: 0 there, with zero gradients.

    Derivatives ``log(y) dx + (x / y) dy`` through :func:`_ratio`, so second derivatives stay finite for tiny ``y``
    (``x / y`` is at most 2 in :func:`js_divergence`, where ``y = (x + q) / 2``).
    """
    absent = y == 0
    return jnp.where(absent, 0.0, xlogy(x, jnp.where(absent, 1.0, y)))


@_xlogy_guarded.defjvp
def _xlogy_guarded_jvp(primals, tangents):
    (x, y), (dx, dy) = primals, tangents
    absent = y == 0
    log_y = jnp.log(jnp.where(absent, 1.0, y))
    return _xlogy_guarded(x, y), jnp.where(absent, 0.0, log_y * dx) + _ratio(x, y) * dy


def _cross_term(t: jax.Array, log_q: jax.Array) -> jax.Array:
    """``t * log_q`` with ``0 * (-inf) = 0`` and no NaN in either gradient."""
    safe_log_q = jnp.where((t == 0) & (log_q == -jnp.inf), 0.0, log_q)
    return t * safe_log_q


def _kl_elementwise(log_q: jax.Array, t: jax.Array) -> jax.Array:
    """``t (log t - log q)`` with ``0 log 0 = 0`` and ``0 * (-inf) = 0`` (the reference form, with selects)."""
    return xlogx(t) - _cross_term(t, log_q)


def _kl_sum_select_free(log_q: jax.Array, t: jax.Array) -> jax.Array:
    """``sum(_kl_elementwise(log_q, t))`` over the last axis, in arithmetic only.

    On CPU, XLA lowers reductions to YNNPACK fusions, which absorb only arithmetic producers: a select or comparison
    inside the reduced expression makes XLA write its operands out as separate arrays. With ``big`` the float
    maximum, ``max(log t, -big)`` and ``x = max(log q, -big)`` are the logarithms themselves where finite and ``-big``
    at 0, so ``t * max(log t, -big)`` is ``xlogy(t, t)`` and ``t * x`` is 0 wherever ``t = 0``. ``k`` is exactly 1
    where ``log q > -inf`` (``min(log q, -big) + big = 0``) and ``big`` where ``log q = -inf``, where ``t * x * k * k``
    overflows to ``-inf`` for every normal ``t > 0`` (CPUs flush subnormals to 0): the divergence is ``+inf``, as it
    should be. The product is evaluated left to right (``t = 0`` gives ``0 * x * k * k = 0``); XLA keeps that order
    unless fast-math reassociation is switched on (``--xla_cpu_enable_fast_math``, which assumes no infinities).
    """
    big = jnp.finfo(t.dtype).max
    x = jnp.maximum(log_q, -big)
    k = 1.0 - jnp.maximum(jnp.minimum(log_q, -big) + big, -big)
    return jnp.sum(t * jnp.maximum(jnp.log(t), -big) - t * x * k * k, axis=-1)


@jax.custom_jvp
def _lq_coefficient(t: jax.Array, log_q: jax.Array) -> jax.Array:
    """``-d KL / d log q = t``: the value is ``t``; its derivative in ``t`` is taken as 0 where ``t = 0`` and
    ``log q = -inf`` (as for :func:`_kl_elementwise`)."""
    return t


@_lq_coefficient.defjvp
def _lq_coefficient_jvp(primals, tangents):
    t, log_q = primals
    return t, jnp.where((t == 0) & (log_q == -jnp.inf), 0.0, tangents[0])


@jax.custom_jvp
def _kl_rows(log_q: jax.Array, t: jax.Array, mask: jax.Array | None) -> jax.Array:
    """``sum(_kl_elementwise(log_q, t))`` over the last axis (``mask=False`` entries left out), same derivatives.

    Without a mask the value is one select-free pass (:func:`_kl_sum_select_free`) and the gradient w.r.t.
    ``log_q`` is ``-t``, one pass more: a forward and backward pass reads ``log_q`` once and ``t`` twice.
    """
    if mask is None:
        return _kl_sum_select_free(log_q, t)
    return jnp.sum(jnp.where(mask, _kl_elementwise(log_q, t), 0.0), axis=-1)


def _kl_rows_jvp(primals, tangents):
    log_q, t, mask = primals
    d_log_q, dt = tangents[0], tangents[1]
    out = _kl_rows(log_q, t, mask)
    tangent = jnp.zeros_like(out)
    if not isinstance(d_log_q, SymbolicZero):
        elementwise = -_lq_coefficient(t, log_q) * d_log_q
        if mask is not None:
            elementwise = jnp.where(mask, elementwise, 0.0)
        tangent = tangent + jnp.sum(elementwise, axis=-1)
    if not isinstance(dt, SymbolicZero):
        elementwise = jax.jvp(lambda t_: _kl_elementwise(log_q, t_), (t,), (dt,))[1]
        if mask is not None:
            elementwise = jnp.where(mask, elementwise, 0.0)
        tangent = tangent + jnp.sum(elementwise, axis=-1)
    return out, tangent


_kl_rows.defjvp(_kl_rows_jvp, symbolic_zeros=True)


def kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: _axes.Axis | None = -1,
    where: ArrayLike | None = None,
    *,
    reduction: Reduction = "none",
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

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> log_q = jnp.log(jnp.array([0.5, 0.5]))
      >>> round(float(jxent.kl_divergence(log_q, jnp.array([0.9, 0.1]))), 4)
      0.3681
    """
    _checks.check_reduction(reduction)
    log_q, t, layout, mask = _prepare(log_predictions, targets, "log_predictions", "targets", axis, where)
    mask_last = None if mask is None else layout.to_last(mask)
    per_example = _kl_rows(layout.to_last(log_q), layout.to_last(t), mask_last)
    weights = None if mask_last is None else jnp.any(mask_last, axis=-1)
    return reduce_loss(per_example, weights=weights, reduction=reduction)


def generalized_kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: _axes.Axis | None = -1,
    where: ArrayLike | None = None,
    *,
    reduction: Reduction = "none",
) -> jax.Array:
    """Generalized KL divergence :math:`\\sum_c t_c (\\log t_c - \\log q_c) - t_c + q_c` of unnormalised measures.

    The Bregman divergence of :math:`x \\log x - x`; equal to :func:`kl_divergence` when both sum to 1. Drop-in for
    :func:`optax.losses.generalized_kl_divergence` (same argument order); ``-inf`` log-predictions and zero
    targets follow :func:`kl_divergence`. Gradient w.r.t. ``log_predictions``: :math:`q - t`.

    Args:
      log_predictions: :math:`\\log q` ``[..., num_classes]`` (``q`` need not sum to 1); ``-inf`` allowed.
      targets: :math:`t \\ge 0`, broadcastable.
      axis: Class axis or axes.
      where: Boolean mask; masked classes are left out of the sum.
      reduction: ``"none"`` (per example), ``"sum"`` or ``"mean"`` (over examples).

    Returns:
      Divergences ``[...]``.

    References:
      Boyd and Vandenberghe, `Convex Optimization <https://web.stanford.edu/~boyd/cvxbook/>`_, 2004, p. 90.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> log_q = jnp.log(jnp.array([0.5, 0.7]))  # unnormalised
      >>> round(float(jxent.generalized_kl_divergence(log_q, jnp.array([0.9, 0.1]))), 4)
      0.5344
    """
    kl = kl_divergence(log_predictions, targets, axis, where)
    log_q, t, layout, mask = _prepare(log_predictions, targets, "log_predictions", "targets", axis, where)
    mass = _sum_classes(jnp.exp(log_q) - t, layout, mask, "none")
    weights = None if mask is None else jnp.any(layout.to_last(mask), axis=-1)
    return reduce_loss(kl + mass, weights=weights, reduction=reduction)


def convex_kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: _axes.Axis | None = -1,
    where: ArrayLike | None = None,
    *,
    reduction: Reduction = "none",
) -> jax.Array:
    """:func:`generalized_kl_divergence` under optax's older name (deprecated there).

    Examples:
      >>> import jax.numpy as jnp, jxent
      >>> log_q, t = jnp.log(jnp.array([0.5, 0.7])), jnp.array([0.9, 0.1])
      >>> bool(jxent.convex_kl_divergence(log_q, t) == jxent.generalized_kl_divergence(log_q, t))
      True
    """
    return generalized_kl_divergence(log_predictions, targets, axis, where, reduction=reduction)


def kl_divergence_with_log_targets(
    log_predictions: ArrayLike,
    log_targets: ArrayLike,
    axis: _axes.Axis | None = -1,
    where: ArrayLike | None = None,
    *,
    reduction: Reduction = "none",
) -> jax.Array:
    """:math:`\\mathrm{KL}(t \\,\\|\\, q) = \\sum_c e^{\\log t_c} (\\log t_c - \\log q_c)`, targets in log space.

    Drop-in for :func:`optax.losses.kl_divergence_with_log_targets` (``torch``'s ``kl_div(..., log_target=True)``).
    ``log_targets = -inf`` (zero probability) contributes 0.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> log_q, log_p = jnp.log(jnp.array([0.5, 0.5])), jnp.log(jnp.array([0.9, 0.1]))
      >>> round(float(jxent.kl_divergence_with_log_targets(log_q, log_p)), 4)
      0.3681
    """
    _checks.check_reduction(reduction)
    log_q, log_t, layout, mask = _prepare(log_predictions, log_targets, "log_predictions", "log_targets", axis, where)
    absent = log_t == -jnp.inf
    safe_log_t = jnp.where(absent, 0.0, log_t)
    t = jnp.where(absent, 0.0, jnp.exp(safe_log_t))
    elementwise = t * safe_log_t - _cross_term(t, log_q)
    return _sum_classes(elementwise, layout, mask, reduction)


def entropy(
    probabilities: ArrayLike,
    axis: _axes.Axis | None = -1,
    where: ArrayLike | None = None,
    *,
    reduction: Reduction = "none",
) -> jax.Array:
    """Shannon entropy :math:`H(p) = -\\sum_c p_c \\log p_c` (nats), with :math:`0 \\log 0 = 0`.

    Satisfies ``softmax_cross_entropy``'s identity :math:`\\mathrm{CE}(t, q) = H(t) + \\mathrm{KL}(t \\| q)`.
    Gradient: :math:`-(\\log p_c + 1)`, taken at :math:`\\max(p_c, \\text{tiny})` (about 86.3 in float32 at
    :math:`p_c = 0`, where the exact value is :math:`+\\infty`; see the module docstring).

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> round(float(jxent.entropy(jnp.array([0.5, 0.5, 0.0]))), 4)
      0.6931
    """
    _checks.check_reduction(reduction)
    p = _checks.as_float_array(probabilities, "probabilities")
    layout = _axes.class_layout(axis, p.ndim, "probabilities")
    mask = _axes.expand_where(where, layout, p.shape)
    p = p.astype(_checks.compute_dtype(p.dtype))
    return _sum_classes(-xlogx(p), layout, mask, reduction)


def js_divergence(
    p: ArrayLike,
    q: ArrayLike,
    axis: _axes.Axis | None = -1,
    where: ArrayLike | None = None,
    *,
    reduction: Reduction = "none",
) -> jax.Array:
    """Jensen-Shannon divergence :math:`\\tfrac12 \\mathrm{KL}(p\\|m) + \\tfrac12 \\mathrm{KL}(q\\|m)`,
    :math:`m = (p + q)/2`, of two probability vectors (nats; bounded by :math:`\\log 2`).

    References:
      Lin, `Divergence measures based on the Shannon entropy <https://doi.org/10.1109/18.61115>`_, 1991.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> round(float(jxent.js_divergence(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))), 4)
      0.6931
    """
    _checks.check_reduction(reduction)
    p, q, layout, mask = _prepare(p, q, "p", "q", axis, where)
    m = 0.5 * (p + q)
    elementwise = 0.5 * (xlogx(p) - _xlogy_guarded(p, m) + xlogx(q) - _xlogy_guarded(q, m))
    return _sum_classes(elementwise, layout, mask, reduction)
