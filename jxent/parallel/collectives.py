"""The collectives of a vocabulary split over a mesh axis, as a :class:`jxent.fused.group.VocabGroup`.

Device ``r`` of ``R`` along the axis holds classes ``[r V/R, (r+1) V/R)``. Combining the row statistics of the
slices is the merge of :mod:`jxent._rowmath` across devices: one ``pmax`` of the row maxima, one ``psum`` of the
rescaled totals (:func:`jxent._rowmath.rescale`) and one ``psum`` of the additive row sums, all ``[tokens]``
vectors. Call these only inside ``jax.shard_map``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jxent._rowmath import RowStats, rescale
from jxent._typing import Reduction
from jxent.fused.group import VocabGroup
from jxent.reduction import reduce_loss, safe_divide

__all__ = ["VocabShards", "axis_size", "reduce_over"]


def axis_size(axis_name: Any) -> int:
    """The number of devices along a bound mesh axis; ``ValueError`` naming it outside ``shard_map``."""
    try:
        return int(lax.axis_size(axis_name))
    except (NameError, ValueError) as e:
        raise ValueError(
            f"`axis_name` {axis_name!r} is not a mesh axis bound here; call this inside `jax.shard_map` over a mesh "
            "with that axis, or use the `sharded_*` wrapper."
        ) from e


def _all_gather_invariant(x: jax.Array, axis_name: Any) -> jax.Array:
    """``all_gather`` typed as the same on every device (needed for outputs that ``shard_map`` sees replicated)."""
    try:
        return lax.all_gather(x, axis_name, tiled=True, to="invarying")
    except TypeError:  # pragma: no cover - JAX without varying-axis types
        return lax.all_gather(x, axis_name, tiled=True)


@dataclasses.dataclass(frozen=True)
class VocabShards(VocabGroup):
    """The vocabulary split into ``count`` equal slices over the mesh axis (or axes) ``axis_name``."""

    axis_name: Any
    count: int

    @property
    def sharded(self) -> bool:
        return True

    @property
    def size(self) -> int:
        return self.count

    def local_labels(self, labels: jax.Array, local_vocab: int) -> jax.Array:
        return labels - self.first_class(local_vocab)

    def first_class(self, local_vocab: int) -> Any:
        return lax.axis_index(self.axis_name) * local_vocab

    def argmax(self, local_max: jax.Array, index: jax.Array) -> jax.Array:
        m = lax.pmax(lax.stop_gradient(local_max), self.axis_name)
        candidate = jnp.where(local_max == m, index, jnp.iinfo(index.dtype).max)
        return lax.pmin(candidate, self.axis_name)

    def combine(self, stats: RowStats, sums: Any) -> tuple[RowStats, Any]:
        # The shift does not change lse; without a gradient, pmax needs no derivative rule (it has none), so
        # grad of grad works across shards too.
        m = lax.pmax(lax.stop_gradient(stats.max), self.axis_name)
        total = lax.psum(rescale(stats, m), self.axis_name)
        sums = lax.psum(sums, self.axis_name)
        return RowStats(m, total), sums

    def gather(self, x: jax.Array) -> jax.Array:
        return _all_gather_invariant(x, self.axis_name)

    def sum_slices(self, x: jax.Array) -> jax.Array:
        return lax.psum(x, self.axis_name)


def reduce_over(losses: jax.Array, example_weight: jax.Array, reduction: Reduction, batch_axis_name: Any = None):
    """:func:`jxent.reduce_loss`, with the sums taken over the devices of ``batch_axis_name`` when it is given."""
    if batch_axis_name is None or reduction == "none":
        return reduce_loss(losses, weights=example_weight, reduction=reduction)
    total = lax.psum(jnp.sum(losses), batch_axis_name)
    if reduction == "sum":
        return total
    return safe_divide(total, lax.psum(jnp.sum(example_weight), batch_axis_name))
