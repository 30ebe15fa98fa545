"""Softmax cross-entropy with integer or probability labels on dense ``[..., V]`` logits.

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

The row formulas, the softmax statistics and their closed-form derivatives live in :mod:`jxent._rowmath`, shared
with the fused and vocabulary-sharded losses; this module holds the two dense ``custom_jvp`` kernels (integer labels
without building ``q``; probability labels) and the public functions. The gradient is exactly
``(sum(q) + 2 z_loss lse) * softmax(z) - q`` with no NaN at ``-inf`` logits.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from jxent import _axes, _checks
from jxent._options import CrossEntropyOptions
from jxent._rowmath import (
    integer_target_log_p,
    log_probabilities,
    logit_gradient,
    logsumexp_of,
    probabilities,
    row_loss,
    row_stats,
    softmax_coefficient,
    target_mass,
)
from jxent._targets import (
    Rows,
    class_weight_vector,
    integer_coefficients,
    is_index_labels,
    prepare_rows,
    probability_labels,
    probability_weights,
)
from jxent._typing import Reduction
from jxent.reduction import reduce_loss

__all__ = [
    "safe_softmax_cross_entropy",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
]


def _z_loss(options: CrossEntropyOptions, dtype: Any) -> jax.Array | None:
    return options.arrays(dtype).z_loss if options.has_z_loss else None


# Probability-label kernel. On CPU, XLA lowers plain reductions to YNNPACK fusions, which absorb only arithmetic
# producers (add, mul, min, max, exp, log, ...): a select or comparison inside a reduced expression makes XLA write
# its operands out as separate ``[..., V]`` arrays. So the normaliser is the select-free sum of
# :func:`jxent._rowmath.row_stats`, and the guarded sum ``-sum(q log p)`` (0 log 0 = 0, +inf logits) is one
# two-output reduction, which XLA emits itself with the selects fused, together with ``sum(q)``. A forward and
# backward pass then reads ``z`` four times (maximum, normaliser, loss, gradient) and ``q`` twice, and writes the
# gradient once.


def _sum_pair(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(sum(a), sum(b))`` over the last axis in one pass (a variadic reduction, so its inputs may hold selects)."""
    zero = jnp.zeros((), a.dtype)
    return lax.reduce((a, b), (zero, zero), lambda x, y: (x[0] + y[0], x[1] + y[1]), (a.ndim - 1,))


