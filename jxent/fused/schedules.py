"""The loop schedules of the fused loss: the statistics pass and the four ways to accumulate the gradients.

Each loop is a ``lax.fori_loop`` over blocks (:mod:`jxent.fused.blocks`). The statistics pass is token-outer,
vocabulary-inner and keeps the running :class:`jxent._rowmath.RowStats` of each row, merged block by block with
:func:`jxent._rowmath.merge` (the online log-sum-exp). The gradient passes recompute each block's logits and
differ only in which accumulator is complete after its inner loop (see
:func:`jxent.linear_softmax_cross_entropy` for the memory each one needs).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jxent._options import OptionArrays
from jxent._rowmath import RowStats, empty_stats, merge
from jxent._vma import fori
from jxent.fused.blocks import (
    RowCoefficients,
    RowSums,
    add_sums,
    block_start,
    block_stats,
    dh_block,
    dw_block,
    empty_sums,
    logit_block,
    logit_cotangent,
    masked_rows,
    n_blocks,
    take,
    token_valid,
    vocab_valid,
    weight_block,
)
from jxent.fused.config import FusedConfig
from jxent.fused.rows import FinishedRows, finish_rows, row_cotangents

__all__ = ["gradients", "one_pass", "statistics"]


def _put(full: Any, part: Any, t0: Any) -> Any:
    """Writes the per-row arrays ``part`` (a pytree) into ``full`` at rows ``t0:``."""
    return jax.tree.map(lambda f, p: lax.dynamic_update_slice_in_dim(f, p.astype(f.dtype), t0, 0), full, part)


def _vocab_loop(cfg: FusedConfig, arrays: OptionArrays, h_blk, w, bias, y_blk, cw, refs, keep_logits: bool):
    """Statistics of the rows of one token block over this device's vocabulary; with ``keep_logits`` also the
    ``[Tc, V]`` logit rows (the one-pass row buffer)."""
    tc, vc = cfg.token_chunk, cfg.vocab_chunk

    def body(j, carry):
        buf, stats, sums = carry
        v0 = block_start(j, vc, cfg.vocab)
        x = logit_block(cfg, h_blk, weight_block(cfg, w, v0), bias, v0)
        blk_stats, blk_sums = block_stats(cfg, arrays, x, v0, vocab_valid(cfg, j, v0), y_blk, cw)
        if keep_logits:
            buf = lax.dynamic_update_slice_in_dim(buf, x, v0, 1)
        return buf, merge(stats, blk_stats), add_sums(sums, blk_sums)

    buf0 = jnp.zeros((tc, cfg.vocab) if keep_logits else (0,), cfg.acc_dtype)
    init = (buf0, empty_stats((tc,), cfg.acc_dtype), empty_sums(cfg, (tc,)))
    return fori(n_blocks(cfg.vocab, vc), body, init, refs)


def statistics(cfg: FusedConfig, arrays: OptionArrays, h, w, bias, labels, cw) -> tuple[RowStats, RowSums]:
    """Token-outer, vocabulary-inner pass: the row statistics and sums of every token, each ``[N]`` in the
    accumulation dtype (``labels`` are local to this vocabulary slice)."""
    refs = (h, w, bias, labels, cw, arrays)
    tc = cfg.token_chunk

    def token_body(i, carry):
        t0 = block_start(i, tc, cfg.num_tokens)
        h_blk = take(cfg, h, t0, tc, 0)
        y_blk = lax.dynamic_slice_in_dim(labels, t0, tc)
        _, stats, sums = _vocab_loop(cfg, arrays, h_blk, w, bias, y_blk, cw, refs, keep_logits=False)
        return _put(carry, (stats, sums), t0)

    n = cfg.num_tokens
    init = (empty_stats((n,), cfg.acc_dtype), empty_sums(cfg, (n,)))
    return fori(n_blocks(n, tc), token_body, init, refs)


def _token_outer_update(cfg: FusedConfig, acc, dx, w_blk, h_dw, tmask, v0):
    """Adds one block's ``dx`` to the ``dh`` block accumulator and (when ``h_dw`` is given) to the full ``dW``/``db``
    accumulators; ``h_dw``/``tmask`` have the rows of an overlapping last token block masked."""
    dh_acc, dw_acc, db_acc = acc
    vc, ax = cfg.vocab_chunk, cfg.vocab_axis
    dx_m = dx.astype(cfg.matmul_dtype)
    dh_acc = dh_acc + dh_block(cfg, dx_m, w_blk)
    if h_dw is not None:
        upd = dw_block(cfg, h_dw, dx_m)
        dw_acc = lax.dynamic_update_slice_in_dim(dw_acc, lax.dynamic_slice_in_dim(dw_acc, v0, vc, ax) + upd, v0, ax)
        if cfg.has_bias:
            col_sum = jnp.sum(dx if tmask is None else jnp.where(tmask[:, None], dx, 0.0), axis=0)
            db_acc = lax.dynamic_update_slice_in_dim(db_acc, lax.dynamic_slice_in_dim(db_acc, v0, vc) + col_sum, v0, 0)
    return dh_acc, dw_acc, db_acc


def _grad_vocab_inner(cfg, arrays, h_blk, w, bias, cw, rows_blk, acc, h_dw, tmask, refs, logits=None):
    """The vocabulary loop of a token-outer gradient pass; ``logits`` is the one-pass row buffer, if kept."""
    vc = cfg.vocab_chunk

    def body(j, c):
        v0 = block_start(j, vc, cfg.vocab)
        w_blk = weight_block(cfg, w, v0)
        if logits is None:
            x = logit_block(cfg, h_blk, w_blk, bias, v0)
        else:
            x = lax.dynamic_slice_in_dim(logits, v0, vc, 1)
        dx = logit_cotangent(cfg, arrays, x, v0, vocab_valid(cfg, j, v0), rows_blk, cw)
        return _token_outer_update(cfg, c, dx, w_blk, h_dw, tmask, v0)

    d = h_blk.shape[1]
    return fori(n_blocks(cfg.vocab, vc), body, (jnp.zeros((cfg.token_chunk, d), cfg.acc_dtype), *acc), refs)


def _dh_dtype(cfg: FusedConfig, h):
    """``dh`` blocks are stored in ``hidden``'s dtype, or in float32 when the slices' parts are summed after."""
    return cfg.acc_dtype if cfg.sharded else h.dtype


def _grad_token_outer(cfg: FusedConfig, arrays, h, w, bias, cw, rows: RowCoefficients, want_dw: bool):
    """Token-outer pass: each ``dh`` block is complete after its vocabulary loop; ``dW`` (if wanted) is a full
    ``[D, V]`` float32 accumulator."""
    refs = (h, w, bias, cw, rows, arrays)
    tc = cfg.token_chunk

    def token_body(i, carry):
        dh_all, dw_all, db_all = carry
        t0 = block_start(i, tc, cfg.num_tokens)
        h_blk = take(cfg, h, t0, tc, 0)
        tmask = token_valid(cfg, i, t0) if want_dw else None
        # Rows of an overlapping last block were already done: their dh is rewritten unchanged, their dW masked.
        h_dw = masked_rows(h_blk, tmask) if want_dw else None
        dh_blk, dw_all, db_all = _grad_vocab_inner(
            cfg, arrays, h_blk, w, bias, cw, rows.rows(t0, tc), (dw_all, db_all), h_dw, tmask, refs
        )
        return _put(dh_all, dh_blk, t0), dw_all, db_all

    dw0 = jnp.zeros(w.shape if want_dw else (0, 0), cfg.acc_dtype)
    db0 = jnp.zeros((cfg.vocab,) if (want_dw and cfg.has_bias) else (0,), cfg.acc_dtype)
    dh0 = jnp.zeros(h.shape, _dh_dtype(cfg, h))
    return fori(n_blocks(cfg.num_tokens, tc), token_body, (dh0, dw0, db0), refs)


def _grad_vocab_outer(cfg: FusedConfig, arrays, h, w, bias, cw, rows: RowCoefficients, want_dh: bool):
    """Vocabulary-outer pass: each ``dW`` block ``[D, Vc]`` is complete after its token loop and written once in
    ``weight``'s dtype; ``dh`` (if wanted) is a full ``[N, D]`` float32 accumulator."""
    refs = (h, w, bias, cw, rows, arrays)
    tc, vc = cfg.token_chunk, cfg.vocab_chunk
    d = h.shape[1]

    def vocab_body(j, carry):
        dh_all, dw_all, db_all = carry
        v0 = block_start(j, vc, cfg.vocab)
        w_blk = weight_block(cfg, w, v0)
        # Columns of an overlapping last block were already done: their dW is rewritten unchanged, their dh masked.
        vmask = vocab_valid(cfg, j, v0) if want_dh else None
        w_dh = w_blk
        if vmask is not None:
            vm = vmask[None, :] if cfg.vocab_axis == 1 else vmask[:, None]
            w_dh = jnp.where(vm, w_blk, jnp.zeros((), w_blk.dtype))

        def token_body(i, c):
            dh_acc, dw_blk, db_blk = c
            t0 = block_start(i, tc, cfg.num_tokens)
            h_blk = take(cfg, h, t0, tc, 0)
            x = logit_block(cfg, h_blk, w_blk, bias, v0)
            dx = logit_cotangent(cfg, arrays, x, v0, None, rows.rows(t0, tc), cw, token_valid(cfg, i, t0))
            dx_m = dx.astype(cfg.matmul_dtype)
            dw_blk = dw_blk + dw_block(cfg, h_blk, dx_m)
            if cfg.has_bias:
                db_blk = db_blk + jnp.sum(dx, axis=0)
            if want_dh:
                upd = dh_block(cfg, dx_m, w_dh)
                dh_acc = lax.dynamic_update_slice_in_dim(dh_acc, lax.dynamic_slice_in_dim(dh_acc, t0, tc) + upd, t0, 0)
            return dh_acc, dw_blk, db_blk

        blk_shape = (d, vc) if cfg.vocab_axis == 1 else (vc, d)
        init = (dh_all, jnp.zeros(blk_shape, cfg.acc_dtype), jnp.zeros((vc if cfg.has_bias else 0,), cfg.acc_dtype))
        dh_all, dw_blk, db_blk = fori(n_blocks(cfg.num_tokens, tc), token_body, init, refs)
        dw_all = lax.dynamic_update_slice_in_dim(dw_all, dw_blk.astype(dw_all.dtype), v0, axis=cfg.vocab_axis)
        if cfg.has_bias:
            db_all = lax.dynamic_update_slice_in_dim(db_all, db_blk, v0, 0)
        return dh_all, dw_all, db_all

    dh0 = jnp.zeros(h.shape if want_dh else (0, 0), cfg.acc_dtype)
    dw0 = jnp.zeros(w.shape, w.dtype)
    db0 = jnp.zeros((cfg.vocab if cfg.has_bias else 0,), cfg.acc_dtype)
    return fori(n_blocks(cfg.vocab, vc), vocab_body, (dh0, dw0, db0), refs)


