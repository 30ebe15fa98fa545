"""Forward KL against a teacher known only by its top-k log-probabilities, with a tail bin, blockwise.

The student's side is a fused :class:`~jxent.fused.objective.Objective` with one stage and two outputs per token:
the student's log-probabilities at the teacher's ``k`` classes, :math:`\\log q_{i_1}, \\dots, \\log q_{i_k}`, and
the log of its remaining mass, :math:`\\log q_\\text{tail} = \\log (1 - \\sum_j q_{i_j})`. The tail is summed over
the classes outside the top-k directly (they are masked out of each block), never as ``1 - sum``, so it keeps its
relative precision when the top-k hold nearly all the mass. For cotangents :math:`g_j` and :math:`g_\\text{tail}`:

.. math::
  \\frac{\\partial}{\\partial z_c} = [c = i_j]\\, g_j + [c \\notin K]\\, g_\\text{tail} \\frac{q_c}{q_\\text{tail}}
  - q_c \\Big(\\sum_j g_j + g_\\text{tail}\\Big).

The divergence itself is then a small ``[..., k]`` computation in plain JAX (:func:`linear_sparse_kl_divergence`),
so gradients reach the teacher's log-probabilities by ordinary autodiff.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jxent import _checks
from jxent._options import CrossEntropyOptions, OptionArrays
from jxent._rowmath import RowStats, empty_stats, exp_offsets, merge, row_stats, shifted_exp, transform_logits
from jxent._typing import Reduction, Schedule, WeightLayout
from jxent.fused.blocks import transformed
from jxent.fused.config import FusedConfig, check_head, make_config, per_class, row_weights
from jxent.fused.group import LOCAL, VocabGroup
from jxent.fused.kernel import Problem, per_row
from jxent.fused.objective import Head, Objective
from jxent.reduction import reduce_loss

__all__ = ["TopK", "TopKStudent", "linear_sparse_kl_divergence", "sparse_kl_rows"]


class TopK(NamedTuple):
    """The row context: the teacher's classes ``[N, k]`` relative to this vocabulary slice, and 1 for a row whose
    indices are valid, NaN for one with an index out of range or repeated."""

    local: jax.Array
    ok: jax.Array


class _Partial(NamedTuple):
    stats: RowStats
    tail: RowStats
    picked: jax.Array  # [Tc, k] student logits at the teacher's classes (0 where another block holds them)


class _Done(NamedTuple):
    topk: TopK
    stats: RowStats
    tail: RowStats  # of the classes outside the top-k (their own maximum: no underflow at large logits)
    log_q: jax.Array  # [N, k]
    log_q_tail: jax.Array


class _Coefficients(NamedTuple):
    g: jax.Array  # [N, k]
    local: jax.Array  # [N, k]
    c_tail: jax.Array  # g_tail / (the tail's total)
    c_all: jax.Array  # -(sum g + g_tail) / total
    offset: jax.Array
    d: jax.Array
    tail_offset: jax.Array
    tail_d: jax.Array


def _in_block(cfg: FusedConfig, local: jax.Array, v0: Any, valid: Any) -> tuple[jax.Array, jax.Array]:
    """``(column in the block, whether this block holds it)`` of each of a block's ``[Tc, k]`` teacher classes."""
    col = local - v0
    inside = (col >= 0) & (col < cfg.vocab_chunk)
    col = jnp.clip(col, 0, cfg.vocab_chunk - 1)
    if valid is not None:
        inside = inside & valid[col]
    return col, inside


def _scatter(cfg: FusedConfig, col: jax.Array, inside: jax.Array, values: jax.Array) -> jax.Array:
    """A ``[Tc, Vc]`` block holding ``values`` at the teacher's columns (0 elsewhere)."""
    rows = jnp.arange(col.shape[0])[:, None]
    target = jnp.where(inside, col, cfg.vocab_chunk)  # a spare column for classes of other blocks
    out = jnp.zeros((col.shape[0], cfg.vocab_chunk + 1), values.dtype).at[rows, target].add(values)
    return out[:, : cfg.vocab_chunk]


