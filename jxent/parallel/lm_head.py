"""Vocabulary-parallel forms of the language-model head functions, inside ``shard_map``: token statistics, KL, JS
and sparse KL.

As for the cross-entropy (:mod:`jxent.parallel.vocab_parallel`, :mod:`jxent.parallel.sharded`), each function
comes at two levels: ``vocab_parallel_*`` (here) runs inside :func:`jax.shard_map` on this device's slice of the
vocabulary (``weight [D, V/R]``, ``bias [V/R]``) with the axis name, and ``sharded_*``
(:mod:`jxent.parallel.sharded_lm_head`) takes global arrays, a mesh and its axis names. Both run the single-device
objectives of :mod:`jxent.fused` with a :class:`jxent.parallel.collectives.VocabShards` group, so the row maths is
the same code; the slices combine with ``pmax``/``psum``/``pmin`` of ``[tokens]`` vectors (``[tokens, k]`` for the
sparse KL).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jxent._typing import MeshAxes, Reduction, Schedule, WeightLayout
from jxent.fused.distillation import Divergence, check_beta
from jxent.fused.kernel import per_row
from jxent.fused.prepare import prepare_arguments, prepare_pair
from jxent.fused.sparse_distillation import sparse_kl_rows
from jxent.fused.token_statistics import TokenStatistics, TokenStatisticsObjective
from jxent.parallel.collectives import VocabShards, axis_size, reduce_over

__all__ = [
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
