"""Sigmoid (binary) cross-entropy on logits, with exact limits at ``logits = ±inf``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from jxent import _checks
from jxent._typing import Reduction
from jxent.reduction import reduce_loss

__all__ = ["sigmoid_binary_cross_entropy"]


def _add_tangent(tangent: jax.Array | None, coef: jax.Array, d: Any) -> jax.Array | None:
    """``tangent + coef * d``, skipping ``d`` when it is a symbolic zero (an argument not differentiated).

    Skipping rather than masking with ``where(d == 0, ...)`` keeps the rule linear in the tangents (so it
    transposes for reverse mode) while an infinite ``coef`` (labels at ``x = ±inf``) cannot turn a zero tangent
    into NaN. ``tangent=None`` stands for zero.
    """
    if isinstance(d, SymbolicZero):
        return tangent
    term = coef * d.astype(coef.dtype)
    return term if tangent is None else tangent + term


# ----------------------------------------------------------------------------------------------------------------
# Speed. Under `jax.value_and_grad(lambda x, y: jnp.mean(loss(x, y)))`, XLA:CPU turns the reduction into one fused
# kernel that absorbs only some elementwise operations (arithmetic, max/min, abs, exp, log, log1p, logistic, casts
# from bfloat16, not from float16) and writes every other operand out as a separate logits-sized array first. Each
# absorbed operation still costs time (the losses are compute-bound there; `sign` of the clamped logits is slow).
# Two rules follow:
#
# * The loss (the forward value) uses no `where`/`select`/`compare`/`clamp`: its exact limits at ±inf come from
#   arithmetic (see `bce_value`).
# * The gradient shares no operation with the loss, not even a cast or a broadcast constant (XLA merges identical
#   operations, and an operation used by both gets written out). So the gradient coefficient reads its inputs and
#   its constants through one `lax.optimization_barrier` (`isolate`), and is then free to use `where`.
#
# Derivatives of the gradient coefficients (Hessians, forward mode) come from plain reference formulas through a
# `custom_jvp`, so they stay exact (at x = 0 too) and finite.
# ----------------------------------------------------------------------------------------------------------------


def compute_cast(x: jax.Array, dtype: Any) -> jax.Array:
    """``x`` in ``dtype`` (no cast operation when it already is)."""
    return x if x.dtype == dtype else x.astype(dtype)


def bce_value(x: jax.Array, y: jax.Array, pos_weight: jax.Array | None) -> jax.Array:
    """The loss ``(1 - y) softplus(x) + pw y softplus(-x)`` and its pieces, with no ``select``.

    Exact limits at ``x = ±inf``: ``+inf`` where the label weight on the side that disagrees is positive, else
    ``+0`` (never NaN from ``0 * inf``). ``v`` below is ``-x`` clamped to the finite range (``∓max`` at ``±inf``).
    """
    big = jnp.finfo(x.dtype).max
    # -min(max(x, -big), big) with negations: XLA turns min(max(.)) into a `clamp`, which the fused reduction
    # does not absorb.
    v = jnp.maximum(-jnp.maximum(x, -big), -big)
    e = jnp.exp(-jnp.abs(v))
    log1p_e = jnp.log1p(e)
    if pos_weight is None:
        # (1 - y) max(x, 0) + y max(-x, 0) as one max (valid as the weights sum to 1 >= 0), no cancellation.
        linear = jnp.maximum(y * v, (y - 1.0) * v)
        shared = log1p_e
    else:
        w_neg, w_pos = 1.0 - y, pos_weight * y
        linear = w_neg * jnp.maximum(-v, 0.0) + w_pos * jnp.maximum(v, 0.0)
        shared = (w_neg + w_pos) * log1p_e
    # At x = ±inf, `linear` is w * max (finite); multiplying by 1 + max makes it +inf for any (normal) w > 0 and
    # keeps +0 for w = 0. (x + v)^2 is 0 for finite x (a factor of exactly 1) and +inf at ±inf.
    overflow = x + v
    loss = linear * (1.0 + jnp.minimum(overflow * overflow, big)) + shared
    return loss


def isolate(arrays: Any, constants: tuple[float, ...], dtype: Any) -> tuple[Any, tuple[jax.Array, ...]]:
    """``arrays`` and scalar ``constants`` (of ``dtype``) through one ``optimization_barrier``.

    Used by every gradient coefficient, so that none of its operations is shared with the loss (see above).
    """
    return lax.optimization_barrier((arrays, tuple(jnp.asarray(c, dtype) for c in constants)))


def with_reference_derivatives(fast: Callable[..., jax.Array], reference: Callable[..., jax.Array]) -> Any:
    """``fast`` as a ``custom_jvp`` whose derivatives are those of ``reference`` (the same function, written for
    autodiff)."""
    fn = jax.custom_jvp(fast)
    fn.defjvp(lambda primals, tangents: (fn(*primals), jax.jvp(reference, primals, tangents)[1]))
    return fn


def sigmoid_pieces(x: jax.Array, one: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(x >= 0, sigmoid(-|x|))`` for a gradient coefficient (which may use ``where``).

    Use ``sigmoid(-|x|)`` once: a divide read twice (e.g. by both branches of a ``where``) was left unfused.
    """
    e = jnp.exp(-jnp.abs(x))
    return x >= -x, e / (one + e)


