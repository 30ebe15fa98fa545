"""The language-model head functions on global arrays: ``sharded_*`` forms of token statistics, KL, JS and sparse
KL.

Each takes global arrays, a mesh and the names of its vocabulary (and optionally batch) axes, places the inputs
(``weight`` and ``bias`` split along ``V``; the tokens optionally split over the batch axis) and runs the
``vocab_parallel_*`` function of :mod:`jxent.parallel.lm_head` in :func:`jax.shard_map`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec
from jax.typing import ArrayLike

from jxent import _checks
from jxent._typing import MeshAxes, Reduction, Schedule, WeightLayout
from jxent.fused.config import WEIGHT_LAYOUTS
from jxent.fused.distillation import check_beta
from jxent.fused.token_statistics import TokenStatistics
from jxent.parallel.lm_head import (
    vocab_parallel_linear_js_divergence,
    vocab_parallel_linear_kl_divergence,
    vocab_parallel_linear_sparse_kl_divergence,
    vocab_parallel_linear_token_statistics,
)
from jxent.parallel.sharded import check_divides, placed, rows_spec

__all__ = [
    "sharded_linear_js_divergence",
    "sharded_linear_kl_divergence",
    "sharded_linear_sparse_kl_divergence",
    "sharded_linear_token_statistics",
]


def _run_sharded(mesh: Mesh, vocab_axis: Any, batch_axis: Any, weight_layout: str, batch_shape, local, inputs, out):
    """Runs ``local`` in ``shard_map`` over the global ``inputs``, each ``(array or None, kind)``: ``"rows"``
    (batch shape first, split over ``batch_axis``), ``"weight"`` (split along ``V``) or ``"classes"`` (``[V]``).
    ``out`` is the output's pytree of ``"rows"``/``"scalar"``."""
    if weight_layout not in WEIGHT_LAYOUTS:
        raise ValueError(f"`weight_layout` must be one of {WEIGHT_LAYOUTS}; got {weight_layout!r}.")
    v_axis = 1 if weight_layout == "dv" else 0
    nb = len(batch_shape)
    if batch_axis is not None and nb:
        check_divides(batch_shape[0], mesh, batch_axis, "first batch dimension", "batch_axis")
    specs = []
    for x, kind in inputs:
        if kind == "weight":
            if x.ndim != 2:
                raise ValueError(f"A weight must be a matrix; got shape {tuple(x.shape)}.")
            check_divides(x.shape[v_axis], mesh, vocab_axis, "vocabulary size V", "vocab_axis")
            specs.append(PartitionSpec(None, vocab_axis) if v_axis == 1 else PartitionSpec(vocab_axis, None))
        elif kind == "classes":
            specs.append(PartitionSpec(vocab_axis))
        else:
            specs.append(PartitionSpec(*rows_spec(nb, 0 if x is None else x.ndim - nb, batch_axis)))
    out_specs = jax.tree.map(
        lambda k: PartitionSpec(*rows_spec(nb, 0, batch_axis)) if k == "rows" else PartitionSpec(), out
    )
    arrays = tuple(x for x, _ in inputs)
    fn = jax.shard_map(local, mesh=mesh, in_specs=tuple(specs), out_specs=out_specs)
    return fn(*placed(mesh, tuple(specs), arrays))


def _as_arrays(*xs: Any) -> tuple:
    return tuple(None if x is None else jnp.asarray(x) for x in xs)


