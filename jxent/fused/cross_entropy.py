"""Softmax cross-entropy with integer labels as a fused :class:`~jxent.fused.objective.Objective`.

One stage: each block gives the row statistics and the additive row sums (:func:`jxent.fused.blocks.block_stats`),
rows are finished by :func:`jxent.fused.rows.finish_rows` and the gradient of a block is
:func:`jxent.fused.blocks.logit_cotangent`: the row maths of :mod:`jxent._rowmath`, shared with the dense loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax

from jxent._options import OptionArrays
from jxent._rowmath import empty_stats, merge
from jxent.fused.blocks import add_sums, block_stats, empty_sums, logit_cotangent
from jxent.fused.config import FusedConfig
from jxent.fused.objective import Labels, Objective
from jxent.fused.rows import FinishedRows, finish_rows, global_class_weight, row_cotangents

__all__ = ["CrossEntropy"]


class Finished(NamedTuple):
    labels: Labels
    rows: FinishedRows


@dataclasses.dataclass(frozen=True)
class CrossEntropy(Objective):
    """Outputs ``(loss, lse)``; ``cls`` is the ``[V_local]`` class weight or ``None``."""

    num_outputs = 2

    def init(self, cfg: FusedConfig, stage: int, rows: int) -> Any:
        return empty_stats((rows,), cfg.acc_dtype), empty_sums(cfg, (rows,))

    def block(self, cfg, arrays: OptionArrays, stage, xs, v0, valid, ctx: Labels, cls) -> Any:
        return block_stats(cfg, arrays, xs[0], v0, valid, ctx.local, cls)

    def merge(self, stage: int, acc: Any, part: Any) -> Any:
        return merge(acc[0], part[0]), add_sums(acc[1], part[1])

    def finish(self, cfg, arrays: OptionArrays, stage, acc, ctx: Labels, cls) -> Finished:
        stats, sums = acc
        return Finished(ctx, finish_rows(cfg, arrays, ctx.labels, global_class_weight(cfg, cls), stats, sums))

    def outputs(self, ctx: Finished) -> tuple[jax.Array, ...]:
        return ctx.rows.loss, ctx.rows.lse

    def count(self, ctx: Finished) -> jax.Array:
        return ctx.rows.example_weight

    def cotangents(self, cfg: FusedConfig, ctx: Finished, cts: tuple) -> Any:
        ct_loss, ct_lse = cts
        return row_cotangents(cfg, ctx.rows, ctx.labels.local, ct_loss, ct_lse)

    def grad_block(self, cfg, arrays: OptionArrays, xs, v0, valid, coefs, cls, token_mask) -> tuple:
        return (logit_cotangent(cfg, arrays, xs[0], v0, valid, coefs, cls, token_mask),)
