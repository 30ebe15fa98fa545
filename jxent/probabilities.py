"""Cross-entropy on probabilities (not logits): the categorical and the binary form.

Both use a clamped logarithm, as ``torch.nn.BCELoss`` does: the value is :math:`\\max(\\log p, -100)` and its
derivative is :math:`1 / \\max(p, 10^{-12})` (:math:`3.1 \\cdot 10^{-5}` for float16 inputs, so that the gradient
fits the input dtype). A probability of exactly 0 or 1 gives a finite loss and a finite gradient, and
:math:`0 \\log 0 = 0`. Prefer the logit forms (:func:`jxent.softmax_cross_entropy`,
:func:`jxent.sigmoid_binary_cross_entropy`) when logits are available: they are exact where this clamps.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jxent import _axes, _checks, binary
from jxent._targets import class_weight_vector, make_targets, prepare_rows
from jxent._typing import Reduction
from jxent.binary import apply_mask_and_reduce, smooth_binary
from jxent.reduction import reduce_loss

__all__ = ["LOG_FLOOR", "binary_cross_entropy", "categorical_cross_entropy", "clamped_log"]

LOG_FLOOR = -100.0
"""Lowest value of ``clamped_log`` (torch's ``BCELoss`` floor)."""

GRAD_FLOOR = 1e-12
"""Smallest probability used in the derivative ``1 / p`` of ``clamped_log`` (raised for float16, below)."""


def grad_floor(dtype: Any) -> float:
    """The derivative floor for inputs of ``dtype``: ``1e-12``, or ``2 / max(dtype)`` if ``1 / 1e-12`` would overflow
    (float16: ``3.1e-5``), so gradients returned in the input dtype stay finite."""
    return max(GRAD_FLOOR, 2.0 / float(jnp.finfo(dtype).max))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def clamped_log(p: jax.Array, floor: float = GRAD_FLOOR) -> jax.Array:
    """``max(log p, -100)`` with derivative ``1 / max(p, floor)``: finite at ``p = 0``."""
    return jnp.maximum(jnp.log(p), LOG_FLOOR)


@clamped_log.defjvp
def _clamped_log_jvp(floor, primals, tangents):
    (p,), (dp,) = primals, tangents
    return clamped_log(p, floor), dp / jnp.maximum(p, floor)


def _zero_masked_labels(labels: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Floating (distribution) labels broadcast to ``mask``'s shape, with the masked entries set to 0, so that a
    masked NaN or infinite label (or a NaN class weight on a masked class) gives a zero gradient rather than
    ``0 * NaN``. Other labels (class indices, integer or boolean distributions, labels that do not broadcast, which
    :func:`make_targets` then reports) are returned as they are."""
    if mask is None or not jnp.issubdtype(labels.dtype, jnp.floating):
        return labels
    try:
        shape = jnp.broadcast_shapes(labels.shape, mask.shape)
    except ValueError:
        return labels
    if shape != tuple(mask.shape):
        return labels
    return jnp.where(mask, labels, jnp.zeros((), labels.dtype))


def categorical_cross_entropy(
    probabilities: ArrayLike,
    labels: ArrayLike,
    axis: _axes.Axis | None = -1,
    where: ArrayLike | None = None,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    reduction: Reduction = "none",
) -> jax.Array:
    """Cross-entropy of predicted probabilities: :math:`-\\sum_c q_c \\log p_c`.

    The form the tutorials use: predictions ``[0.4, 0.4, 0.2]`` against the one-hot label of the second class give
    :math:`-\\ln 0.4 = 0.916` nats. Keras' ``categorical_crossentropy(from_logits=False)`` without its
    renormalisation; probabilities are used as given. ``labels`` may be probability vectors of ``probabilities``'
    shape or integer class indices of the batch shape; ``q`` follows
    :func:`jxent.softmax_cross_entropy` (class ``weight``, ``label_smoothing``, ``ignore_index``).

    Args:
      probabilities: Predicted probabilities ``[..., num_classes]``.
      labels: Target distributions of the same shape, or integer class indices ``[...]``.
      axis: Class axis or axes.
      where: Boolean mask of the shape of ``probabilities`` or of the batch shape. Masked entries give loss 0
        and gradient 0, whatever they hold (NaN or infinite probabilities or labels included).
      weight, ignore_index, label_smoothing, reduction: As in :func:`jxent.softmax_cross_entropy`.

    Returns:
      Losses ``[...]`` in nats (float32 for 16-bit inputs), or a scalar when reduced. Uses
      ``clamped_log``, so the loss is at most ``100 * sum(q)``.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> print(np.asarray(jxent.categorical_cross_entropy(jnp.array([[0.7, 0.2, 0.1]]), jnp.array([0]))).round(4))
      [0.3567]
    """
    probabilities = _checks.as_float_array(probabilities, "probabilities")
    _checks.check_scalar_range(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    _checks.check_reduction(reduction)
    _checks.check_ignore_index(ignore_index)
    layout = _axes.class_layout(axis, probabilities.ndim, "probabilities")
    mask = _axes.expand_where(where, layout, probabilities.shape)
    dtype = _checks.compute_dtype(probabilities.dtype)
    # Masked probabilities and labels are set to 0 first: a NaN or infinite value there must not reach the
    # gradient as 0 * NaN (the masked log-probabilities are -inf below either way).
    p = probabilities if mask is None else binary.zero_masked(mask, probabilities)[0]
    labels = _zero_masked_labels(jnp.asarray(labels), mask)
    floor = grad_floor(probabilities.dtype)
    rows = prepare_rows(p, axis=axis, where=where, name="probabilities", transform=lambda x: clamped_log(x, floor))
    log_p = rows.z
    class_weight = class_weight_vector(weight, log_p.shape[-1], dtype)
    targets = make_targets(
        rows,
        labels,
        class_weight=class_weight,
        label_smoothing=label_smoothing,
        ignore_index=ignore_index,
    )
    log_p = jnp.where(targets.counted[..., None], log_p, 0.0)
    log_p = jnp.where((targets.q == 0) & (log_p == -jnp.inf), 0.0, log_p)
    losses = jnp.sum(targets.q * -log_p, axis=-1)
    return reduce_loss(losses, weights=targets.example_weight, reduction=reduction)


def binary_cross_entropy(
    probabilities: ArrayLike,
    labels: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    label_smoothing: ArrayLike = 0.0,
    where: ArrayLike | None = None,
    reduction: Reduction = "none",
) -> jax.Array:
    """Binary cross-entropy of probabilities: :math:`-[y \\log p + (1-y) \\log(1-p)]`, elementwise.

    ``torch.nn.functional.binary_cross_entropy`` semantics: logs clamped at -100, derivative
    :math:`(p - y) / \\max(p(1-p), \\cdot)` kept finite through ``clamped_log``, so ``p`` of exactly 0 or 1
    gives a finite loss and gradient.

    Args:
      probabilities: Predicted probabilities of the positive class.
      labels: Labels in ``[0, 1]``, broadcastable to ``probabilities``.
      weight: Element weights, broadcastable.
      label_smoothing: :math:`\\varepsilon`; labels become :math:`y(1-\\varepsilon)+\\varepsilon/2`.
      where: Boolean mask; masked elements give 0 (and gradient 0, even for a NaN or infinite probability or
        label there) and do not count in ``"mean"``.
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.

    Returns:
      Elementwise losses in float32 (float64 for float64 inputs), or a scalar when reduced.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> print(np.asarray(jxent.binary_cross_entropy(jnp.array([0.9, 0.2]), jnp.array([1.0, 0.0]))).round(4))
      [0.1054 0.2231]
    """
    probabilities = _checks.as_float_array(probabilities, "probabilities")
    _checks.check_scalar_range(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    _checks.check_reduction(reduction)
    labels = jnp.asarray(labels)
    _checks.check_broadcastable(probabilities.shape, labels, "labels")
    dtype = _checks.compute_dtype(probabilities.dtype)
    p = probabilities.astype(dtype)
    y = smooth_binary(labels.astype(dtype), label_smoothing)
    # Masked elements are set to 0 before the loss (as for the sigmoid losses): a NaN or infinite probability or
    # label there then gives loss 0 and gradient 0, not 0 * NaN.
    p, y = binary.zero_masked(where, *jnp.broadcast_arrays(p, y))
    floor = grad_floor(probabilities.dtype)
    losses = 0.0 - (y * clamped_log(p, floor) + (1.0 - y) * clamped_log(1.0 - p, floor))
    return apply_mask_and_reduce(losses, weight=weight, where=where, reduction=reduction)