def _bce_coefficient_fast(x: jax.Array, y: jax.Array, pos_weight: jax.Array | None = None) -> jax.Array:
    dtype = _checks.compute_dtype(x.dtype)
    (x, y, pos_weight), (one,) = isolate((x, y, pos_weight), (1.0,), dtype)
    x, y = compute_cast(x, dtype), compute_cast(y, dtype)
    nonneg, small = sigmoid_pieces(x, one)
    w_neg = one - y
    w_pos = y if pos_weight is None else pos_weight * y
    # x >= 0: (1 - y) (1 - s) - pw y s = (1 - y) - (1 - y + pw y) s, with s = sigmoid(-|x|);
    # x < 0:  (1 - y) s - pw y (1 - s) = (1 - y + pw y) s - pw y. No cancellation where the result is small.
    total = one if pos_weight is None else w_neg + w_pos
    return jnp.where(nonneg, w_neg, -w_pos) + jnp.where(nonneg, -total, total) * small


def _bce_coefficient_reference(x: jax.Array, y: jax.Array, pos_weight: jax.Array | None = None) -> jax.Array:
    dtype = _checks.compute_dtype(x.dtype)
    x, y = compute_cast(x, dtype), compute_cast(y, dtype)
    w_pos = y if pos_weight is None else pos_weight * y
    return (1.0 - y) * jax.nn.sigmoid(x) - w_pos * jax.nn.sigmoid(-x)


# d BCE / dx = (1 - y) sigmoid(x) - pw y sigmoid(-x) (sigmoid(x) - y when pw = 1), finite everywhere.
_bce_coefficient = with_reference_derivatives(_bce_coefficient_fast, _bce_coefficient_reference)


def _bce_fast(x: jax.Array, y: jax.Array, pos_weight: jax.Array | None = None) -> jax.Array:
    dtype = _checks.compute_dtype(x.dtype)
    return bce_value(compute_cast(x, dtype), compute_cast(y, dtype), pos_weight)


def _bce_jvp(primals, tangents):
    x, y, *pw = primals
    dx, dy, *dpw = tangents
    pos_weight = pw[0] if pw else None
    out = _bce_fast(x, y, pos_weight)
    tangent = None
    if not isinstance(dx, SymbolicZero):
        tangent = _add_tangent(tangent, _bce_coefficient(*primals), dx)
    if not isinstance(dy, SymbolicZero) or (dpw and not isinstance(dpw[0], SymbolicZero)):
        xf, yf = compute_cast(x, out.dtype), compute_cast(y, out.dtype)
        pw_f = jnp.ones((), out.dtype) if pos_weight is None else pos_weight
        tangent = _add_tangent(tangent, jax.nn.log_sigmoid(-xf) - pw_f * jax.nn.log_sigmoid(xf), dy)
        if dpw:
            tangent = _add_tangent(tangent, -yf * jax.nn.log_sigmoid(xf), dpw[0])
    if tangent is None:
        tangent = jnp.zeros_like(out)
    return out, jnp.broadcast_to(tangent, out.shape)


_bce_unit = jax.custom_jvp(lambda x, y: _bce_fast(x, y))
_bce_unit.defjvp(_bce_jvp, symbolic_zeros=True)
_bce_weighted = jax.custom_jvp(lambda x, y, pos_weight: _bce_fast(x, y, pos_weight))
_bce_weighted.defjvp(_bce_jvp, symbolic_zeros=True)


