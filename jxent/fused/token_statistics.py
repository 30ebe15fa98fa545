"""Per-token log-probability, entropy, log-sum-exp and argmax of a linear head, blockwise, without the logits.

As a fused :class:`~jxent.fused.objective.Objective` with one stage: each block gives the softmax statistics
(:class:`jxent._rowmath.RowStats`), the target logit, the shifted first moment :math:`\\mu = \\sum_c e^{z_c - m}
(z_c - m)` (:func:`jxent._rowmath.shifted_moment`) and the block's argmax. Two parts of a row merge by the online
log-sum-exp, with :math:`\\mu` rescaled to the new maximum (:func:`jxent._rowmath.rescale_moment`); then
:math:`H = \\log s - \\mu / s` (:func:`jxent._rowmath.entropy_of`), free of cancellation at large logits.

Gradient of a block, for cotangents :math:`g_\\ell, g_H, g_\\lambda` of ``log_prob``, ``entropy`` and
``logsumexp`` (with :math:`\\log p_c = z_c - \\mathrm{lse}` and :math:`\\partial H / \\partial z_c = -p_c (\\log p_c +
H)`):

.. math::
  \\frac{\\partial}{\\partial z_c} = p_c \\big(g_\\lambda - g_\\ell - g_H (\\log p_c + H)\\big) + g_\\ell [c = y].
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jxent import _checks
from jxent._options import OptionArrays
from jxent._rowmath import (
    RowStats,
    empty_stats,
    entropy_of,
    exp_offsets,
    merge,
    rescale_moment,
    row_stats,
    shifted_exp,
    shifted_moment,
    transform_logits,
)
from jxent._typing import Schedule, WeightLayout
from jxent.fused.blocks import transformed
from jxent.fused.config import FusedConfig
from jxent.fused.kernel import per_row
from jxent.fused.objective import Labels, Objective
from jxent.fused.prepare import prepare_arguments

__all__ = ["TokenStatistics", "TokenStatisticsObjective", "linear_token_statistics"]


class TokenStatistics(NamedTuple):
    """Per-token statistics of a softmax over the vocabulary, each of the batch shape.

    Attributes:
      log_prob: :math:`\\log p_y`, the log-probability of the label (float32).
      entropy: :math:`H = -\\sum_c p_c \\log p_c` (float32).
      logsumexp: :math:`\\log \\sum_c e^{z_c}` (float32).
      argmax: The most likely class (int32; the first on ties), so token accuracy is ``argmax == labels``.

    Examples:
      >>> import jax.numpy as jnp, jxent
      >>> stats = jxent.linear_token_statistics(jnp.eye(2), jnp.array([[3.0, 0.0], [0.0, 1.0]]), jnp.array([0, 0]))
      >>> stats._fields
      ('log_prob', 'entropy', 'logsumexp', 'argmax')
      >>> stats.argmax
      Array([0, 1], dtype=int32)
    """

    log_prob: jax.Array
    entropy: jax.Array
    logsumexp: jax.Array
    argmax: jax.Array


class _Partial(NamedTuple):
    stats: RowStats
    target: jax.Array
    moment: jax.Array
    argmax: jax.Array  # global class index


class _Done(NamedTuple):
    labels: Labels
    stats: RowStats
    log_prob: jax.Array
    entropy: jax.Array
    argmax: jax.Array
    label_ok: jax.Array  # 1 for an in-range label, 0 for an ignored one, NaN for one out of range


class _Coefficients(NamedTuple):
    c0: jax.Array
    c1: jax.Array
    a: jax.Array
    labels: jax.Array  # local to this slice
    offset: jax.Array
    d: jax.Array
    inv_total: jax.Array


@dataclasses.dataclass(frozen=True)
class TokenStatisticsObjective(Objective):
    """Outputs ``(log_prob, entropy, logsumexp, argmax)``; no per-class arrays."""

    num_outputs = 4

    def empty(self, cfg: FusedConfig, batch_shape: tuple[int, ...]) -> tuple[jax.Array, ...]:
        zeros = jnp.zeros(batch_shape, cfg.acc_dtype)
        return zeros, zeros, zeros, jnp.zeros(batch_shape, jnp.int32)

    def init(self, cfg: FusedConfig, stage: int, rows: int) -> _Partial:
        zeros = jnp.zeros((rows,), cfg.acc_dtype)
        return _Partial(empty_stats((rows,), cfg.acc_dtype), zeros, zeros, jnp.zeros((rows,), jnp.int32))

    def block(self, cfg, arrays: OptionArrays, stage, xs, v0, valid, ctx: Labels, cls) -> _Partial:
        z = transform_logits(xs[0], cfg, arrays)
        cols = v0 + jnp.arange(cfg.vocab_chunk)
        is_target = cols[None, :] == ctx.local[:, None]
        if valid is not None:
            z = jnp.where(valid[None, :], z, -jnp.inf)
            is_target = is_target & valid[None, :]
        stats = row_stats(z, keepdims=False)
        index = jnp.argmax(z, axis=1).astype(jnp.int32) + v0 + cfg.group.first_class(cfg.vocab)
        target = jnp.sum(jnp.where(is_target, z, 0.0), axis=1)
        return _Partial(stats, target, shifted_moment(z, stats), index.astype(jnp.int32))

    def merge(self, stage: int, acc: _Partial, part: _Partial) -> _Partial:
        stats = merge(acc.stats, part.stats)
        moment = rescale_moment(acc.moment, acc.stats, stats.max) + rescale_moment(part.moment, part.stats, stats.max)
        argmax = jnp.where(part.stats.max > acc.stats.max, part.argmax, acc.argmax)  # ties: the earlier block
        return _Partial(stats, acc.target + part.target, moment, argmax)

    def finish(self, cfg, arrays: OptionArrays, stage, acc: _Partial, ctx: Labels, cls) -> _Done:
        stats, target = cfg.group.combine(acc.stats, acc.target)
        moment = cfg.group.sum_slices(rescale_moment(acc.moment, acc.stats, stats.max))
        argmax = cfg.group.argmax(acc.stats.max, acc.argmax)
        y = ctx.labels
        in_range = (y >= 0) & (y < cfg.global_vocab)
        ignored = jnp.zeros(y.shape, bool) if cfg.ignore_index is None else _checks.is_ignored(y, cfg.ignore_index)
        label_ok = jnp.where(ignored, 0.0, jnp.where(in_range, 1.0, jnp.nan)).astype(cfg.acc_dtype)
        log_prob = jnp.where(ignored, 0.0, jnp.where(in_range, stats.log_prob(target), jnp.nan))
        return _Done(ctx, stats, log_prob, entropy_of(stats, moment), argmax, label_ok)

    def outputs(self, ctx: _Done) -> tuple[jax.Array, ...]:
        return ctx.log_prob, ctx.entropy, ctx.stats.lse, ctx.argmax

    def count(self, ctx: _Done) -> jax.Array:
        return jnp.ones(ctx.log_prob.shape, ctx.log_prob.dtype)

    def cotangents(self, cfg: FusedConfig, ctx: _Done, cts: tuple) -> _Coefficients:
        g_lp, g_h, g_lse = (c.astype(cfg.acc_dtype) for c in cts[:3])
        g_lp = jnp.where(ctx.label_ok == 0, 0.0, g_lp * ctx.label_ok)  # NaN for an out-of-range label
        stats = ctx.stats
        offset, d = exp_offsets(stats.max, cfg.acc_dtype)
        # p_c (g_lse - g_lp - g_H (log p_c + H)) with log p_c = (z_c - offset) - log s
        c0 = g_lse - g_lp - g_h * (ctx.entropy - stats.log_total)
        inv_total = 1.0 / jnp.where(stats.present, stats.total, 1.0)
        return _Coefficients(c0, -g_h, g_lp, ctx.labels.local, offset, d, inv_total)

    def grad_block(self, cfg, arrays: OptionArrays, xs, v0, valid, coefs: _Coefficients, cls, token_mask) -> tuple:
        c0, c1, a = coefs.c0, coefs.c1, coefs.a
        if token_mask is not None:
            c0, c1, a = (jnp.where(token_mask, c, 0.0) for c in (c0, c1, a))
        z, pullback = transformed(cfg, arrays, xs[0])
        p = shifted_exp(z, coefs.offset[:, None], coefs.d[:, None]) * coefs.inv_total[:, None]
        shifted = z - coefs.offset[:, None]
        dz = jnp.where(p == 0, 0.0, p * (c0[:, None] + c1[:, None] * shifted))
        is_target = (v0 + jnp.arange(cfg.vocab_chunk))[None, :] == coefs.labels[:, None]
        dz = dz + jnp.where(is_target, a[:, None], 0.0)
        if valid is not None:
            dz = jnp.where(valid[None, :], dz, 0.0)
        return (dz if pullback is None else pullback(dz),)


def linear_token_statistics(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    ignore_index: int | None = None,
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
) -> TokenStatistics:
    """Per-token log-probability of the label, entropy, log-sum-exp and argmax of ``softmax(hidden @ weight + b)``,
    blockwise, without forming the ``[tokens, V]`` logits.

    For the logits :math:`z = \\mathrm{cap} \\tanh(x / \\mathrm{cap}) / T` of :math:`x = hW + b`, with
    :math:`p = \\mathrm{softmax}(z)`:

    .. math::
      \\log p_y = z_y - \\mathrm{lse}(z), \\qquad H = -\\sum_c p_c \\log p_c, \\qquad
      \\frac{\\partial H}{\\partial z_c} = -p_c (\\log p_c + H).

    What RL fine-tuning (PPO, GRPO) needs from the head: each token's log-probability and the policy's entropy, with
    gradients. Gradients flow to ``hidden``, ``weight`` and ``bias`` from any cotangents of ``log_prob``,
    ``entropy`` and ``logsumexp`` (``jax.custom_vjp``; ``argmax`` has none), computed blockwise as in
    :func:`jxent.linear_softmax_cross_entropy`, whose memory model and schedules apply (the ``"one_pass"``
    schedule, which needs a scalar loss, runs as ``"token"``). The entropy comes from the shifted moment
    :math:`\\sum_c e^{z_c - m}(z_c - m)`, so it stays accurate for logits of magnitude :math:`10^4`.

    Args:
      hidden: ``[..., D]`` hidden states (float32, 16-bit or, with x64, float64; 16-bit inputs are computed with
        float32 accumulation).
      weight: ``[D, V]`` output matrix, or ``[V, D]`` with ``weight_layout="vd"``.
      labels: Integer labels ``[...]`` (``hidden``'s shape without ``D``).
      bias: Optional ``[V]`` bias; a ``-inf`` entry masks its class.
      soft_cap: Soft-capping value (Gemma 2) or ``None``.
      temperature: :math:`T > 0`, applied after soft-capping.
      ignore_index: Label value whose tokens get ``log_prob`` 0 (and no gradient through it); their other
        statistics are computed as usual.
      chunk_size, token_chunk_size, schedule, weight_layout: As in :func:`jxent.linear_softmax_cross_entropy`.

    Returns:
      :class:`jxent.TokenStatistics` ``(log_prob, entropy, logsumexp, argmax)``, each of the batch shape; float32
      (float64 for float64 inputs) and int32 for ``argmax``. An out-of-range label that is not ``ignore_index``
      gives a NaN ``log_prob`` (and NaN gradients through it).

    Examples:
      >>> import jax.numpy as jnp, jxent
      >>> hidden = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> weight = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
      >>> stats = jxent.linear_token_statistics(hidden, weight, jnp.array([0, 1]))
      >>> stats.argmax
      Array([0, 1], dtype=int32)
      >>> bool(jnp.allclose(stats.log_prob, jnp.array([2.0, 2.0]) - stats.logsumexp))
      True
    """
    problem = prepare_arguments(locals(), objective=TokenStatisticsObjective())
    return TokenStatistics(*per_row(problem)[:4])