@dataclasses.dataclass(frozen=True)
class TopKStudent(Objective):
    """Outputs ``(log_q [N, k], log_q_tail [N])``; no per-class arrays."""

    k: int = 1
    num_outputs = 2

    def empty(self, cfg: FusedConfig, batch_shape: tuple[int, ...]) -> tuple[jax.Array, ...]:
        return jnp.zeros((*batch_shape, self.k), cfg.acc_dtype), jnp.zeros(batch_shape, cfg.acc_dtype)

    def init(self, cfg: FusedConfig, stage: int, rows: int) -> _Partial:
        empty = empty_stats((rows,), cfg.acc_dtype)
        return _Partial(empty, empty, jnp.zeros((rows, self.k), cfg.acc_dtype))

    def block(self, cfg, arrays: OptionArrays, stage, xs, v0, valid, ctx: TopK, cls) -> _Partial:
        z = transform_logits(xs[0], cfg, arrays)
        if valid is not None:
            z = jnp.where(valid[None, :], z, -jnp.inf)
        col, inside = _in_block(cfg, ctx.local, v0, valid)
        picked = jnp.where(inside, jnp.take_along_axis(z, col, axis=1), 0.0)
        in_topk = _scatter(cfg, col, inside, jnp.ones(col.shape, jnp.int32)) > 0
        tail = row_stats(jnp.where(in_topk, -jnp.inf, z), keepdims=False)
        return _Partial(row_stats(z, keepdims=False), tail, picked)

    def merge(self, stage: int, acc: _Partial, part: _Partial) -> _Partial:
        return _Partial(merge(acc.stats, part.stats), merge(acc.tail, part.tail), acc.picked + part.picked)

    def finish(self, cfg, arrays: OptionArrays, stage, acc: _Partial, ctx: TopK, cls) -> _Done:
        stats, picked = cfg.group.combine(acc.stats, acc.picked)
        tail, _ = cfg.group.combine(acc.tail, ())
        log_q = RowStats(stats.max[:, None], stats.total[:, None]).log_prob(picked)
        log_q_tail = jnp.where(tail.present, tail.lse - stats.lse, -jnp.inf)
        return _Done(ctx, stats, tail, log_q * ctx.ok[:, None], log_q_tail)

    def outputs(self, ctx: _Done) -> tuple[jax.Array, ...]:
        return ctx.log_q, ctx.log_q_tail

    def count(self, ctx: _Done) -> jax.Array:
        return jnp.ones(ctx.log_q_tail.shape, ctx.log_q_tail.dtype)

    def cotangents(self, cfg: FusedConfig, ctx: _Done, cts: tuple) -> _Coefficients:
        g, g_tail = (c.astype(cfg.acc_dtype) for c in cts)
        stats = ctx.stats
        offset, d = exp_offsets(stats.max, cfg.acc_dtype)
        c_tail = g_tail / jnp.where(ctx.tail.present, ctx.tail.total, 1.0)
        c_all = -(jnp.sum(g, axis=1) + g_tail) / jnp.where(stats.present, stats.total, 1.0)
        tail_offset, tail_d = exp_offsets(ctx.tail.max, cfg.acc_dtype)
        return _Coefficients(g, ctx.topk.local, c_tail, c_all, offset, d, tail_offset, tail_d)

    def grad_block(self, cfg, arrays: OptionArrays, xs, v0, valid, coefs: _Coefficients, cls, token_mask) -> tuple:
        g, c_tail, c_all = coefs.g, coefs.c_tail, coefs.c_all
        if token_mask is not None:
            g = jnp.where(token_mask[:, None], g, 0.0)
            c_tail, c_all = (jnp.where(token_mask, c, 0.0) for c in (c_tail, c_all))
        z, pullback = transformed(cfg, arrays, xs[0])
        e = shifted_exp(z, coefs.offset[:, None], coefs.d[:, None])
        col, inside = _in_block(cfg, coefs.local, v0, valid)
        in_topk = _scatter(cfg, col, inside, jnp.ones(col.shape, jnp.int32)) > 0
        # q_c / q_tail = exp(z_c - tail max) / tail total: from the tail's own statistics (no underflow)
        e_tail = shifted_exp(z, coefs.tail_offset[:, None], coefs.tail_d[:, None])
        dz = jnp.where(in_topk, _scatter(cfg, col, inside, g), e_tail * c_tail[:, None]) + e * c_all[:, None]
        if valid is not None:
            dz = jnp.where(valid[None, :], dz, 0.0)
        return (dz if pullback is None else pullback(dz),)


def _check_topk(teacher_indices: Any, teacher_log_probs: Any, batch_shape: tuple[int, ...], vocab: int):
    indices = _checks.as_int_array(teacher_indices, "teacher_indices")
    log_probs = _checks.as_float_array(teacher_log_probs, "teacher_log_probs")
    if indices.ndim != len(batch_shape) + 1 or tuple(indices.shape[:-1]) != batch_shape:
        raise ValueError(
            f"`teacher_indices` must have shape [..., k] with ... = {batch_shape} (hidden's shape without D); got "
            f"shape {tuple(indices.shape)}."
        )
    if log_probs.shape != indices.shape:
        raise ValueError(
            f"`teacher_log_probs` must have the shape of `teacher_indices`, {tuple(indices.shape)}; got shape "
            f"{tuple(log_probs.shape)}."
        )
    k = indices.shape[-1]
    if not 1 <= k <= vocab:
        raise ValueError(f"The teacher's top-k must have 1 <= k <= V = {vocab}; got k = {k}.")
    return indices, log_probs, k


