"""Sigmoid (binary) cross-entropy on logits, with exact limits at ``logits = ±inf``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jxent import _checks
from jxent.reduction import reduce_loss

__all__ = ["sigmoid_binary_cross_entropy"]


def _add_tangent(tangent: jax.Array, coef: jax.Array, d: Any) -> jax.Array:
    """``tangent + coef * d``, skipping ``d`` when it is a symbolic zero (an argument not differentiated).

    Skipping rather than masking with ``where(d == 0, ...)`` keeps the rule linear in the tangents (so it
    transposes for reverse mode) while an infinite ``coef`` (labels at ``x = ±inf``) cannot turn a zero tangent
    into NaN.
    """
    if isinstance(d, SymbolicZero):
        return tangent
    return tangent + coef * d


@jax.custom_jvp
def sigmoid_bce_elementwise(x: jax.Array, y: jax.Array, pos_weight: jax.Array) -> jax.Array:
    """``-(pw * y * log sigmoid(x) + (1 - y) * log sigmoid(-x))`` with ``0 * inf = 0``."""
    log_p = jax.nn.log_sigmoid(x)
    log_not_p = jax.nn.log_sigmoid(-x)
    pos = jnp.where(y == 0, 0.0, pos_weight * y * log_p)
    neg = jnp.where(y == 1, 0.0, (1.0 - y) * log_not_p)
    return 0.0 - (pos + neg)  # +0 rather than -0 where both terms vanish


def _sigmoid_bce_jvp(primals, tangents):
    x, y, pw = primals
    dx, dy, dpw = tangents
    out = sigmoid_bce_elementwise(x, y, pw)
    tangent = jnp.zeros_like(out)
    # d/dx: (1 - y) sigmoid(x) - pw y sigmoid(-x); equals sigmoid(x) - y when pw = 1.
    tangent = _add_tangent(tangent, (1.0 - y) * jax.nn.sigmoid(x) - pw * y * jax.nn.sigmoid(-x), dx)
    tangent = _add_tangent(tangent, jax.nn.log_sigmoid(-x) - pw * jax.nn.log_sigmoid(x), dy)
    tangent = _add_tangent(tangent, -y * jax.nn.log_sigmoid(x), dpw)
    return out, jnp.broadcast_to(tangent, out.shape)


sigmoid_bce_elementwise.defjvp(_sigmoid_bce_jvp, symbolic_zeros=True)


def smooth_binary(labels: jax.Array, label_smoothing: Any) -> jax.Array:
    """Keras' binary label smoothing: ``y * (1 - eps) + eps / 2``."""
    if _checks.concrete_value(label_smoothing) == 0.0:
        return labels
    eps = lax.stop_gradient(jnp.asarray(label_smoothing, labels.dtype))
    return labels * (1.0 - eps) + 0.5 * eps


def apply_mask_and_reduce(
    losses: jax.Array, *, weight: Any, where: Any, reduction: str, name: str = "logits"
) -> jax.Array:
    """Element weights, ``where`` mask (masked elements give 0) and the reduction of elementwise losses.

    ``"mean"`` divides by the number of elements with ``where=True`` (torch: element weights are not part of
    the denominator).
    """
    if weight is not None:
        weight = _checks.as_float_array(weight, "weight")
        _checks.check_broadcastable(losses.shape, weight, "weight")
        losses = losses * weight.astype(losses.dtype)
    mask = None
    if where is not None:
        mask = jnp.asarray(where)
        if mask.dtype != jnp.bool_:
            raise TypeError(f"`where` must be a boolean mask; got dtype {mask.dtype}.")
        _checks.check_broadcastable(losses.shape, mask, "where")
        mask = jnp.broadcast_to(mask, losses.shape)
        losses = jnp.where(mask, losses, 0.0)
    return reduce_loss(losses, weights=mask, reduction=reduction)


def sigmoid_binary_cross_entropy(
    logits: Any,
    labels: Any,
    *,
    pos_weight: Any = None,
    weight: Any = None,
    label_smoothing: Any = 0.0,
    where: Any = None,
    reduction: str = "none",
) -> jax.Array:
    """Elementwise sigmoid cross-entropy: :math:`-[w_+ y \\log\\sigma(x) + (1-y)\\log(1-\\sigma(x))]`.

    Drop-in for :func:`optax.losses.sigmoid_binary_cross_entropy` (same values on finite logits) and
    ``torch.nn.functional.binary_cross_entropy_with_logits``. Computed with ``log_sigmoid`` so it is stable for
    any finite logit, and gives the exact limits at ``x = ±inf``: 0 where the label agrees, ``+inf`` where it
    does not (optax gives NaN there). Gradient: :math:`(1-y)\\sigma(x) - w_+ y\\, \\sigma(-x)`
    (:math:`\\sigma(x) - y` when :math:`w_+ = 1`), finite everywhere.

    Args:
      logits: Logits of the positive class, any shape.
      labels: Labels in ``[0, 1]`` (hard or soft), broadcastable to ``logits``.
      pos_weight: Weight :math:`w_+` of the positive term (torch's ``pos_weight``), broadcastable.
      weight: Element weights, broadcastable to ``logits``.
      label_smoothing: :math:`\\varepsilon \\in [0, 1]`; labels become :math:`y(1-\\varepsilon) + \\varepsilon/2`
        (Keras).
      where: Boolean mask; masked elements give 0 and do not count in ``"mean"``.
      reduction: ``"none"`` (elementwise), ``"sum"`` or ``"mean"`` (over the unmasked elements).

    Returns:
      Losses of the broadcast shape of ``logits`` and ``labels`` in float32 (float64 for float64 logits), or a
      scalar when reduced.

    References:
      Goodfellow, Bengio and Courville, `Deep Learning <https://www.deeplearningbook.org/>`_, 2016, §6.2.2.
    """
    logits = _checks.as_float_array(logits, "logits")
    _checks.check_scalar_range(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    _checks.check_reduction(reduction)
    dtype = _checks.compute_dtype(logits.dtype)
    labels = jnp.asarray(labels)
    _checks.check_broadcastable(logits.shape, labels, "labels")
    x = logits.astype(dtype)
    y = smooth_binary(labels.astype(dtype), label_smoothing)
    pw = jnp.ones((), dtype)
    if pos_weight is not None:
        pw = _checks.as_float_array(pos_weight, "pos_weight").astype(dtype)
        _checks.check_broadcastable(logits.shape, pw, "pos_weight")
    x, y = jnp.broadcast_arrays(x, y)
    losses = sigmoid_bce_elementwise(x, y, pw)
    return apply_mask_and_reduce(losses, weight=weight, where=where, reduction=reduction)
