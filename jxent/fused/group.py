"""Where this device's vocabulary slice sits in the whole vocabulary.

The fused kernels compute per-row statistics over the classes they hold and finish each row from them. A
:class:`VocabGroup` says how the holder relates to the whole vocabulary: :data:`LOCAL` is one device holding all of
it (every method is the identity). :mod:`jxent.parallel` subclasses it with the collectives of a vocabulary
sharded over a mesh axis; the kernels here only call these methods and never name a mesh.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from jxent._rowmath import RowStats

__all__ = ["LOCAL", "VocabGroup"]


@dataclasses.dataclass(frozen=True)
class VocabGroup:
    """The whole vocabulary on one device. Hashable: it is part of the kernels' static configuration."""

    @property
    def sharded(self) -> bool:
        """Whether the vocabulary is split over devices."""
        return False

    @property
    def size(self) -> int:
        """The number of equal vocabulary slices."""
        return 1

    def local_labels(self, labels: jax.Array, local_vocab: int) -> jax.Array:
        """Labels relative to this slice (outside ``[0, local_vocab)`` when another slice holds them)."""
        return labels

    def first_class(self, local_vocab: int) -> Any:
        """The global index of this slice's first class."""
        return 0

    def combine(self, stats: RowStats, sums: Any) -> tuple[RowStats, Any]:
        """The statistics and the additive per-row sums of the whole vocabulary from those of this slice."""
        return stats, sums

    def argmax(self, local_max: jax.Array, index: jax.Array) -> jax.Array:
        """The global index of each row's largest logit from this slice's maximum and its global ``index`` (the
        first one on ties, as ``jnp.argmax``)."""
        return index

    def gather(self, x: jax.Array) -> jax.Array:
        """A per-class ``[V_local]`` array of every slice, as ``[V]``."""
        return x

    def sum_slices(self, x: jax.Array) -> jax.Array:
        """The sum over the slices of each slice's part (``dh``: every class contributes to each token)."""
        return x


LOCAL = VocabGroup()
