"""Dense target vectors: logits laid out with the class axis last, and the target weights ``q`` of each row.

The softmax losses on ``[..., V]`` arrays (cross-entropy on probability labels, focal, poly, generalized
cross-entropy and the losses on probabilities) all read their logits through :func:`prepare_rows` and their labels
through :func:`make_targets`, so ``axis``, ``where``, class weights, label smoothing and ``ignore_index`` mean the
same thing in each. The coefficients of the integer-label target come from
:func:`jxent._rowmath.integer_label_coefficients`, shared with the fused and sharded losses.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jxent import _axes, _checks
from jxent._options import CrossEntropyOptions, is_zero
from jxent._rowmath import integer_label_coefficients, transform_logits

__all__ = [
    "IntegerCoefficients",
    "Rows",
    "Targets",
    "class_weight_vector",
    "integer_coefficients",
    "is_index_labels",
    "make_targets",
    "prepare_rows",
    "probability_labels",
    "probability_weights",
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


def prepare_rows(
    logits: Any,
    *,
    axis: _axes.Axis | None,
    where: Any,
    options: CrossEntropyOptions | None = None,
    name: str = "logits",
    transform: Any = None,
) -> Rows:
    """Checks ``logits``, applies the logit transforms of ``options`` (or ``transform``) and moves the class axes
    last."""
    logits = _checks.as_float_array(logits, name)
    layout = _axes.class_layout(axis, logits.ndim, name)
    mask = _axes.expand_where(where, layout, logits.shape)
    if transform is not None:
        z = transform(logits.astype(_checks.compute_dtype(logits.dtype)))
    else:
        z = transform_logits(logits, options or CrossEntropyOptions())
    z = layout.to_last(z)
    class_mask = row_mask = None
    if mask is not None:
        class_mask = layout.to_last(mask)
        z = jnp.where(class_mask, z, -jnp.inf)
        row_mask = jnp.any(class_mask, axis=-1)
    return Rows(z, row_mask, class_mask, layout, layout.batch_shape(logits.shape), tuple(logits.shape))


def class_weight_vector(weight: Any, num_classes: int, dtype: Any, name: str = "weight") -> jax.Array | None:
    """Per-class weights ``[V]`` as a constant of ``dtype`` (no gradient), or ``None``."""
    if weight is None:
        return None
    w = _checks.as_float_array(weight, name)
    if w.shape != (num_classes,):
        raise ValueError(
            f"`{name}` must hold one weight per class, shape ({num_classes},); got shape {tuple(w.shape)}."
        )
    return lax.stop_gradient(w.astype(dtype))


def counted_rows(rows: Rows) -> tuple[jax.Array, jax.Array]:
    """Per-class presence (finite or NaN logit) and the rows that have a present class.

    ``counted`` comes from the row maximum (shared with the softmax statistics) rather than ``any(present)``, which
    would cost another pass over the logits; a NaN maximum counts, so NaN propagates.
    """
    present = rows.z != -jnp.inf
    counted = jnp.max(rows.z, axis=-1) != -jnp.inf
    if rows.row_mask is not None:
        counted = counted & rows.row_mask
    return present, counted


class IntegerCoefficients(NamedTuple):
    """The integer-label target ``q = a onehot(y) + b spread`` of each row, without building it."""

    a: jax.Array  # [batch...]; NaN for an out-of-range label, 0 for rows that do not count
    b: jax.Array | None  # [batch...]; None without label smoothing
    spread: jax.Array | None  # [batch..., V]: the class weight (or 1) on present classes, 0 elsewhere
    counted: jax.Array  # [batch...]
    example_weight: jax.Array  # [batch...]: the "mean" denominators


def integer_coefficients(
    rows: Rows,
    labels: jax.Array,
    *,
    class_weight: jax.Array | None,
    label_smoothing: Any,
    ignore_index: int | None,
) -> IntegerCoefficients:
    """The coefficients of :func:`jxent._rowmath.integer_label_coefficients` for the rows of ``rows``, with the
    smoothing mass spread over each row's present classes."""
    present, counted = counted_rows(rows)
    smoothing = not is_zero(label_smoothing)
    a, b, counted, example_weight = integer_label_coefficients(
        labels,
        rows.z.shape[-1],
        class_weight=class_weight,
        label_smoothing=label_smoothing,
        num_present=jnp.sum(present, axis=-1) if smoothing else None,
        ignore_index=ignore_index,
        counted=counted,
        dtype=rows.z.dtype,
    )
    spread = None
    if smoothing:
        spread = present.astype(rows.z.dtype) if class_weight is None else jnp.where(present, class_weight, 0.0)
    return IntegerCoefficients(a, b, spread, counted, example_weight)


