"""Softmax cross-entropy with integer or probability labels, and the per-row numerics every variant shares.

One formula covers every option. For a row with logits :math:`z \\in \\mathbb{R}^V` (after soft-capping and
temperature), log-probabilities :math:`\\log p = \\mathrm{log\\_softmax}(z)` and a *target weight vector* :math:`q`,

.. math::
  \\ell(z, q) = -\\sum_c q_c \\log p_c \\;+\\; \\lambda_z\\, \\mathrm{lse}(z)^2, \\qquad
  \\frac{\\partial \\ell}{\\partial z} = \\Big(\\sum_c q_c + 2\\lambda_z\\, \\mathrm{lse}(z)\\Big)\\, p - q.

For an integer label :math:`y` with class weights :math:`w` and label smoothing :math:`\\varepsilon` over the
:math:`K` present classes (those with a finite logit and ``where=True``), as in ``torch.nn.functional.cross_entropy``:

.. math::
  q_c = (1-\\varepsilon)\\, w_y\\, [c = y] + \\frac{\\varepsilon}{K}\\, w_c ,

and ``reduction="mean"`` divides the summed losses by :math:`\\sum_i w_{y_i}` over the examples that count. For a
probability label :math:`t`, :math:`q_c = w_c\\,((1-\\varepsilon) t_c + \\varepsilon / K)` and ``"mean"`` divides by the
number of examples that count (torch's rule for probability targets).

The gradient comes from closed-form ``custom_jvp`` rules (as in :mod:`jxent.softmax`), so it is exactly
``(sum(q) + 2 z_loss lse) * softmax(z) - q`` with no NaN at ``-inf`` logits.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jxent import _axes, _checks
from jxent.reduction import reduce_loss
from jxent.softmax import Normalizer, logsumexp_last, normalizer, softmax_last
from jxent.softmax import soft_cap as _soft_cap

__all__ = [
    "safe_softmax_cross_entropy",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
]


class Rows(NamedTuple):
    """Logits laid out as ``[batch..., V]`` in the compute dtype, with absent classes set to ``-inf``."""

    z: jax.Array
    row_mask: jax.Array | None  # [batch...] rows that have at least one ``where=True`` class
    class_mask: jax.Array | None  # [batch..., V] the ``where`` mask itself
    layout: _axes.ClassLayout
    batch_shape: tuple[int, ...]
    shape: tuple[int, ...]  # the original logits shape


class Targets(NamedTuple):
    """Target weights ``q`` ``[batch..., V]`` (0 for rows that do not count) and the ``"mean"`` denominators."""

    q: jax.Array
    counted: jax.Array  # [batch...] bool
    example_weight: jax.Array  # [batch...]


def check_options(
    *,
    label_smoothing: Any = 0.0,
    z_loss: Any = 0.0,
    soft_cap: Any = None,
    temperature: Any = 1.0,
    reduction: str = "none",
    ignore_index: Any = None,
) -> None:
    """Validates the keyword options shared by every cross-entropy variant (dense, fused, sharded)."""
    _checks.check_scalar_range(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    _checks.check_scalar_range(z_loss, "z_loss", low=0.0)
    _checks.check_scalar_range(soft_cap, "soft_cap", low=0.0, low_open=True)
    _checks.check_scalar_range(temperature, "temperature", low=0.0, low_open=True)
    _checks.check_reduction(reduction)
    _checks.check_ignore_index(ignore_index)


def is_zero(x: Any) -> bool:
    """True when ``x`` is known at trace time to be 0 (so the term it scales can be skipped)."""
    return _checks.concrete_value(x) == 0.0


def transform_logits(logits: jax.Array, *, soft_cap: Any = None, temperature: Any = 1.0) -> jax.Array:
    """Soft-capping then temperature, in the compute dtype: ``cap * tanh(z / cap) / T``."""
    z = logits.astype(_checks.compute_dtype(logits.dtype))
    if soft_cap is not None:
        z = _soft_cap(z, lax.stop_gradient(soft_cap))  # a constant, like the temperature
    if _checks.concrete_value(temperature) != 1.0:
        z = z / lax.stop_gradient(jnp.asarray(temperature, z.dtype))
    return z


def prepare_rows(
    logits: Any,
    *,
    axis: _axes.Axis | None,
    where: Any,
    soft_cap: Any,
    temperature: Any,
) -> Rows:
    """Checks ``logits``, applies the logit transforms and moves the class axes last."""
    logits = _checks.as_float_array(logits, "logits")
    layout = _axes.class_layout(axis, logits.ndim)
    mask = _axes.expand_where(where, layout, logits.shape)
    z = transform_logits(logits, soft_cap=soft_cap, temperature=temperature)
    z = layout.to_last(z)
    class_mask = row_mask = None
    if mask is not None:
        class_mask = layout.to_last(mask)
        z = jnp.where(class_mask, z, -jnp.inf)
        row_mask = jnp.any(class_mask, axis=-1)
    return Rows(z, row_mask, class_mask, layout, layout.batch_shape(logits.shape), tuple(logits.shape))


def _class_weight(weight: Any, num_classes: int, dtype: Any) -> jax.Array | None:
    if weight is None:
        return None
    w = _checks.as_float_array(weight, "weight")
    if w.shape != (num_classes,):
        raise ValueError(
            f"`weight` must hold one weight per class, shape ({num_classes},); got shape {tuple(w.shape)}."
        )
    return lax.stop_gradient(w.astype(dtype))  # a constant, as in the integer-label kernel


def _counted_rows(rows: Rows) -> tuple[jax.Array, jax.Array]:
    """Per-class presence (finite or NaN logit) and the rows that have a present class.

    ``counted`` comes from the row maximum (shared with the softmax normaliser) rather than ``any(present)``, which
    would cost another pass over the logits; a NaN maximum counts, so NaN propagates.
    """
    present = rows.z != -jnp.inf
    counted = jnp.max(rows.z, axis=-1) != -jnp.inf
    if rows.row_mask is not None:
        counted = counted & rows.row_mask
    return present, counted


def integer_label_coefficients(
    labels: jax.Array,
    num_classes: int,
    *,
    class_weight: jax.Array | None,
    label_smoothing: Any,
    num_present: Any,
    ignore_index: int | None,
    counted: jax.Array,
    dtype: Any,
) -> tuple[jax.Array, jax.Array | None, jax.Array, jax.Array]:
    """Per-row coefficients of the integer-label target vector ``q = a * onehot(y) + b * w``.

    Args:
      labels: Integer labels ``[batch...]``.
      num_classes: ``V``.
      class_weight: ``[V]`` class weights or ``None`` (all 1).
      label_smoothing: ``eps``.
      num_present: ``K``, the number of classes the smoothing mass is spread over (``[batch...]`` or scalar).
      ignore_index: Label value whose rows do not count, or ``None``.
      counted: ``[batch...]`` rows that count before looking at labels.
      dtype: Compute dtype.

    Returns:
      ``(a, b, counted, example_weight)``: ``a = (1 - eps) w_y`` (NaN for an out-of-range label, 0 for rows that
      do not count), ``b = eps / K`` (``None`` when ``eps`` is 0; 0 for rows that do not count), the updated
      ``counted`` mask and the weight of each row in the ``"mean"`` denominator (``w_y``).
    """
    in_range = (labels >= 0) & (labels < num_classes)
    if ignore_index is not None:
        counted = counted & ~_checks.is_ignored(labels, ignore_index)
    safe = jnp.where(in_range, labels, 0)
    w_y = jnp.ones(labels.shape, dtype) if class_weight is None else class_weight[safe]
    eps = lax.stop_gradient(jnp.asarray(label_smoothing, dtype))
    a = w_y if is_zero(label_smoothing) else (1.0 - eps) * w_y
    a = jnp.where(counted, jnp.where(in_range, a, jnp.nan), 0.0)
    b = None
    if not is_zero(label_smoothing):
        b = jnp.where(counted, eps / jnp.maximum(jnp.asarray(num_present, dtype), 1.0), 0.0)
    example_weight = jnp.where(counted, jnp.where(in_range, w_y, 1.0), 0.0)
    return a, b, counted, example_weight


def integer_targets(
    rows: Rows,
    labels: jax.Array,
    *,
    class_weight: jax.Array | None,
    label_smoothing: Any,
    ignore_index: int | None,
) -> Targets:
    """Target weights for integer labels (see the module docstring for the formula)."""
    num_classes = rows.z.shape[-1]
    present, counted = _counted_rows(rows)
    num_present = None if is_zero(label_smoothing) else jnp.sum(present, axis=-1)
    a, b, counted, example_weight = integer_label_coefficients(
        labels,
        num_classes,
        class_weight=class_weight,
        label_smoothing=label_smoothing,
        num_present=num_present,
        ignore_index=ignore_index,
        counted=counted,
        dtype=rows.z.dtype,
    )
    onehot = jnp.arange(num_classes) == jnp.where(labels < 0, num_classes, labels)[..., None]
    q = jnp.where(onehot, a[..., None], 0.0)
    q = jnp.where(jnp.isnan(a)[..., None], jnp.nan, q)
    if b is not None:
        spread = present if class_weight is None else jnp.where(present, class_weight, 0.0)
        q = q + b[..., None] * spread
    return Targets(q, counted, example_weight)


def _probability_weights(
    rows: Rows,
    labels: jax.Array,
    *,
    class_weight: jax.Array | None,
    label_smoothing: Any,
) -> tuple[jax.Array, jax.Array]:
    """``(q, counted)``: ``w * ((1 - eps) t + eps / K)`` on present classes, not yet zeroed on rows that do not count.

    Without smoothing, class weights or a ``where`` mask, ``q`` is ``t`` itself (no pass over ``[..., V]``).
    """
    present, counted = _counted_rows(rows)
    dtype = rows.z.dtype
    t = labels.astype(dtype)
    if not is_zero(label_smoothing):
        eps = lax.stop_gradient(jnp.asarray(label_smoothing, dtype))
        num_present = jnp.maximum(jnp.sum(present, axis=-1, keepdims=True), 1).astype(dtype)
        t = (1.0 - eps) * t + jnp.where(present, eps / num_present, 0.0)
    if class_weight is not None:
        t = t * class_weight
    if rows.class_mask is not None:
        t = jnp.where(rows.class_mask, t, 0.0)  # optax: masked classes are left out of the sum
    return t, counted


def probability_targets(
    rows: Rows,
    labels: jax.Array,
    *,
    class_weight: jax.Array | None,
    label_smoothing: Any,
) -> Targets:
    """Target weights for probability labels ``t``: ``w * ((1 - eps) t + eps / K)`` on present classes."""
    t, counted = _probability_weights(rows, labels, class_weight=class_weight, label_smoothing=label_smoothing)
    q = jnp.where(counted[..., None], t, 0.0)
    return Targets(q, counted, counted.astype(rows.z.dtype))


def is_index_labels(labels: jax.Array, rows: Rows) -> bool:
    """Integer labels of the batch shape are class indices; anything else is a (broadcastable) distribution."""
    return bool(jnp.issubdtype(labels.dtype, jnp.integer)) and labels.shape == rows.batch_shape


def make_targets(
    rows: Rows,
    labels: Any,
    *,
    class_weight: jax.Array | None,
    label_smoothing: Any,
    ignore_index: int | None,
) -> Targets:
    """Target weights for either label form: class indices ``[batch...]`` or distributions like ``logits``."""
    labels = jnp.asarray(labels)
    if is_index_labels(labels, rows):
        return integer_targets(
            rows,
            _checks.widen_labels(labels),
            class_weight=class_weight,
            label_smoothing=label_smoothing,
            ignore_index=ignore_index,
        )
    labels = probability_labels(rows, labels, ignore_index=ignore_index)
    return probability_targets(rows, labels, class_weight=class_weight, label_smoothing=label_smoothing)


def probability_labels(rows: Rows, labels: jax.Array, *, ignore_index: int | None) -> jax.Array:
    """Checks probability labels and lays them out like ``rows.z`` (``[batch..., V]``)."""
    if ignore_index is not None:
        raise ValueError("`ignore_index` applies to integer labels only; mask probability labels with `where`.")
    if labels.dtype == jnp.bool_:  # one-hot masks, as optax accepts them
        labels = labels.astype(rows.z.dtype)
    if not (jnp.issubdtype(labels.dtype, jnp.floating) or jnp.issubdtype(labels.dtype, jnp.integer)):
        raise TypeError(f"`labels` must be numeric; got dtype {labels.dtype}.")
    _checks.check_broadcastable(rows.shape, labels, "labels")
    return rows.layout.to_last(jnp.broadcast_to(labels, rows.shape))


# Dense (probability-label) kernel. On CPU, XLA lowers plain reductions to YNNPACK fusions, which absorb only
# arithmetic producers (add, mul, min, max, exp, log, ...): a select or comparison inside a reduced expression makes
# XLA write its operands out as separate ``[..., V]`` arrays. So the normaliser is a select-free sum, and the guarded
# sum ``-sum(q log p)`` (0 log 0 = 0, +inf logits) is one two-output reduction, which XLA emits itself with the
# selects fused, together with ``sum(q)``. A forward and backward pass then reads ``z`` four times (maximum,
# normaliser, loss, gradient) and ``q`` twice, and writes the gradient once.

_UNDERFLOW = 1000.0  # exp(-1000) is 0 in float32 and float64


def _sum_pair(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(sum(a), sum(b))`` over the last axis in one pass (a variadic reduction, so its inputs may hold selects)."""
    zero = jnp.zeros((), a.dtype)
    return lax.reduce((a, b), (zero, zero), lambda x, y: (x[0] + y[0], x[1] + y[1]), (a.ndim - 1,))