@jax.custom_jvp
def _probability_kernel(
    z: jax.Array, q: jax.Array, lam: jax.Array | None, counted: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(loss, sum(q))`` per row: ``-sum(q log_softmax(z)) + lam lse(z)**2`` (0 where not ``counted``).

    Rows that do not count give 0 with a zero gradient whatever (finite) ``q`` holds there. Gradient w.r.t. ``z``:
    ``(sum(q) + 2 lam lse) softmax(z) - q``; w.r.t. ``q``: ``-log_softmax(z)`` (0 at absent classes).
    """
    stats = row_stats(z)
    q_log_p, q_sum = _sum_pair(jnp.where(q == 0, 0.0, q * stats.log_prob(z)), q)
    return row_loss(q_log_p=q_log_p, lse=stats.lse[..., 0], z_loss=lam, counted=counted), q_sum


def _probability_kernel_jvp(primals, tangents):
    z, q, lam, counted = primals
    dz, dq = tangents[0], tangents[1]
    loss, q_sum = _probability_kernel(z, q, lam, counted)
    stats = lax.stop_gradient(row_stats(z))  # computed by the line above too: XLA computes them once
    tangent = jnp.zeros_like(loss)
    q_sum_tangent = jnp.zeros_like(q_sum)
    if not isinstance(dz, SymbolicZero):
        lse = logsumexp_of(z, stats)[..., 0] if lam is not None else stats.lse[..., 0]
        c = softmax_coefficient(target_mass=q_sum, lse=lse, z_loss=lam, counted=counted)
        g = c[..., None] * probabilities(z, stats) - jnp.where(counted[..., None], q, 0.0)
        tangent = tangent + jnp.sum(g * dz, axis=-1)
    if not isinstance(dq, SymbolicZero):
        # d loss / d q = -log p; taken as 0 at absent classes (log p = -inf), keeping the tangent linear in dq.
        log_p = jnp.where(counted[..., None], log_probabilities(z, stats), -jnp.inf)
        tangent = tangent - jnp.sum(jnp.where(log_p == -jnp.inf, 0.0, log_p) * dq, axis=-1)
        q_sum_tangent = jnp.sum(dq, axis=-1)
    return (loss, q_sum), (tangent, q_sum_tangent)


_probability_kernel.defjvp(_probability_kernel_jvp, symbolic_zeros=True)


def probability_row_losses(rows: Rows, q: jax.Array, counted: jax.Array, options: CrossEntropyOptions) -> jax.Array:
    """``-sum(q * log_softmax(z)) + z_loss * lse(z)**2`` per row of ``rows.z``, 0 (zero gradient) where not counted.

    ``0 * log 0 = 0``, so absent classes with no target mass contribute nothing; target mass on an absent class
    gives ``+inf``. Gradient w.r.t. ``z``: ``(sum(q) + 2 z_loss lse) softmax(z) - q``; w.r.t. ``q``:
    ``-log_softmax(z)``.
    """
    return _probability_kernel(rows.z, q, _z_loss(options, rows.z.dtype), counted)[0]


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
    """Integer-label row loss for ``q = a onehot(labels) + b spread`` without building ``q``.

    ``labels`` must be in range (out-of-range rows carry ``a = NaN``); ``spread`` is the class weight on present
    classes and 0 elsewhere.
    """
    stats = row_stats(z, select_free=False)
    log_p_y = stats.log_prob(jnp.take_along_axis(z, labels[..., None], axis=-1))[..., 0]
    spread_log_p = None
    if b is not None and spread is not None:
        shifted = jnp.sum(jnp.where(spread == 0, 0.0, spread * stats.shift(z)), axis=-1)
        spread_log_p = shifted - jnp.sum(spread, axis=-1) * stats.log_total[..., 0]
    q_log_p = integer_target_log_p(a=a, log_p_y=log_p_y, b=b, spread_log_p=spread_log_p)
    return row_loss(q_log_p=q_log_p, lse=stats.lse[..., 0], z_loss=lam, counted=counted)


@_integer_kernel.defjvp
def _integer_kernel_jvp(primals, tangents):
    z, labels, a, b, spread, lam, counted = primals
    loss = _integer_kernel(z, labels, a, b, spread, lam, counted)
    stats = lax.stop_gradient(row_stats(z, select_free=False))
    # d loss / d z = (sum(q) + 2 lam lse) softmax(z) - a onehot(y) - b spread, fused in one pass.
    mass = target_mass(a=a, b=b, spread_sum=None if spread is None else jnp.sum(spread, axis=-1))
    lse = logsumexp_of(z, stats)[..., 0] if lam is not None else stats.lse[..., 0]
    c = softmax_coefficient(target_mass=mass, lse=lse, z_loss=lam, counted=counted)
    g = logit_gradient(
        coef=c[..., None],
        p=probabilities(z, stats),
        a=a[..., None],
        is_target=jnp.arange(z.shape[-1]) == labels[..., None],
        b=None if b is None else b[..., None],
        spread=spread,
    )
    return loss, jnp.sum(g * tangents[0], axis=-1)


def integer_row_losses(
    rows: Rows,
    labels: jax.Array,
    *,
    class_weight: jax.Array | None,
    options: CrossEntropyOptions,
) -> tuple[jax.Array, jax.Array]:
    """Per-row integer-label cross-entropy and the ``"mean"`` weights, without a ``[..., V]`` target vector: the
    gradient is one fused elementwise pass over the logits."""
    z = rows.z
    num_classes = z.shape[-1]
    c = integer_coefficients(
        rows,
        labels,
        class_weight=class_weight,
        label_smoothing=options.label_smoothing,
        ignore_index=options.ignore_index,
    )
    safe_labels = jnp.where((labels >= 0) & (labels < num_classes), labels, 0)
    losses = _integer_kernel(z, safe_labels, c.a, c.b, c.spread, _z_loss(options, z.dtype), c.counted)
    return losses, c.example_weight


def _integer_loss(rows: Rows, labels: jax.Array, weight: Any, options: CrossEntropyOptions) -> jax.Array:
    class_weight = class_weight_vector(weight, rows.z.shape[-1], rows.z.dtype)
    losses, example_weight = integer_row_losses(rows, labels, class_weight=class_weight, options=options)
    return reduce_loss(losses, weights=example_weight, reduction=options.reduction)


def softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: _axes.Axis = -1,
    where: ArrayLike | None = None,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "none",
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

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
      >>> print(np.asarray(jxent.softmax_cross_entropy_with_integer_labels(logits, jnp.array([0, 1]))).round(4))
      [0.1698 0.5514]
      >>> y = jnp.array([0, -100])
      >>> loss = jxent.softmax_cross_entropy_with_integer_labels(logits, y, ignore_index=-100, reduction='mean')
      >>> round(float(loss), 4)
      0.1698
    """
    options = CrossEntropyOptions.pick(locals())
    rows = prepare_rows(logits, axis=axis, where=where, options=options)
    labels = _checks.as_int_array(labels, "labels")
    if labels.shape != rows.batch_shape:
        raise ValueError(
            f"`labels` must have the batch shape of `logits` {rows.batch_shape} (logits shape without the "
            f"class axis); got shape {tuple(labels.shape)}."
        )
    return _integer_loss(rows, labels, weight, options)


def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: _axes.Axis | None = -1,
    where: ArrayLike | None = None,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "none",
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

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> logits = jnp.array([[2.0, 0.0, -1.0]])
      >>> print(np.asarray(jxent.softmax_cross_entropy(logits, jnp.array([[1.0, 0.0, 0.0]]))).round(4))
      [0.1698]
      >>> soft = jnp.array([[0.5, 0.5, 0.0]])
      >>> print(np.asarray(jxent.softmax_cross_entropy(logits, soft, label_smoothing=0.1)).round(4))
      [1.2365]
    """
    options = CrossEntropyOptions.pick(locals())
    rows = prepare_rows(logits, axis=axis, where=where, options=options)
    labels = jnp.asarray(labels)
    if is_index_labels(labels, rows):
        if axis is None:
            raise ValueError("Integer labels need a class `axis`; got axis=None.")
        return _integer_loss(rows, _checks.widen_labels(labels), weight, options)
    labels = probability_labels(rows, labels, ignore_index=ignore_index)
    class_weight = class_weight_vector(weight, rows.z.shape[-1], rows.z.dtype)
    q, counted = probability_weights(rows, labels, class_weight=class_weight, label_smoothing=label_smoothing)
    losses = probability_row_losses(rows, q, counted, options)  # zeroes the rows that do not count
    return reduce_loss(losses, weights=counted.astype(rows.z.dtype), reduction=reduction)


def safe_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: _axes.Axis | None = -1,
    where: ArrayLike | None = None,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "none",
) -> jax.Array:
    """:func:`softmax_cross_entropy` under the name of :func:`optax.losses.safe_softmax_cross_entropy`.

    optax's safe variant exists because its plain one gives NaN for ``-inf`` logits with zero labels; jxent's
    :func:`softmax_cross_entropy` already takes ``0 log 0 = 0`` there (with zero gradients), so this is the same
    function, with the same arguments.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> logits = jnp.array([[0.0, -jnp.inf]])
      >>> print(np.asarray(jxent.safe_softmax_cross_entropy(logits, jnp.array([[1.0, 0.0]]))))
      [0.]
    """
    return softmax_cross_entropy(
        logits,
        labels,
        axis,
        where,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        soft_cap=soft_cap,
        temperature=temperature,
        reduction=reduction,
    )