def sharded_linear_token_statistics(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    mesh: Mesh,
    vocab_axis: MeshAxes,
    batch_axis: MeshAxes | None = None,
    bias: ArrayLike | None = None,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    ignore_index: int | None = None,
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
) -> TokenStatistics:
    """:func:`jxent.linear_token_statistics` on global arrays, with ``weight`` (and ``bias``) split along ``V`` over
    ``vocab_axis`` and, optionally, the first batch axis over ``batch_axis``; use under ``jit``. Arguments as in
    :func:`jxent.sharded_linear_softmax_cross_entropy`.

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> mesh = jax.make_mesh((jax.device_count(),), ("vocab",))  # the device count must divide V = 8
      >>> h = jnp.array([[1.0, -1.0], [0.5, 2.0]])  # [N, D]
      >>> w = jnp.array([[0.0, 1.0, -1.0, 0.5, 2.0, 0.0, -0.5, 1.5],
      ...                [1.0, 0.0, 0.5, -1.0, 0.0, 2.0, 1.0, -2.0]])  # [D, V]
      >>> f = jax.jit(lambda h, w, y: jxent.sharded_linear_token_statistics(h, w, y, mesh=mesh, vocab_axis="vocab"))
      >>> stats = f(h, w, jnp.array([0, 6]))
      >>> stats.argmax
      Array([7, 5], dtype=int32)
      >>> bool(jnp.allclose(stats.entropy, jxent.entropy(jax.nn.softmax(h @ w))))
      True
    """
    hidden, weight, labels, bias = _as_arrays(hidden, weight, _checks.as_int_array(labels, "labels"), bias)
    options: dict[str, Any] = dict(
        soft_cap=soft_cap,
        temperature=temperature,
        ignore_index=ignore_index,
        chunk_size=chunk_size,
        token_chunk_size=token_chunk_size,
        schedule=schedule,
        weight_layout=weight_layout,
    )

    def local(h, w, y, b):
        return vocab_parallel_linear_token_statistics(h, w, y, axis_name=vocab_axis, bias=b, **options)

    inputs = ((hidden, "rows"), (weight, "weight"), (labels, "rows"), (bias, "classes"))
    out = TokenStatistics("rows", "rows", "rows", "rows")  # type: ignore[arg-type]  # the output specs
    return _run_sharded(mesh, vocab_axis, batch_axis, weight_layout, jnp.shape(labels), local, inputs, out)


def _sharded_pair(arguments: dict[str, Any], parallel_fn: Any, extra: dict[str, Any]) -> jax.Array:
    """A ``sharded_*`` divergence between two heads from its arguments (``locals()``)."""
    a = arguments
    hidden, weight, t_hidden, t_weight, bias, t_bias, where = _as_arrays(
        a["hidden"], a["weight"], a["teacher_hidden"], a["teacher_weight"], a["bias"], a["teacher_bias"], a["where"]
    )
    batch_shape = tuple(hidden.shape[:-1])
    static = {
        k: a[k]
        for k in ("temperature", "soft_cap", "reduction", "chunk_size", "token_chunk_size", "schedule", "weight_layout")
    }
    batch_axis = a["batch_axis"] if batch_shape else None

    def local(h, w, th, tw, b, tb, m):
        return parallel_fn(
            h,
            w,
            th,
            tw,
            axis_name=a["vocab_axis"],
            bias=b,
            teacher_bias=tb,
            where=m,
            batch_axis_name=batch_axis,
            **static,
            **extra,
        )

    inputs = (
        (hidden, "rows"),
        (weight, "weight"),
        (t_hidden, "rows"),
        (t_weight, "weight"),
        (bias, "classes"),
        (t_bias, "classes"),
        (where, "rows"),
    )
    out = "rows" if a["reduction"] == "none" else "scalar"
    return _run_sharded(
        a["mesh"], a["vocab_axis"], a["batch_axis"], a["weight_layout"], batch_shape, local, inputs, out
    )


def sharded_linear_kl_divergence(
    hidden: ArrayLike,
    weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    *,
    mesh: Mesh,
    vocab_axis: MeshAxes,
    batch_axis: MeshAxes | None = None,
    bias: ArrayLike | None = None,
    teacher_bias: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    soft_cap: ArrayLike | None = None,
    reverse: bool = False,
    where: ArrayLike | None = None,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
) -> jax.Array:
    """:func:`jxent.linear_kl_divergence` on global arrays: both weights (and biases) split along ``V`` over
    ``vocab_axis``, the tokens optionally over ``batch_axis``; use under ``jit``.

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> mesh = jax.make_mesh((jax.device_count(),), ("vocab",))  # the device count must divide V = 8
      >>> h = jnp.array([[1.0, -1.0], [0.5, 2.0]])  # [N, D]
      >>> w = jnp.array([[0.0, 1.0, -1.0, 0.5, 2.0, 0.0, -0.5, 1.5],
      ...                [1.0, 0.0, 0.5, -1.0, 0.0, 2.0, 1.0, -2.0]])  # [D, V]
      >>> f = jax.jit(lambda h, w: jxent.sharded_linear_kl_divergence(h, w, 2.0 * h, w, mesh=mesh, vocab_axis="vocab"))
      >>> kl = f(h, w)
      >>> bool(jnp.allclose(kl, jxent.linear_kl_divergence(h, w, 2.0 * h, w)))
      True
    """
    return _sharded_pair(locals(), vocab_parallel_linear_kl_divergence, {"reverse": reverse})