def _dense_statistics(z: jax.Array) -> tuple[Normalizer, jax.Array]:
    """Row statistics of ``z`` and ``total = sum(exp(shift(z)))`` ``[..., 1]`` (1 where no class is present)."""
    m = lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    finite, pos_inf = jnp.isfinite(m), m == jnp.inf
    # sum(exp(shift(z))) without a select: exp(min(z - offset, d) - d) is exp(z - m) in a row with a finite maximum
    # (offset = m, d = 0) and, in a row with a +inf entry (offset = float max, d = 1000), 1 at the +inf entries and
    # exp(<= -1000) = 0 elsewhere; 0 in a row with no class present, NaN in a NaN row.
    big = jnp.finfo(z.dtype).max
    offset = jnp.where(pos_inf, big, jnp.where(finite, m, 0.0)).astype(z.dtype)
    d = jnp.where(pos_inf, _UNDERFLOW, 0.0).astype(z.dtype)
    total = jnp.sum(jnp.exp(jnp.minimum(z - offset, d) - d), axis=-1, keepdims=True)
    present = total != 0
    total = jnp.where(present, total, 1.0)
    return Normalizer(m, finite, pos_inf, jnp.log(total), present), total


@jax.custom_jvp
def _probs(z: jax.Array, stats: Normalizer, total: jax.Array) -> jax.Array:
    """``softmax(z)`` from its row statistics; the derivative is the closed form in ``z`` (the statistics are
    functions of ``z``, their tangents are not used)."""
    return jnp.exp(stats.shift(z)) / total


