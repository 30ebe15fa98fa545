"""Finishing each row of the fused loss from its statistics: loss, log-sum-exp and gradient coefficients.

The statistics pass leaves, per row, the :class:`jxent._rowmath.RowStats` and the additive
:class:`jxent.fused.blocks.RowSums` of the classes this device holds. :func:`finish_rows` combines them over the
vocabulary group (the identity on one device), then applies the row formulas of :mod:`jxent._rowmath`:
:math:`q = a\\,\\mathrm{onehot}(y) + b\\,\\sigma` over the present classes, the row loss and the factor of the
softmax in its gradient. Nothing here is specific to blocks or devices.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jxent._options import OptionArrays
from jxent._rowmath import (
    RowStats,
    exp_offsets,
    integer_label_coefficients,
    integer_target_log_p,
    row_loss,
    softmax_coefficient,
    target_mass,
)
from jxent.fused.blocks import RowCoefficients, RowSums
from jxent.fused.config import FusedConfig

__all__ = ["FinishedRows", "finish_rows", "row_cotangents"]


class FinishedRows(NamedTuple):
    """Per-row results: the loss, ``lse``, the coefficients of ``q`` and of the softmax in ``dloss/dz``, and the
    weight of the row in the ``"mean"`` denominator (0 for rows that do not count)."""

    loss: jax.Array
    stats: RowStats  # of the whole row (all vocabulary slices)
    a: jax.Array
    b: jax.Array | None
    coef: jax.Array
    example_weight: jax.Array

    @property
    def lse(self) -> jax.Array:
        return self.stats.lse


def global_class_weight(cfg: FusedConfig, cw: Any) -> Any:
    """The ``[V]`` class weights of the whole vocabulary (gathered from the slices when sharded)."""
    return None if cw is None else cfg.group.gather(cw)


def finish_rows(
    cfg: FusedConfig, arrays: OptionArrays, labels: jax.Array, cw_all: Any, stats: RowStats, sums: RowSums
) -> FinishedRows:
    """Loss and gradient coefficients of rows with global ``labels`` from this device's statistics and sums.

    ``cw_all`` are the class weights of the whole vocabulary (:func:`global_class_weight`).
    """
    stats, sums = cfg.group.combine(stats, sums)
    lse = stats.lse
    a, b, counted, example_weight = integer_label_coefficients(
        labels,
        cfg.global_vocab,
        class_weight=cw_all,
        label_smoothing=arrays.label_smoothing if cfg.has_smoothing else 0.0,
        num_present=sums.num_present,
        ignore_index=cfg.ignore_index,
        counted=stats.present,
        dtype=cfg.acc_dtype,
    )
    spread_log_p = None
    if b is not None:
        if sums.weighted is None or sums.spread is None or sums.num_present is None:
            raise ValueError("finish_rows: label smoothing needs the smoothing sums of the statistics pass.")
        # sum_c sigma_c log p_c. With a +inf logit, a present finite class has log p = -inf; if every present class
        # is +inf, each has log p = -log(count).
        at_inf = jnp.where(sums.num_present > stats.total, -jnp.inf, -sums.spread * stats.log_total)
        finite = sums.weighted - jnp.where(sums.spread == 0, 0.0, sums.spread * lse)
        spread_log_p = jnp.where(stats.max == jnp.inf, at_inf, finite)
    q_log_p = integer_target_log_p(a=a, log_p_y=stats.log_prob(sums.target), b=b, spread_log_p=spread_log_p)
    z_loss = arrays.z_loss if cfg.has_z_loss else None
    loss = row_loss(q_log_p=q_log_p, lse=lse, z_loss=z_loss, counted=counted)
    mass = target_mass(a=a, b=b, spread_sum=sums.spread)
    coef = softmax_coefficient(target_mass=mass, lse=lse, z_loss=z_loss, counted=counted)
    return FinishedRows(loss, stats, a, b, coef, example_weight)


def row_cotangents(
    cfg: FusedConfig, rows: FinishedRows, local_labels: jax.Array, ct_loss: jax.Array, ct_lse: jax.Array
) -> RowCoefficients:
    """The coefficients of ``dx`` for per-row cotangents of the loss and of ``lse``
    (:math:`\\partial\\,\\mathrm{lse}/\\partial z = \\mathrm{softmax}(z)`); ``local_labels`` are relative to this
    vocabulary slice."""
    ct_loss = ct_loss.astype(cfg.acc_dtype)
    offset, d = exp_offsets(rows.stats.max, cfg.acc_dtype)
    return RowCoefficients(
        coef_p=ct_loss * rows.coef + ct_lse.astype(cfg.acc_dtype),
        coef_a=ct_loss * rows.a,
        coef_b=None if rows.b is None else ct_loss * rows.b,
        labels=local_labels,
        offset=offset,
        d=d,
        inv_total=1.0 / jnp.where(rows.stats.present, rows.stats.total, 1.0),
    )
