"""Vocabulary-parallel forms of the language-model head functions: token statistics, KL, JS and sparse KL.

As for the cross-entropy (:mod:`jxent.parallel.vocab_parallel`, :mod:`jxent.parallel.sharded`), each function
comes at two levels: ``vocab_parallel_*`` runs inside :func:`jax.shard_map` on this device's slice of the
vocabulary (``weight [D, V/R]``, ``bias [V/R]``) with the axis name, and ``sharded_*`` takes global arrays, a mesh
and its axis names. Both run the single-device objectives of :mod:`jxent.fused` with a
:class:`jxent.parallel.collectives.VocabShards` group, so the row maths is the same code; the slices combine with
``pmax``/``psum``/``pmin`` of ``[tokens]`` vectors (``[tokens, k]`` for the sparse KL).
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
from jxent.fused.distillation import Divergence, check_beta
from jxent.fused.kernel import per_row
from jxent.fused.prepare import prepare_arguments, prepare_pair
from jxent.fused.sparse_distillation import sparse_kl_rows
from jxent.fused.token_statistics import TokenStatistics, TokenStatisticsObjective
from jxent.parallel.collectives import VocabShards, axis_size, reduce_over
from jxent.parallel.sharded import check_divides, placed, rows_spec

__all__ = [
    "sharded_linear_js_divergence",
    "sharded_linear_kl_divergence",
    "sharded_linear_sparse_kl_divergence",
    "sharded_linear_token_statistics",
    "vocab_parallel_linear_js_divergence",
    "vocab_parallel_linear_kl_divergence",
    "vocab_parallel_linear_sparse_kl_divergence",
    "vocab_parallel_linear_token_statistics",
]


def _shards(axis_name: Any) -> VocabShards:
    return VocabShards(axis_name, axis_size(axis_name))


def vocab_parallel_linear_token_statistics(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: MeshAxes,
    bias: ArrayLike | None = None,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    ignore_index: int | None = None,
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
) -> TokenStatistics:
    """:func:`jxent.linear_token_statistics` with a vocabulary-sharded ``weight``; call inside ``shard_map``.

    ``hidden`` and the global ``labels`` are the same on every device of ``axis_name``; ``weight`` and ``bias`` are
    this device's slices. The statistics, identical on every device, are those of the whole vocabulary
    (``argmax`` a global class index).

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> from jax.sharding import NamedSharding, PartitionSpec as P
      >>> mesh = jax.make_mesh((jax.device_count(),), ("vocab",))  # the device count must divide V = 8
      >>> h = jnp.array([[1.0, -1.0], [0.5, 2.0]])  # [N, D]
      >>> w = jnp.array([[0.0, 1.0, -1.0, 0.5, 2.0, 0.0, -0.5, 1.5],
      ...                [1.0, 0.0, 0.5, -1.0, 0.0, 2.0, 1.0, -2.0]])  # [D, V]
      >>> w_split = jax.device_put(w, NamedSharding(mesh, P(None, "vocab")))  # [D, V/R] on each device
      >>> labels = jnp.array([0, 6])
      >>> def local(h, w, y):
      ...     return jxent.vocab_parallel_linear_token_statistics(h, w, y, axis_name="vocab")
      >>> f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(None, "vocab"), P()), out_specs=P()))
      >>> stats = f(h, w_split, labels)
      >>> stats.argmax  # global class indices
      Array([7, 5], dtype=int32)
      >>> bool(jnp.allclose(stats.log_prob, jxent.linear_token_statistics(h, w, labels).log_prob))
      True
    """
    p = prepare_arguments(locals(), group=_shards(axis_name), objective=TokenStatisticsObjective())
    return TokenStatistics(*per_row(p)[:4])


def _pair(arguments: dict[str, Any], objective: Divergence) -> jax.Array:
    p = prepare_pair(arguments, objective, group=_shards(arguments["axis_name"]))
    loss, weight = per_row(p)
    return reduce_over(loss, weight, arguments["reduction"], arguments["batch_axis_name"])


def vocab_parallel_linear_kl_divergence(
    hidden: ArrayLike,
    weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    *,
    axis_name: MeshAxes,
    bias: ArrayLike | None = None,
    teacher_bias: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    soft_cap: ArrayLike | None = None,
    reverse: bool = False,
    where: ArrayLike | None = None,
    reduction: Reduction = "none",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
    batch_axis_name: MeshAxes | None = None,
) -> jax.Array:
    """:func:`jxent.linear_kl_divergence` with vocabulary-sharded student and teacher weights; call inside
    ``shard_map``. ``weight``, ``teacher_weight`` and the biases are this device's slices of the same classes;
    ``reduction`` defaults to ``"none"``, and ``"sum"``/``"mean"`` run over ``batch_axis_name`` too when given.

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> from jax.sharding import NamedSharding, PartitionSpec as P
      >>> mesh = jax.make_mesh((jax.device_count(),), ("vocab",))  # the device count must divide V = 8
      >>> h = jnp.array([[1.0, -1.0], [0.5, 2.0]])  # [N, D]
      >>> w = jnp.array([[0.0, 1.0, -1.0, 0.5, 2.0, 0.0, -0.5, 1.5],
      ...                [1.0, 0.0, 0.5, -1.0, 0.0, 2.0, 1.0, -2.0]])  # [D, V]
      >>> w_split = jax.device_put(w, NamedSharding(mesh, P(None, "vocab")))  # [D, V/R] on each device
      >>> def local(h, w, th, tw):  # the student and the teacher share the vocabulary split
      ...     return jxent.vocab_parallel_linear_kl_divergence(h, w, th, tw, axis_name="vocab")
      >>> specs = (P(), P(None, "vocab"), P(), P(None, "vocab"))
      >>> f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P()))
      >>> kl = f(h, w_split, 2.0 * h, w_split)  # per token
      >>> bool(jnp.allclose(kl, jxent.linear_kl_divergence(h, w, 2.0 * h, w, reduction="none")))
      True
    """
    return _pair(locals(), Divergence("reverse_kl" if reverse else "kl"))


def vocab_parallel_linear_js_divergence(
    hidden: ArrayLike,
    weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    *,
    axis_name: MeshAxes,
    beta: float = 0.5,
    bias: ArrayLike | None = None,
    teacher_bias: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    soft_cap: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: Reduction = "none",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
    batch_axis_name: MeshAxes | None = None,
) -> jax.Array:
    """:func:`jxent.linear_js_divergence` with vocabulary-sharded weights; call inside ``shard_map`` (as
    :func:`vocab_parallel_linear_kl_divergence`).

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> from jax.sharding import NamedSharding, PartitionSpec as P
      >>> mesh = jax.make_mesh((jax.device_count(),), ("vocab",))  # the device count must divide V = 8
      >>> h = jnp.array([[1.0, -1.0], [0.5, 2.0]])  # [N, D]
      >>> w = jnp.array([[0.0, 1.0, -1.0, 0.5, 2.0, 0.0, -0.5, 1.5],
      ...                [1.0, 0.0, 0.5, -1.0, 0.0, 2.0, 1.0, -2.0]])  # [D, V]
      >>> w_split = jax.device_put(w, NamedSharding(mesh, P(None, "vocab")))  # [D, V/R] on each device
      >>> def local(h, w, th, tw):
      ...     return jxent.vocab_parallel_linear_js_divergence(h, w, th, tw, axis_name="vocab", reduction="mean")
      >>> specs = (P(), P(None, "vocab"), P(), P(None, "vocab"))
      >>> f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P()))
      >>> bool(jnp.allclose(f(h, w_split, 2.0 * h, w_split), jxent.linear_js_divergence(h, w, 2.0 * h, w)))
      True
    """
    return _pair(locals(), Divergence("js", check_beta(beta)))


def vocab_parallel_linear_sparse_kl_divergence(
    hidden: ArrayLike,
    weight: ArrayLike,
    teacher_indices: ArrayLike,
    teacher_log_probs: ArrayLike,
    *,
    axis_name: MeshAxes,
    bias: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    soft_cap: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: Reduction = "none",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
    batch_axis_name: MeshAxes | None = None,
) -> jax.Array:
    """:func:`jxent.linear_sparse_kl_divergence` with a vocabulary-sharded student ``weight``; call inside
    ``shard_map``. ``teacher_indices`` are global class indices, the same on every device of ``axis_name``.

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> from jax.sharding import NamedSharding, PartitionSpec as P
      >>> mesh = jax.make_mesh((jax.device_count(),), ("vocab",))  # the device count must divide V = 8
      >>> h = jnp.array([[1.0, -1.0], [0.5, 2.0]])  # [N, D]
      >>> w = jnp.array([[0.0, 1.0, -1.0, 0.5, 2.0, 0.0, -0.5, 1.5],
      ...                [1.0, 0.0, 0.5, -1.0, 0.0, 2.0, 1.0, -2.0]])  # [D, V]
      >>> w_split = jax.device_put(w, NamedSharding(mesh, P(None, "vocab")))  # [D, V/R] on each device
      >>> top = jnp.array([[0, 5], [2, 7]])  # the teacher's top-2 classes (global indices) ...
      >>> top_log_probs = jnp.log(jnp.array([[0.6, 0.3], [0.5, 0.25]]))  # ... and their log-probabilities
      >>> def local(h, w, i, lp):
      ...     return jxent.vocab_parallel_linear_sparse_kl_divergence(h, w, i, lp, axis_name="vocab")
      >>> f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(None, "vocab"), P(), P()), out_specs=P()))
      >>> kl = f(h, w_split, top, top_log_probs)
      >>> bool(jnp.allclose(kl, jxent.linear_sparse_kl_divergence(h, w, top, top_log_probs, reduction="none")))
      True
    """
    kl, counted = sparse_kl_rows(locals(), group=_shards(axis_name))
    weight_ = jnp.ones(kl.shape, kl.dtype) if counted is None else counted
    return reduce_over(kl, weight_, reduction, batch_axis_name)


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
      >>> stats = jxent.sharded_linear_token_statistics(h, w, jnp.array([0, 6]), mesh=mesh, vocab_axis="vocab")
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
      >>> kl = jxent.sharded_linear_kl_divergence(h, w, 2.0 * h, w, mesh=mesh, vocab_axis="vocab")
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
      >>> js = jxent.sharded_linear_js_divergence(h, w, 2.0 * h, w, mesh=mesh, vocab_axis="vocab")
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
      >>> kl = jxent.sharded_linear_sparse_kl_divergence(h, w, top, top_log_probs, mesh=mesh, vocab_axis="vocab")
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