@_probs.defjvp
def _probs_jvp(primals, tangents):
    z, stats, total = primals
    p = _probs(z, stats, total)
    pdz = jnp.where(p == 0, 0.0, p * tangents[0])
    return p, pdz - p * jnp.sum(pdz, axis=-1, keepdims=True)


@jax.custom_jvp
def _log_probs(z: jax.Array, stats: Normalizer, total: jax.Array) -> jax.Array:
    """``log_softmax(z)`` from its row statistics, with the closed-form derivative in ``z`` (0 at ``-inf``)."""
    return stats.log_prob(z)


@_log_probs.defjvp
def _log_probs_jvp(primals, tangents):
    z, stats, total = primals
    p = _probs(z, stats, total)
    log_p = _log_probs(z, stats, total)
    mean_dz = jnp.sum(jnp.where(p == 0, 0.0, p * tangents[0]), axis=-1, keepdims=True)
    return log_p, jnp.where(log_p == -jnp.inf, 0.0, tangents[0] - mean_dz)


@jax.custom_jvp
def _with_lse_derivative(z: jax.Array, stats: Normalizer, total: jax.Array) -> jax.Array:
    """``stats.lse`` with the derivative ``softmax(z) . dz``."""
    return stats.lse


@_with_lse_derivative.defjvp
def _with_lse_derivative_jvp(primals, tangents):
    z, stats, total = primals
    p = _probs(z, stats, total)
    return stats.lse, jnp.sum(jnp.where(p == 0, 0.0, p * tangents[0]), axis=-1, keepdims=True)