def _valid_rows(indices: jax.Array, vocab: int) -> jax.Array:
    """1 for rows whose teacher classes are distinct and in ``[0, V)``, NaN otherwise."""
    in_range = jnp.all((indices >= 0) & (indices < vocab), axis=-1)
    ordered = jnp.sort(indices, axis=-1)
    distinct = jnp.all(ordered[..., 1:] != ordered[..., :-1], axis=-1)
    return jnp.where(in_range & distinct, 1.0, jnp.nan)


def _sparse_kl(log_p: jax.Array, log_q: jax.Array, log_q_tail: jax.Array, tail_classes: bool) -> jax.Array:
    """:math:`\\sum_j p_j (\\log p_j - \\log q_j) + p_t (\\log p_t - \\log q_t)` with
    :math:`p_t = \\max(1 - \\sum_j p_j, 0)`, ``0 log 0 = 0`` (and zero gradients there), clamped at 0. Without
    ``tail_classes`` (``k = V``) there is no tail bin: what ``1 - sum`` leaves is rounding."""
    p = jnp.exp(log_p)
    safe_log_p = jnp.where(p == 0, 0.0, log_p)
    top = jnp.sum(jnp.where(p == 0, 0.0, p * (safe_log_p - jnp.where(p == 0, 0.0, log_q))), axis=-1)
    if not tail_classes:
        return jnp.maximum(top, 0.0)
    p_tail = jnp.maximum(1.0 - jnp.sum(p, axis=-1), 0.0)
    has_tail = p_tail > 0
    safe_tail = jnp.where(has_tail, p_tail, 1.0)
    tail = jnp.where(has_tail, safe_tail * (jnp.log(safe_tail) - jnp.where(has_tail, log_q_tail, 0.0)), 0.0)
    return jnp.maximum(top + tail, 0.0)