def sharded_linear_js_divergence(
    hidden: ArrayLike,
    weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    *,
    mesh: Mesh,
    vocab_axis: MeshAxes,
    batch_axis: MeshAxes | None = None,
    beta: float = 0.5,
    bias: ArrayLike | None = None,
    teacher_bias: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    soft_cap: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
) -> jax.Array:
    """:func:`jxent.linear_js_divergence` on global arrays (as :func:`sharded_linear_kl_divergence`).

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> mesh = jax.make_mesh((jax.device_count(),), ("vocab",))  # the device count must divide V = 8
      >>> h = jnp.array([[1.0, -1.0], [0.5, 2.0]])  # [N, D]
      >>> w = jnp.array([[0.0, 1.0, -1.0, 0.5, 2.0, 0.0, -0.5, 1.5],
      ...                [1.0, 0.0, 0.5, -1.0, 0.0, 2.0, 1.0, -2.0]])  # [D, V]
      >>> f = jax.jit(lambda h, w: jxent.sharded_linear_js_divergence(h, w, 2.0 * h, w, mesh=mesh, vocab_axis="vocab"))
      >>> js = f(h, w)
      >>> bool(jnp.allclose(js, jxent.linear_js_divergence(h, w, 2.0 * h, w)))
      True
    """
    return _sharded_pair(locals(), vocab_parallel_linear_js_divergence, {"beta": check_beta(beta)})


def sharded_linear_sparse_kl_divergence(
    hidden: ArrayLike,
    weight: ArrayLike,
    teacher_indices: ArrayLike,
    teacher_log_probs: ArrayLike,
    *,
    mesh: Mesh,
    vocab_axis: MeshAxes,
    batch_axis: MeshAxes | None = None,
    bias: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    soft_cap: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
) -> jax.Array:
    """:func:`jxent.linear_sparse_kl_divergence` on global arrays: the student ``weight`` (and ``bias``) split along
    ``V`` over ``vocab_axis``, the tokens and the teacher's top-k optionally over ``batch_axis``; use under ``jit``.

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> mesh = jax.make_mesh((jax.device_count(),), ("vocab",))  # the device count must divide V = 8
      >>> h = jnp.array([[1.0, -1.0], [0.5, 2.0]])  # [N, D]
      >>> w = jnp.array([[0.0, 1.0, -1.0, 0.5, 2.0, 0.0, -0.5, 1.5],
      ...                [1.0, 0.0, 0.5, -1.0, 0.0, 2.0, 1.0, -2.0]])  # [D, V]
      >>> top = jnp.array([[0, 5], [2, 7]])
      >>> top_log_probs = jnp.log(jnp.array([[0.6, 0.3], [0.5, 0.25]]))
      >>> f = jax.jit(lambda h, w: jxent.sharded_linear_sparse_kl_divergence(h, w, top, top_log_probs, mesh=mesh,
      ...                                                                  vocab_axis="vocab"))
      >>> kl = f(h, w)
      >>> bool(jnp.allclose(kl, jxent.linear_sparse_kl_divergence(h, w, top, top_log_probs)))
      True
    """
    hidden, weight, indices, log_probs, bias, where = _as_arrays(
        hidden, weight, _checks.as_int_array(teacher_indices, "teacher_indices"), teacher_log_probs, bias, where
    )
    batch_shape = tuple(jnp.shape(hidden)[:-1])
    static: dict[str, Any] = dict(
        temperature=temperature,
        soft_cap=soft_cap,
        reduction=reduction,
        chunk_size=chunk_size,
        token_chunk_size=token_chunk_size,
        schedule=schedule,
        weight_layout=weight_layout,
    )
    b_axis = batch_axis if batch_shape else None

    def local(h, w, idx, lp, b, m):
        return vocab_parallel_linear_sparse_kl_divergence(
            h, w, idx, lp, axis_name=vocab_axis, bias=b, where=m, batch_axis_name=b_axis, **static
        )

    inputs = (
        (hidden, "rows"),
        (weight, "weight"),
        (indices, "rows"),
        (log_probs, "rows"),
        (bias, "classes"),
        (where, "rows"),
    )
    out = "rows" if reduction == "none" else "scalar"
    return _run_sharded(mesh, vocab_axis, batch_axis, weight_layout, batch_shape, local, inputs, out)