@jax.custom_jvp
def _dense_pair(z: jax.Array, q: jax.Array, lam: jax.Array | None, counted: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(loss, sum(q))`` per row; see :func:`_dense_kernel`. ``sum(q)`` comes out of the loss's reduction."""
    stats, _ = _dense_statistics(z)
    q_log_p, q_sum = _sum_pair(jnp.where(q == 0, 0.0, q * stats.log_prob(z)), q)
    loss = 0.0 - q_log_p
    if lam is not None:
        loss = loss + lam * jnp.square(stats.lse[..., 0])  # rows that do not count are zeroed below
    return jnp.where(counted, loss, 0.0), q_sum


def _dense_pair_jvp(primals, tangents):
    z, q, lam, counted = primals
    dz, dq = tangents[0], tangents[1]
    loss, q_sum = _dense_pair(z, q, lam, counted)
    stats, total = _dense_statistics(z)  # computed by the line above too: XLA computes them once
    tangent = jnp.zeros_like(loss)
    q_sum_tangent = jnp.zeros_like(q_sum)
    if not isinstance(dz, SymbolicZero):
        # d loss / d z = (sum(q) + 2 lam lse) softmax(z) - q on rows that count, 0 elsewhere.
        c = jnp.where(counted, q_sum, 0.0)
        if lam is not None:
            lse = _with_lse_derivative(z, stats, total)[..., 0]
            c = c + 2.0 * lam * jnp.where(counted & jnp.isfinite(lse), lse, 0.0)
        g = c[..., None] * _probs(z, stats, total) - jnp.where(counted[..., None], q, 0.0)
        tangent = tangent + jnp.sum(g * dz, axis=-1)
    if not isinstance(dq, SymbolicZero):
        # d loss / d q = -log p; taken as 0 at absent classes (log p = -inf), keeping the tangent linear in dq.
        log_p = jnp.where(counted[..., None], _log_probs(z, stats, total), -jnp.inf)
        tangent = tangent - jnp.sum(jnp.where(log_p == -jnp.inf, 0.0, log_p) * dq, axis=-1)
        q_sum_tangent = jnp.sum(dq, axis=-1)
    return (loss, q_sum), (tangent, q_sum_tangent)


_dense_pair.defjvp(_dense_pair_jvp, symbolic_zeros=True)


def _dense_kernel(z: jax.Array, q: jax.Array, lam: jax.Array | None, counted: jax.Array) -> jax.Array:
    """``-sum(q * log_softmax(z)) + lam * lse(z)**2`` per row (0 where not ``counted``), ``0 * log 0 = 0``.

    Rows that do not count give 0 with a zero gradient whatever (finite) ``q`` holds there. Gradient w.r.t. ``z``:
    ``(sum(q) + 2 lam lse) softmax(z) - q``; w.r.t. ``q``: ``-log_softmax(z)`` (0 at absent classes).
    """
    return _dense_pair(z, q, lam, counted)[0]


def row_losses(z: jax.Array, targets: Targets, *, z_loss: Any = 0.0) -> jax.Array:
    """``-sum(q * log_softmax(z)) + z_loss * lse(z)**2`` per row, 0 (with zero gradient) for rows that do not count.

    ``0 * log 0 = 0``, so absent classes with no target mass contribute nothing; target mass on an absent class
    gives ``+inf``. Gradient w.r.t. ``z``: ``(sum(q) + 2 z_loss lse) softmax(z) - q``; w.r.t. ``q``:
    ``-log_softmax(z)``.
    """
    lam = None if is_zero(z_loss) else lax.stop_gradient(jnp.asarray(z_loss, z.dtype))
    return _dense_kernel(z, targets.q, lam, targets.counted)


@jax.custom_jvp
def _integer_kernel(
    z: jax.Array,
    labels: jax.Array,
    a: jax.Array,
    b: jax.Array | None,
    spread: jax.Array | None,
    lam: jax.Array | None,
    counted: jax.Array,
) -> jax.Array:
    """Integer-label row loss for ``q = a * onehot(labels) + b * spread`` without building ``q``.

    ``loss = -a log p_y - b sum_c spread_c log p_c + lam lse**2`` (0 where not ``counted``); ``labels`` must be in
    range (out-of-range rows carry ``a = NaN``), ``spread`` is the class weight on present classes and 0 elsewhere.
    """
    stats, _, _ = normalizer(z)
    log_p_y = stats.log_prob(jnp.take_along_axis(z, labels[..., None], axis=-1))[..., 0]
    loss = 0.0 - jnp.where(a == 0, 0.0, a * log_p_y)
    if b is not None and spread is not None:
        shifted = jnp.where(spread == 0, 0.0, spread * stats.shift(z))
        smooth = jnp.sum(shifted, axis=-1) - jnp.sum(spread, axis=-1) * stats.log_total[..., 0]
        loss = loss - jnp.where(b == 0, 0.0, b * smooth)
    if lam is not None:
        loss = loss + lam * jnp.square(stats.lse[..., 0])  # rows that do not count are zeroed below
    return jnp.where(counted, loss, 0.0)


@_integer_kernel.defjvp
def _integer_kernel_jvp(primals, tangents):
    z, labels, a, b, spread, lam, counted = primals
    dz = tangents[0]
    loss = _integer_kernel(z, labels, a, b, spread, lam, counted)
    # d loss / d z = (a + b sum(spread) + 2 lam lse) softmax(z) - a onehot(y) - b spread, fused in one pass.
    c = a
    if b is not None and spread is not None:
        c = c + b * jnp.sum(spread, axis=-1)
    if lam is not None:
        lse = logsumexp_last(z)
        c = c + 2.0 * lam * jnp.where(counted & jnp.isfinite(lse), lse, 0.0)
    g = c[..., None] * softmax_last(z)
    g = g - jnp.where(jnp.arange(z.shape[-1]) == labels[..., None], a[..., None], 0.0)
    if b is not None and spread is not None:
        g = g - b[..., None] * spread
    return loss, jnp.sum(g * dz, axis=-1)


def integer_row_losses(
    rows: Rows,
    labels: jax.Array,
    *,
    class_weight: jax.Array | None,
    label_smoothing: Any,
    ignore_index: int | None,
    z_loss: Any,
) -> tuple[jax.Array, jax.Array]:
    """Per-row integer-label cross-entropy (the formula of :func:`integer_targets`) and the ``"mean"`` weights.

    Same numbers as ``row_losses(rows.z, integer_targets(...))`` without materialising the ``[..., V]`` target
    vector: the gradient is one fused elementwise pass over the logits.
    """
    z = rows.z
    num_classes = z.shape[-1]
    present, counted = _counted_rows(rows)
    smoothing = not is_zero(label_smoothing)
    class_weight = None if class_weight is None else lax.stop_gradient(class_weight)
    a, b, counted, example_weight = integer_label_coefficients(
        labels,
        num_classes,
        class_weight=class_weight,
        label_smoothing=label_smoothing,
        num_present=jnp.sum(present, axis=-1) if smoothing else None,
        ignore_index=ignore_index,
        counted=counted,
        dtype=z.dtype,
    )
    spread = None
    if smoothing:
        spread = present.astype(z.dtype) if class_weight is None else jnp.where(present, class_weight, 0.0)
    lam = None if is_zero(z_loss) else lax.stop_gradient(jnp.asarray(z_loss, z.dtype))
    safe_labels = jnp.where((labels >= 0) & (labels < num_classes), labels, 0)
    return _integer_kernel(z, safe_labels, a, b, spread, lam, counted), example_weight


def softmax_cross_entropy_with_integer_labels(
    logits: Any,
    labels: Any,
    axis: _axes.Axis = -1,
    where: Any = None,
    *,
    weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: Any = 0.0,
    z_loss: Any = 0.0,
    soft_cap: Any = None,
    temperature: Any = 1.0,
    reduction: str = "none",
) -> jax.Array:
    """Softmax cross-entropy with integer class labels: :math:`\\mathrm{lse}(z) - z_y`.

    Drop-in for :func:`optax.losses.softmax_cross_entropy_with_integer_labels` (same positional arguments, same
    values); the keyword options follow ``torch.nn.functional.cross_entropy``. With every option,

    .. math::
      \\ell = (1-\\varepsilon)\\, w_y (\\mathrm{lse} - z_y) + \\frac{\\varepsilon}{K} \\sum_{c} w_c
      (\\mathrm{lse} - z_c) + \\lambda_z \\mathrm{lse}^2, \\qquad
      z = \\frac{\\mathrm{cap}\\tanh(\\mathrm{logits}/\\mathrm{cap})}{T},

    where the sum runs over the :math:`K` present classes (finite logit, ``where=True``).
    Gradient w.r.t. :math:`z`: :math:`(\\sum_c q_c + 2\\lambda_z \\mathrm{lse})\\,\\mathrm{softmax}(z) - q`.

    Args:
      logits: Unnormalised log-probabilities ``[..., num_classes]``; 16-bit inputs are computed in float32.
        ``-inf`` marks an absent class (masked vocabulary).
      labels: Integer class indices ``[...]`` (the shape of ``logits`` without ``axis``).
      axis: Class axis, or a tuple of axes flattened into one (as in optax).
      where: Boolean mask of ``logits``' shape (per class) or of the batch shape (per example).
      weight: Per-class weights ``[num_classes]``.
      ignore_index: Label value whose examples give loss 0, gradient 0 and do not count in ``"mean"``
        (``-100`` is torch's default; jxent's default is ``None``: no value is ignored).
      label_smoothing: :math:`\\varepsilon \\in [0, 1]`.
      z_loss: Coefficient :math:`\\lambda_z \\ge 0` of :math:`\\mathrm{lse}(z)^2` (PaLM).
      soft_cap: Soft-capping value ``cap > 0`` (Gemma 2), or ``None``.
      temperature: :math:`T > 0`; logits are divided by it after soft-capping.
      reduction: ``"none"`` (per-example losses), ``"sum"`` or ``"mean"`` (divided by :math:`\\sum w_{y_i}`
        over the examples that count; 0 when none counts).

    Returns:
      Losses ``[...]`` in float32 (float64 for float64 logits), or a scalar when reduced. A label outside
      ``[0, num_classes)`` that is not ``ignore_index`` gives NaN (its gradient too); ``-1`` never wraps. A
      label on an absent class gives ``+inf``. Rows with no present class give 0 and do not count.
      ``weight``, ``label_smoothing``, ``z_loss``, ``soft_cap`` and ``temperature`` are treated as constants (no
      gradient).

    References:
      Müller, Kornblith and Hinton, `When does label smoothing help? <https://arxiv.org/abs/1906.02629>`_, 2019.
      Chowdhery et al., `PaLM <https://arxiv.org/abs/2204.02311>`_, 2022 (z-loss).
    """
    check_options(
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        soft_cap=soft_cap,
        temperature=temperature,
        reduction=reduction,
        ignore_index=ignore_index,
    )
    rows = prepare_rows(logits, axis=axis, where=where, soft_cap=soft_cap, temperature=temperature)
    labels = _checks.as_int_array(labels, "labels")
    if labels.shape != rows.batch_shape:
        raise ValueError(
            f"`labels` must have the batch shape of `logits` {rows.batch_shape} (logits shape without the "
            f"class axis); got shape {tuple(labels.shape)}."
        )
    class_weight = _class_weight(weight, rows.z.shape[-1], rows.z.dtype)
    losses, example_weight = integer_row_losses(
        rows,
        labels,
        class_weight=class_weight,
        label_smoothing=label_smoothing,
        ignore_index=ignore_index,
        z_loss=z_loss,
    )
    return reduce_loss(losses, weights=example_weight, reduction=reduction)


def softmax_cross_entropy(
    logits: Any,
    labels: Any,
    axis: _axes.Axis | None = -1,
    where: Any = None,
    *,
    weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: Any = 0.0,
    z_loss: Any = 0.0,
    soft_cap: Any = None,
    temperature: Any = 1.0,
    reduction: str = "none",
) -> jax.Array:
    """Softmax cross-entropy with probability labels: :math:`-\\sum_c t_c \\log \\mathrm{softmax}(z)_c`.

    Drop-in for :func:`optax.losses.softmax_cross_entropy`. ``labels`` may also be integer class indices of the
    batch shape, in which case this is
    :func:`softmax_cross_entropy_with_integer_labels` (integer labels of ``logits``' full shape are one-hot
    vectors, as in optax). For probability labels :math:`t`, class weights :math:`w` and smoothing
    :math:`\\varepsilon` over the :math:`K` present classes:

    .. math::
      \\ell = -\\sum_c w_c \\big((1-\\varepsilon) t_c + \\varepsilon / K\\big) \\log p_c
      + \\lambda_z \\mathrm{lse}(z)^2,

    with :math:`0 \\log 0 = 0`; gradient :math:`(\\sum_c q_c + 2\\lambda_z\\mathrm{lse})\\, p - q`.

    Args:
      logits: Unnormalised log-probabilities ``[..., num_classes]``.
      labels: Target distributions broadcastable to ``logits``' shape, or integer class indices ``[...]``.
      axis: Class axis or axes.
      where: Boolean mask of ``logits``' shape or its batch shape; masked classes are left out of the sum.
      weight, ignore_index, label_smoothing, z_loss, soft_cap, temperature: As in
        :func:`softmax_cross_entropy_with_integer_labels` (``ignore_index`` only with integer labels).
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (divided by the number of examples that count, torch's
        rule for probability targets).

    Returns:
      Losses ``[...]`` in float32 (float64 for float64 logits), or a scalar when reduced. ``weight``,
      ``label_smoothing``, ``z_loss``, ``soft_cap`` and ``temperature`` are constants (no gradient).
    """
    check_options(
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        soft_cap=soft_cap,
        temperature=temperature,
        reduction=reduction,
        ignore_index=ignore_index,
    )
    rows = prepare_rows(logits, axis=axis, where=where, soft_cap=soft_cap, temperature=temperature)
    labels = jnp.asarray(labels)
    if is_index_labels(labels, rows) and axis is None:
        raise ValueError("Integer labels need a class `axis`; got axis=None.")
    class_weight = _class_weight(weight, rows.z.shape[-1], rows.z.dtype)
    if is_index_labels(labels, rows):
        targets = make_targets(
            rows,
            labels,
            class_weight=class_weight,
            label_smoothing=label_smoothing,
            ignore_index=ignore_index,
        )
        losses = row_losses(rows.z, targets, z_loss=z_loss)
        return reduce_loss(losses, weights=targets.example_weight, reduction=reduction)
    labels = probability_labels(rows, labels, ignore_index=ignore_index)
    q, counted = _probability_weights(rows, labels, class_weight=class_weight, label_smoothing=label_smoothing)
    lam = None if is_zero(z_loss) else lax.stop_gradient(jnp.asarray(z_loss, rows.z.dtype))
    losses = _dense_kernel(rows.z, q, lam, counted)  # zeroes the rows that do not count, whatever q holds there
    return reduce_loss(losses, weights=counted.astype(rows.z.dtype), reduction=reduction)


def safe_softmax_cross_entropy(logits: Any, labels: Any, **options: Any) -> jax.Array:
    """:func:`softmax_cross_entropy` under the name of :func:`optax.losses.safe_softmax_cross_entropy`.

    optax's safe variant exists because its plain one gives NaN for ``-inf`` logits with zero labels; jxent's
    :func:`softmax_cross_entropy` already takes ``0 log 0 = 0`` there (with zero gradients), so this is the same
    function. Keyword ``options`` are those of :func:`softmax_cross_entropy`.
    """
    return softmax_cross_entropy(logits, labels, **options)