def linear_sparse_kl_divergence(
    hidden: ArrayLike,
    weight: ArrayLike,
    teacher_indices: ArrayLike,
    teacher_log_probs: ArrayLike,
    *,
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
    """Forward KL from a teacher known by its top-k log-probabilities to the student head, with a tail bin.

    Offline distillation from stored top-k outputs: for each token the teacher gives ``k`` distinct classes
    :math:`K = \\{i_1, \\dots, i_k\\}` and their log-probabilities :math:`\\log p_j`; the rest of its mass,
    :math:`p_\\text{tail} = 1 - \\sum_j p_j`, is one bin, and so is the student's mass outside :math:`K`:

    .. math::
      \\mathrm{KL} = \\sum_{j=1}^k p_j \\log \\frac{p_j}{q_{i_j}} + p_\\text{tail} \\log
      \\frac{p_\\text{tail}}{q_\\text{tail}}, \\qquad q = \\mathrm{softmax}\\Big(\\frac{hW + b}{T}\\Big),\\quad
      q_\\text{tail} = \\sum_{c \\notin K} q_c.

    With ``k = V`` it is the full forward KL. The student's ``[tokens, V]`` logits are never formed (see
    the module ``jxent.fused.sparse_distillation``); its tail mass is summed over the classes outside :math:`K`, so
    it keeps its precision when the top-k hold nearly all the mass. Gradients reach ``hidden``, ``weight``, ``bias`` and
    ``teacher_log_probs`` (``jax.lax.stop_gradient`` freezes the latter).

    Args:
      hidden: Student hidden states ``[..., D]``.
      weight: Student output matrix ``[D, V]`` (``[V, D]`` with ``weight_layout="vd"``).
      teacher_indices: The teacher's classes ``[..., k]`` (integers; distinct within a token; ``1 <= k <= V``).
      teacher_log_probs: The teacher's log-probabilities at ``teacher_indices``, ``[..., k]``, used as given (compute
        them at the temperature you distil at). A sum of probabilities above 1 by rounding leaves an empty tail.
      bias: Optional ``[V]`` student bias.
      temperature: :math:`T > 0`, dividing the student's logits.
      soft_cap: Soft-capping of the student's logits before the temperature, or ``None``.
      where: Optional boolean mask ``[...]``; tokens where it is false give 0, a zero gradient and do not count.
      reduction: ``"mean"`` (default, over the counted tokens), ``"sum"`` or ``"none"``.
      chunk_size, token_chunk_size, schedule, weight_layout: As in :func:`jxent.linear_softmax_cross_entropy`
        (``"one_pass"`` runs as ``"token"``).

    Returns:
      The divergence in nats (float32, or float64 for float64 inputs): ``[...]`` for ``"none"``, else a scalar. A
      token whose ``teacher_indices`` hold a class out of ``[0, V)`` or the same class twice gives NaN (unless
      ``where`` masks it).

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> h = jnp.array([[1.0, -1.0]])
      >>> w = jnp.array([[1.0, 0.0, -1.0, 0.5], [0.0, 1.0, 0.0, 0.5]])
      >>> teacher = jax.nn.log_softmax(jnp.array([[2.0, 0.0, -1.0, 1.0]]))
      >>> top = jnp.array([[0, 3]])
      >>> kl = jxent.linear_sparse_kl_divergence(h, w, top, jnp.take_along_axis(teacher, top, axis=-1))
      >>> q = jax.nn.softmax(h @ w)[0]
      >>> p = jnp.exp(teacher[0])
      >>> bins_p = jnp.array([p[0], p[3], p[1] + p[2]])
      >>> bins_q = jnp.array([q[0], q[3], q[1] + q[2]])
      >>> bool(jnp.allclose(kl, jnp.sum(bins_p * jnp.log(bins_p / bins_q))))
      True
    """
    kl, counted = sparse_kl_rows(locals())
    return reduce_loss(kl, weights=counted, reduction=reduction)


def sparse_kl_rows(arguments: Mapping[str, Any], group: VocabGroup = LOCAL) -> tuple[jax.Array, jax.Array | None]:
    """The per-token sparse KL of :func:`linear_sparse_kl_divergence` from its arguments (``locals()``), and the
    weights of the tokens in ``"mean"`` (``None``: all 1). With a sharded ``group``, ``weight`` and ``bias`` are
    this device's slice and ``teacher_indices`` are global."""
    hidden, weight, bias, where = (arguments[k] for k in ("hidden", "weight", "bias", "where"))
    weight_layout, reduction = arguments["weight_layout"], arguments["reduction"]
    options = CrossEntropyOptions(
        temperature=arguments["temperature"], soft_cap=arguments["soft_cap"], reduction=reduction
    )
    h, w = check_head(hidden, weight, weight_layout)
    vocab_axis = 1 if weight_layout == "dv" else 0
    d, vocab = w.shape[1 - vocab_axis], w.shape[vocab_axis]
    batch_shape = tuple(h.shape[:-1])
    indices, log_p, k = _check_topk(
        arguments["teacher_indices"], arguments["teacher_log_probs"], batch_shape, vocab * group.size
    )
    b = per_class(bias, vocab, "bias")
    mask = row_weights(None, where, batch_shape, jnp.float32)
    cfg, arrays = make_config(
        num_tokens=math.prod(batch_shape),
        vocab=vocab,
        hidden_size=d,
        dtypes=(h.dtype, w.dtype),
        weight_dtype=w.dtype,
        has_class_weight=False,
        options=options,
        chunk_size=arguments["chunk_size"],
        token_chunk_size=arguments["token_chunk_size"],
        schedule=arguments["schedule"],
        group=group,
        vocab_axis=vocab_axis,
        scalar=False,  # per-token outputs: the KL is reduced outside the kernel
    )
    flat = indices.reshape(-1, k).astype(jnp.int32)
    topk = TopK(group.local_labels(flat, vocab), _valid_rows(flat, cfg.global_vocab).astype(cfg.acc_dtype))
    problem = Problem(cfg, TopKStudent(k), arrays, (Head(h.reshape(-1, d), w, b),), topk, None, None, batch_shape)
    log_q, log_q_tail, _ = per_row(problem)
    log_p = log_p.astype(cfg.acc_dtype)
    counted = None if mask is None else mask.reshape(batch_shape) > 0
    if counted is not None:  # masked tokens: finite stand-ins, so that no NaN reaches any gradient
        log_p, log_q = (jnp.where(counted[..., None], x, 0.0) for x in (log_p, log_q))
        log_q_tail = jnp.where(counted, log_q_tail, 0.0)
    kl = _sparse_kl(log_p, log_q, log_q_tail, tail_classes=k < cfg.global_vocab)
    if counted is None:
        return kl, None
    return jnp.where(counted, kl, 0.0), counted.astype(kl.dtype)
