"""Vocabulary-parallel losses on global arrays: a :class:`jax.sharding.Mesh`, its vocabulary axis and, optionally,
a batch axis. Each wrapper checks its arguments, lays the inputs out as its ``shard_map`` expects and runs the
matching function of :mod:`jxent.parallel.vocab_parallel` inside it.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from jax.typing import ArrayLike

from jxent import _checks
from jxent._typing import MeshAxes, Reduction, Schedule, WeightLayout
from jxent.fused.config import WEIGHT_LAYOUTS
from jxent.parallel.vocab_parallel import (
    vocab_parallel_linear_softmax_cross_entropy,
    vocab_parallel_softmax_cross_entropy,
)

__all__ = ["sharded_linear_softmax_cross_entropy", "sharded_softmax_cross_entropy"]


def _mesh_axis_size(mesh: Mesh, axis: Any, name: str) -> int:
    axes = axis if isinstance(axis, tuple) else (axis,)
    for a in axes:
        if a not in mesh.shape:
            raise ValueError(f"`{name}` {a!r} is not an axis of the mesh (axes {tuple(mesh.axis_names)}).")
    return math.prod(mesh.shape[a] for a in axes)


def placed(mesh: Mesh, specs: tuple, arrays: tuple) -> tuple:
    """``arrays`` laid out as ``shard_map``'s ``in_specs`` say. On a mesh with ``Explicit`` axes (the default of
    ``jax.make_mesh``) an array's sharding is part of its type and must already match; on ``Auto`` axes XLA
    reshards as needed, and the arrays are passed as they are."""
    if not any(t == AxisType.Explicit for t in getattr(mesh, "axis_types", ())):
        return arrays
    return tuple(
        None if a is None else jax.sharding.reshard(a, NamedSharding(mesh, s))
        for a, s in zip(arrays, specs, strict=True)
    )


def check_divides(total: int, mesh: Mesh, axis: Any, what: str, name: str) -> None:
    size = _mesh_axis_size(mesh, axis, name)
    if total % size:
        raise ValueError(
            f"The {what} ({total}) must be divisible by the number of devices along `{name}` {axis!r} ({size}); "
            f"pad it to a multiple of {size} (e.g. {-(-total // size) * size}) or choose another mesh."
        )


def rows_spec(batch_ndim: int, extra_ndim: int, batch_axis: Any) -> tuple:
    """The ``PartitionSpec`` entries of an array with the batch shape first (its first axis over ``batch_axis``)
    followed by ``extra_ndim`` unsplit axes."""
    return (*_batch_spec(batch_ndim, batch_axis), *([None] * extra_ndim))


def _batch_spec(ndim: int, batch_axis: Any) -> tuple:
    if ndim == 0:
        return ()
    return (batch_axis, *([None] * (ndim - 1)))


def sharded_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    mesh: Mesh,
    vocab_axis: MeshAxes,
    batch_axis: MeshAxes | None = None,
    class_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "mean",
) -> jax.Array:
    """Vocabulary-parallel :func:`jxent.softmax_cross_entropy_with_integer_labels` on global arrays.

    Splits the class axis of ``logits [..., V]`` over the mesh axis ``vocab_axis`` (and, optionally, the first
    batch axis over ``batch_axis``) and runs :func:`vocab_parallel_softmax_cross_entropy` in :func:`jax.shard_map`.
    Works under ``jit`` and eagerly, on meshes with ``Auto`` or ``Explicit`` axes (``jax.make_mesh``'s default);
    inputs not already sharded that way are resharded first.

    Args:
      logits: ``[..., V]``; ``V`` must be divisible by the size of ``vocab_axis`` (``ValueError`` otherwise).
      labels: Integer labels ``[...]``.
      mesh: The device mesh.
      vocab_axis: Mesh axis name (or tuple of names) for the vocabulary.
      batch_axis: Optional mesh axis for the first batch axis (data parallelism).
      class_weight: Per-class weights ``[V]``.
      ignore_index, label_smoothing, z_loss, soft_cap, temperature: As in the dense loss.
      reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Returns:
      The loss, equal to the dense loss on the gathered logits.

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> mesh = jax.make_mesh((jax.device_count(),), ("vocab",))  # the device count must divide V = 8
      >>> logits = jnp.arange(16.0).reshape(2, 8) % 5 - 2.0  # [N, V]
      >>> labels = jnp.array([0, 6])
      >>> f = jax.jit(lambda z, y: jxent.sharded_softmax_cross_entropy(z, y, mesh=mesh, vocab_axis="vocab"))
      >>> loss = f(logits, labels)
      >>> dense = jxent.softmax_cross_entropy_with_integer_labels(logits, labels, reduction="mean")
      >>> bool(jnp.allclose(loss, dense))
      True
    """
    logits = _checks.as_float_array(logits, "logits")
    labels = _checks.as_int_array(labels, "labels")
    if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"`labels` must have the batch shape of `logits` {tuple(logits.shape[:-1])}; got shape "
            f"{tuple(labels.shape)}."
        )
    check_divides(logits.shape[-1], mesh, vocab_axis, "vocabulary size V", "vocab_axis")
    if batch_axis is not None and labels.ndim:
        check_divides(labels.shape[0], mesh, batch_axis, "first batch dimension", "batch_axis")
    _checks.check_reduction(reduction)
    b_spec = _batch_spec(labels.ndim, batch_axis)
    cw = None if class_weight is None else jnp.asarray(class_weight)

    def local(x, y, w):
        return vocab_parallel_softmax_cross_entropy(
            x,
            y,
            axis_name=vocab_axis,
            class_weight=w,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            soft_cap=soft_cap,
            temperature=temperature,
            reduction=reduction,
            batch_axis_name=batch_axis if labels.ndim else None,  # a 0-d batch is not split over it
        )

    out_spec = PartitionSpec(*b_spec) if reduction == "none" else PartitionSpec()
    in_specs = (PartitionSpec(*b_spec, vocab_axis), PartitionSpec(*b_spec), PartitionSpec(vocab_axis))
    fn = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=out_spec)
    return fn(*placed(mesh, in_specs, (logits, labels, cw)))


def sharded_linear_softmax_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    mesh: Mesh,
    vocab_axis: MeshAxes,
    batch_axis: MeshAxes | None = None,
    bias: ArrayLike | None = None,
    class_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
    token_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Vocabulary-parallel :func:`jxent.linear_softmax_cross_entropy` on global arrays.

    ``weight [D, V]`` (``[V, D]`` with ``weight_layout="vd"``; and ``bias``/``class_weight``) are split along ``V``
    over ``vocab_axis``; ``hidden`` is replicated over it (and optionally split along its first axis over
    ``batch_axis``). Runs :func:`vocab_parallel_linear_softmax_cross_entropy` in :func:`jax.shard_map`; use under
    ``jit``. Meshes with ``Auto`` or ``Explicit`` axes (``jax.make_mesh``'s default) both work; inputs not already
    sharded that way are resharded first.

    Args:
      hidden: ``[..., D]``.
      weight: ``[D, V]`` (or ``[V, D]``, see ``weight_layout``); ``V`` must be divisible by the size of
        ``vocab_axis`` (``ValueError`` otherwise).
      labels: Integer labels ``[...]``.
      mesh, vocab_axis, batch_axis: As in :func:`sharded_softmax_cross_entropy`.
      bias, class_weight, ignore_index, label_smoothing, z_loss, soft_cap, temperature: As in
        :func:`jxent.linear_softmax_cross_entropy`.
      reduction, chunk_size, token_chunk_size, schedule, weight_layout: As in
        :func:`jxent.linear_softmax_cross_entropy`; ``chunk_size`` is the block of each device's slice.
      token_weight, where: As in :func:`jxent.linear_softmax_cross_entropy`, split like ``labels``.

    Returns:
      The loss, equal to :func:`jxent.linear_softmax_cross_entropy` on one device.

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> mesh = jax.make_mesh((jax.device_count(),), ("vocab",))  # the device count must divide V = 8
      >>> h = jnp.array([[1.0, -1.0], [0.5, 2.0]])  # [N, D]
      >>> w = jnp.array([[0.0, 1.0, -1.0, 0.5, 2.0, 0.0, -0.5, 1.5],
      ...                [1.0, 0.0, 0.5, -1.0, 0.0, 2.0, 1.0, -2.0]])  # [D, V]
      >>> labels = jnp.array([0, 6])
      >>> step = jax.jit(jax.value_and_grad(
      ...     lambda w: jxent.sharded_linear_softmax_cross_entropy(h, w, labels, mesh=mesh, vocab_axis="vocab")))
      >>> loss, grad = step(w)
      >>> bool(jnp.allclose(loss, jxent.linear_softmax_cross_entropy(h, w, labels))), grad.shape
      (True, (2, 8))
    """
    hidden = _checks.as_float_array(hidden, "hidden")
    weight = _checks.as_float_array(weight, "weight")
    labels = _checks.as_int_array(labels, "labels")
    if weight_layout not in WEIGHT_LAYOUTS:
        raise ValueError(f"`weight_layout` must be one of {WEIGHT_LAYOUTS}; got {weight_layout!r}.")
    v_axis = 1 if weight_layout == "dv" else 0
    if weight.ndim != 2:
        expected = "[D, V]" if weight_layout == "dv" else "[V, D]"
        raise ValueError(f"`weight` must have shape {expected}; got shape {tuple(weight.shape)}.")
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(
            f"`labels` must have shape {tuple(hidden.shape[:-1])} (hidden's shape without D); got shape "
            f"{tuple(labels.shape)}."
        )
    check_divides(weight.shape[v_axis], mesh, vocab_axis, "vocabulary size V", "vocab_axis")
    if batch_axis is not None and labels.ndim:
        check_divides(labels.shape[0], mesh, batch_axis, "first batch dimension", "batch_axis")
    _checks.check_reduction(reduction)
    b_spec = _batch_spec(labels.ndim, batch_axis)
    bias = None if bias is None else jnp.asarray(bias)
    cw = None if class_weight is None else jnp.asarray(class_weight)
    tw = None if token_weight is None else jnp.asarray(token_weight)
    mask = None if where is None else jnp.asarray(where)

    def local(h, w, y, b, c, t, m):
        return vocab_parallel_linear_softmax_cross_entropy(
            h,
            w,
            y,
            axis_name=vocab_axis,
            bias=b,
            class_weight=c,
            token_weight=t,
            where=m,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            soft_cap=soft_cap,
            temperature=temperature,
            reduction=reduction,
            chunk_size=chunk_size,
            token_chunk_size=token_chunk_size,
            schedule=schedule,
            weight_layout=weight_layout,
            batch_axis_name=batch_axis if labels.ndim else None,  # a 0-d batch is not split over it
        )

    out_spec = PartitionSpec(*b_spec) if reduction == "none" else PartitionSpec()
    vspec = PartitionSpec(vocab_axis)
    in_specs = (
        PartitionSpec(*b_spec, None),
        PartitionSpec(None, vocab_axis) if weight_layout == "dv" else PartitionSpec(vocab_axis, None),
        PartitionSpec(*b_spec),
        vspec,
        vspec,
        PartitionSpec(*b_spec),
        PartitionSpec(*b_spec),
    )
    fn = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=out_spec)
    return fn(*placed(mesh, in_specs, (hidden, weight, labels, bias, cw, tw, mask)))