def gradients(cfg: FusedConfig, arrays: OptionArrays, h, w, bias, cw, rows: RowCoefficients):
    """``(dh, dW, db)`` in float32 or the input dtype, by the configured schedule."""
    if cfg.schedule in ("token", "one_pass"):
        dh, dw, db = _grad_token_outer(cfg, arrays, h, w, bias, cw, rows, want_dw=True)
    elif cfg.schedule == "vocab":
        dh, dw, db = _grad_vocab_outer(cfg, arrays, h, w, bias, cw, rows, want_dh=True)
    else:
        dh, _, _ = _grad_token_outer(cfg, arrays, h, w, bias, cw, rows, want_dw=False)
        _, dw, db = _grad_vocab_outer(cfg, arrays, h, w, bias, cw, rows, want_dh=False)
    return dh, dw, (db if cfg.has_bias else None)


def one_pass(cfg: FusedConfig, arrays: OptionArrays, h, w, bias, labels, cw, cw_all):
    """Per-row results and the gradients for a unit cotangent on every row, in one token-outer pass.

    ``dh`` is kept in float32 like ``dW``, also for 16-bit hidden states: in 16 bits the unit-cotangent gradient
    could overflow (a ``"mean"`` over large class weights) or, scaled down first, underflow (small per-token
    gradients before a loss-scaling cotangent); the cotangent is applied in float32.

    Each token block's logits are kept in a ``[Tc, V]`` float32 row buffer between the statistics loop and the
    gradient loop, so ``weight`` takes part in three matmuls in all (as in the unfused loss).
    """
    refs = (h, w, bias, labels, cw, cw_all, arrays)
    tc = cfg.token_chunk
    ones = jnp.ones((tc,), cfg.acc_dtype)

    def token_body(i, carry):
        rows_all, dh_all, dw_all, db_all = carry
        t0 = block_start(i, tc, cfg.num_tokens)
        h_blk = take(cfg, h, t0, tc, 0)
        y_blk = lax.dynamic_slice_in_dim(labels, t0, tc)
        y_local = cfg.group.local_labels(y_blk, cfg.vocab)
        buf, stats, sums = _vocab_loop(cfg, arrays, h_blk, w, bias, y_local, cw, refs, keep_logits=True)
        rows = finish_rows(cfg, arrays, y_blk, cw_all, stats, sums)
        tmask = token_valid(cfg, i, t0)
        coefs = row_cotangents(cfg, rows, y_blk, ones, jnp.zeros_like(ones))
        dh_blk, dw_all, db_all = _grad_vocab_inner(
            cfg, arrays, h_blk, w, bias, cw, coefs, (dw_all, db_all), masked_rows(h_blk, tmask), tmask, refs, buf
        )
        return _put(rows_all, rows, t0), _put(dh_all, dh_blk, t0), dw_all, db_all

    n = cfg.num_tokens
    zeros = jnp.zeros((n,), cfg.acc_dtype)
    rows0 = FinishedRows(zeros, RowStats(zeros, zeros), zeros, zeros if cfg.has_smoothing else None, zeros, zeros)
    init = (
        rows0,
        jnp.zeros(h.shape, cfg.acc_dtype),
        jnp.zeros(w.shape, cfg.acc_dtype),
        jnp.zeros((cfg.vocab if cfg.has_bias else 0,), cfg.acc_dtype),
    )
    return fori(n_blocks(n, tc), token_body, init, refs)
