"""What a fused loss computes per row, as seen by the blockwise loops: the :class:`Objective` protocol.

The loops of :mod:`jxent.fused.schedules` know how to cut ``[token_chunk, vocab_chunk]`` logit blocks out of one or
more linear heads ``x = h W + b`` (:class:`Head`), in any order, and how to turn per-block logit cotangents into
``dh``, ``dW`` and ``db``. Everything that depends on the loss itself is an :class:`Objective`:

* the per-row statistics of a block and how two parts of a row merge (:meth:`Objective.block`,
  :meth:`Objective.merge`), in one or more *stages* (a stage can read what earlier stages finished);
* finishing a row from the statistics of the whole vocabulary (:meth:`Objective.finish`, which also combines the
  slices of a vocabulary-sharded group), its outputs and its weight in ``"mean"``;
* the per-row coefficients of the gradient for given output cotangents (:meth:`Objective.cotangents`) and the
  logit cotangent of a block from them (:meth:`Objective.grad_block`).

A *row context* is a pytree of per-row arrays (leading axis: tokens), e.g. the labels and then the finished
statistics; the loops slice it by token blocks. Objectives are frozen dataclasses: hashable, the static argument
of the kernels' ``custom_vjp`` with the :class:`jxent.fused.config.FusedConfig`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jxent._options import OptionArrays

__all__ = ["Head", "Labels", "Objective", "row_slice"]


class Head(NamedTuple):
    """One linear head: ``hidden [N, D]``, ``weight`` (``[D, V]`` or ``[V, D]``, the configured layout) and an
    optional ``bias [V]``."""

    hidden: jax.Array
    weight: jax.Array
    bias: jax.Array | None


class Labels(NamedTuple):
    """The row context of a labelled objective before its passes: global labels ``[N]`` (int32) and the same labels
    relative to this vocabulary slice."""

    labels: jax.Array
    local: jax.Array


def row_slice(tree: Any, t0: Any, size: int) -> Any:
    """Rows ``t0:t0+size`` of every array of a per-row pytree."""
    return jax.tree.map(lambda r: lax.dynamic_slice_in_dim(r, t0, size), tree)


class Objective:
    """The per-row side of a fused loss (see the module docstring). Subclasses are frozen dataclasses."""

    num_heads: int = 1
    num_stages: int = 1
    num_outputs: int = 1

    def empty(self, cfg: Any, batch_shape: tuple[int, ...]) -> tuple[jax.Array, ...]:
        """The outputs of an empty batch."""
        return (jnp.zeros(batch_shape, cfg.acc_dtype),) * self.num_outputs

    def init(self, cfg: Any, stage: int, rows: int) -> Any:
        """The statistics of ``rows`` rows with no class seen yet (the identity of :meth:`merge`)."""
        raise NotImplementedError

    def block(
        self, cfg: Any, arrays: OptionArrays, stage: int, xs: tuple, v0: Any, valid: Any, ctx: Any, cls: Any
    ) -> Any:
        """The statistics of one block: ``xs`` are the heads' raw logit blocks ``[Tc, Vc]`` (accumulation dtype) of
        columns ``v0:v0+Vc`` of this device's slice; ``valid`` (``[Vc]`` or ``None``) masks columns already covered
        by the previous block; ``ctx`` is the block's rows of the row context; ``cls`` the per-class arrays."""
        raise NotImplementedError

    def merge(self, stage: int, acc: Any, part: Any) -> Any:
        """The statistics of the union of two parts of the same rows."""
        raise NotImplementedError

    def finish(self, cfg: Any, arrays: OptionArrays, stage: int, acc: Any, ctx: Any, cls: Any) -> Any:
        """The row context after ``stage``, from this device's statistics (combined over ``cfg.group`` here)."""
        raise NotImplementedError

    def outputs(self, ctx: Any) -> tuple[jax.Array, ...]:
        """The per-row outputs of the finished context; the first is the loss."""
        raise NotImplementedError

    def count(self, ctx: Any) -> jax.Array:
        """Each row's weight in the ``"mean"`` denominator (0 for rows that do not count)."""
        raise NotImplementedError

    def cotangents(self, cfg: Any, ctx: Any, cts: tuple) -> Any:
        """Per-row coefficients of the logit cotangents for the cotangents ``cts`` of :meth:`outputs`."""
        raise NotImplementedError

    def grad_block(
        self, cfg: Any, arrays: OptionArrays, xs: tuple, v0: Any, valid: Any, coefs: Any, cls: Any, token_mask: Any
    ) -> tuple:
        """The heads' logit cotangents ``dx`` of one block (0 in masked columns, and in rows where ``token_mask``,
        if given, is false)."""
        raise NotImplementedError