def sigmoid_bce_elementwise(x: jax.Array, y: jax.Array, pos_weight: jax.Array | None = None) -> jax.Array:
    """``-(pw * y * log sigmoid(x) + (1 - y) * log sigmoid(-x))`` with ``0 * inf = 0`` (``+0`` where it vanishes).

    ``x`` and ``y`` (floating, of one shape; ``pos_weight`` broadcastable to it) may be 16-bit: they are cast to
    the compute dtype inside, separately for the loss and the gradient (see the speed notes above).
    ``pos_weight=None`` means 1.
    """
    if pos_weight is None:
        return _bce_unit(x, y)
    return _bce_weighted(x, y, pos_weight)


def smooth_binary(labels: jax.Array, label_smoothing: Any) -> jax.Array:
    """Keras' binary label smoothing: ``y * (1 - eps) + eps / 2``."""
    if _checks.concrete_value(label_smoothing) == 0.0:
        return labels
    eps = lax.stop_gradient(jnp.asarray(label_smoothing, labels.dtype))
    return labels * (1.0 - eps) + 0.5 * eps


def labels_for(labels: jax.Array, dtype: Any, shape: tuple[int, ...], label_smoothing: Any = 0.0) -> jax.Array:
    """Labels for the elementwise losses on logits of ``shape``: floating labels of that shape stay in their dtype
    (cast inside, see the speed notes) unless smoothed; others are cast to ``dtype``.

    Labels that will be broadcast are cast first, so that the gradient w.r.t. them is summed over the broadcast
    axes in ``dtype`` and only then rounded to the labels' dtype.
    """
    keep = jnp.issubdtype(labels.dtype, jnp.floating) and tuple(labels.shape) == tuple(shape)
    if keep and _checks.concrete_value(label_smoothing) == 0.0:
        return labels
    return smooth_binary(labels.astype(dtype), label_smoothing)


def zero_masked(where: Any, *arrays: jax.Array) -> tuple[jax.Array, ...]:
    """``arrays`` (of one shape) with the ``where=False`` entries replaced by 0 before the loss is computed, so that
    a masked NaN or infinite input gets a zero gradient rather than ``0 * NaN``."""
    if where is None:
        return arrays
    mask = jnp.asarray(where)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"`where` must be a boolean mask; got dtype {mask.dtype}.")
    _checks.check_broadcastable(arrays[0].shape, mask, "where")
    return tuple(jnp.where(mask, a, jnp.zeros((), a.dtype)) for a in arrays)


def apply_mask_and_reduce(
    losses: jax.Array, *, weight: Any, where: Any, reduction: Reduction, name: str = "logits"
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
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    pos_weight: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    label_smoothing: ArrayLike = 0.0,
    where: ArrayLike | None = None,
    reduction: Reduction = "none",
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

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> logits = jnp.array([2.0, -1.0, 0.0])
      >>> labels = jnp.array([1.0, 0.0, 1.0])
      >>> print(np.asarray(jxent.sigmoid_binary_cross_entropy(logits, labels)).round(4))
      [0.1269 0.3133 0.6931]
      >>> print(np.asarray(jxent.sigmoid_binary_cross_entropy(logits, labels, pos_weight=3.0)).round(4))
      [0.3808 0.3133 2.0794]
    """
    logits = _checks.as_float_array(logits, "logits")
    _checks.check_scalar_range(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    _checks.check_reduction(reduction)
    dtype = _checks.compute_dtype(logits.dtype)
    labels = jnp.asarray(labels)
    _checks.check_broadcastable(logits.shape, labels, "labels")
    y = labels_for(labels, dtype, jnp.broadcast_shapes(logits.shape, labels.shape), label_smoothing)
    pw = None
    if pos_weight is not None:
        pw = _checks.as_float_array(pos_weight, "pos_weight").astype(dtype)
        _checks.check_broadcastable(logits.shape, pw, "pos_weight")
    x, y = zero_masked(where, *jnp.broadcast_arrays(logits, y))
    losses = sigmoid_bce_elementwise(x, y, pw)
    return apply_mask_and_reduce(losses, weight=weight, where=where, reduction=reduction)