def integer_targets(
    rows: Rows,
    labels: jax.Array,
    *,
    class_weight: jax.Array | None,
    label_smoothing: Any,
    ignore_index: int | None,
) -> Targets:
    """Target weights ``q = a onehot(y) + b w [present]`` for integer labels, as a ``[batch..., V]`` array."""
    c = integer_coefficients(
        rows, labels, class_weight=class_weight, label_smoothing=label_smoothing, ignore_index=ignore_index
    )
    onehot = jnp.arange(rows.z.shape[-1]) == jnp.where(labels < 0, rows.z.shape[-1], labels)[..., None]
    q = jnp.where(onehot, c.a[..., None], 0.0)
    q = jnp.where(jnp.isnan(c.a)[..., None], jnp.nan, q)
    if c.b is not None and c.spread is not None:
        q = q + c.b[..., None] * c.spread
    return Targets(q, c.counted, c.example_weight)


def probability_weights(
    rows: Rows,
    labels: jax.Array,
    *,
    class_weight: jax.Array | None,
    label_smoothing: Any,
) -> tuple[jax.Array, jax.Array]:
    """``(q, counted)``: ``w * ((1 - eps) t + eps / K)`` on present classes, not yet zeroed on rows that do not count.

    Without smoothing, class weights or a ``where`` mask, ``q`` is ``t`` itself (no pass over ``[..., V]``).
    """
    present, counted = counted_rows(rows)
    dtype = rows.z.dtype
    t = labels.astype(dtype)
    if not is_zero(label_smoothing):
        eps = lax.stop_gradient(jnp.asarray(label_smoothing, dtype))
        num_present = jnp.maximum(jnp.sum(present, axis=-1, keepdims=True), 1).astype(dtype)
        t = (1.0 - eps) * t + jnp.where(present, eps / num_present, 0.0)
    if rows.class_mask is not None:
        t = jnp.where(rows.class_mask, t, 0.0)  # optax: masked classes are left out of the sum
        if class_weight is not None:  # a NaN weight on a masked class must not reach the gradient
            class_weight = jnp.where(rows.class_mask, class_weight, 0.0)
    if class_weight is not None:
        t = t * class_weight
    return t, counted


def is_index_labels(labels: jax.Array, rows: Rows) -> bool:
    """Integer labels of the batch shape are class indices; anything else is a (broadcastable) distribution."""
    return bool(jnp.issubdtype(labels.dtype, jnp.integer)) and labels.shape == rows.batch_shape


def probability_labels(rows: Rows, labels: jax.Array, *, ignore_index: int | None) -> jax.Array:
    """Checks probability labels and lays them out like ``rows.z`` (``[batch..., V]``)."""
    if ignore_index is not None:
        raise ValueError("`ignore_index` applies to integer labels only; mask probability labels with `where`.")
    if labels.dtype == jnp.bool_:  # one-hot masks, as optax accepts them
        labels = labels.astype(rows.z.dtype)
    if not (jnp.issubdtype(labels.dtype, jnp.floating) or jnp.issubdtype(labels.dtype, jnp.integer)):
        raise TypeError(f"`labels` must be numeric; got dtype {labels.dtype}.")
    try:
        _checks.check_broadcastable(rows.shape, labels, "labels")
    except ValueError as e:
        if labels.shape != rows.batch_shape:
            raise
        raise ValueError(
            f"{e} Labels of the batch shape {rows.batch_shape} are class indices and must be integers (got dtype "
            f"{labels.dtype}); pass integer labels, or target distributions of the logits' shape {rows.shape}."
        ) from None
    return rows.layout.to_last(jnp.broadcast_to(labels, rows.shape))


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
    q, counted = probability_weights(rows, labels, class_weight=class_weight, label_smoothing=label_smoothing)
    q = jnp.where(counted[..., None], q, 0.0)
    return Targets(q, counted, counted.astype(rows.z.dtype))
