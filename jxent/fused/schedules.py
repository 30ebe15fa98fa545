"""The loops of the fused losses: the statistics passes and the four ways to accumulate the gradients.

Each loop is a ``lax.fori_loop`` over blocks (:mod:`jxent.fused.blocks`) of one or more linear heads
(:class:`jxent.fused.objective.Head`); what is computed per block is the :class:`jxent.fused.objective.Objective`'s.
The statistics passes are token-outer, vocabulary-inner and keep the running statistics of each row, merged block
by block (for softmax statistics, :func:`jxent._rowmath.merge`: the online log-sum-exp). The gradient passes
recompute each block's logits and differ only in which accumulator is complete after its inner loop (see
:func:`jxent.linear_softmax_cross_entropy` for the memory each one needs).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jxent._options import OptionArrays
from jxent._vma import fori
from jxent.fused.blocks import (
    block_start,
    dh_block,
    dw_block,
    logit_block,
    masked_rows,
    n_blocks,
    take,
    token_valid,
    vocab_valid,
    weight_block,
)
from jxent.fused.config import FusedConfig
from jxent.fused.objective import Head, Objective, row_slice

__all__ = ["forward", "gradients", "one_pass"]

Heads = tuple[Head, ...]


def _put(full: Any, part: Any, t0: Any) -> Any:
    """Writes the per-row arrays ``part`` (a pytree) into ``full`` at rows ``t0:``."""
    return jax.tree.map(lambda f, p: lax.dynamic_update_slice_in_dim(f, p.astype(f.dtype), t0, 0), full, part)


def _token_blocks(cfg: FusedConfig, heads: Heads, t0: Any) -> tuple:
    return tuple(take(cfg, hd.hidden, t0, cfg.token_chunk, 0) for hd in heads)


def _logit_blocks(cfg: FusedConfig, heads: Heads, h_blks: tuple, v0: Any) -> tuple[tuple, tuple]:
    """Each head's weight block and logit block at columns ``v0:v0+Vc``."""
    w_blks = tuple(weight_block(cfg, hd.weight, v0) for hd in heads)
    xs = tuple(logit_block(cfg, h, w, hd.bias, v0) for h, w, hd in zip(h_blks, w_blks, heads, strict=True))
    return w_blks, xs


def _vocab_loop(cfg, obj: Objective, arrays, stage, heads, h_blks, ctx_blk, cls, refs, bufs=None, keep=False):
    """The statistics of ``stage`` for the rows of one token block over this device's vocabulary. The logits come
    from ``bufs`` (the one-pass row buffers ``[Tc, V]`` per head) when given; ``keep`` fills them."""
    vc = cfg.vocab_chunk

    def body(j, carry):
        bufs, acc = carry
        v0 = block_start(j, vc, cfg.vocab)
        if bufs is not None and not keep:
            xs = tuple(lax.dynamic_slice_in_dim(b, v0, vc, 1) for b in bufs)
        else:
            _, xs = _logit_blocks(cfg, heads, h_blks, v0)
            if keep:
                bufs = tuple(lax.dynamic_update_slice_in_dim(b, x, v0, 1) for b, x in zip(bufs, xs, strict=True))
        part = obj.block(cfg, arrays, stage, xs, v0, vocab_valid(cfg, j, v0), ctx_blk, cls)
        return bufs, obj.merge(stage, acc, part)

    init = (bufs, obj.init(cfg, stage, cfg.token_chunk))
    return fori(n_blocks(cfg.vocab, vc), body, init, refs)


def _statistics(cfg: FusedConfig, obj: Objective, arrays: OptionArrays, stage: int, heads: Heads, ctx, cls):
    """Token-outer, vocabulary-inner pass: the statistics of ``stage`` for every row (this device's classes)."""
    refs = (heads, ctx, cls, arrays)
    tc = cfg.token_chunk

    def token_body(i, carry):
        t0 = block_start(i, tc, cfg.num_tokens)
        h_blks = _token_blocks(cfg, heads, t0)
        _, acc = _vocab_loop(cfg, obj, arrays, stage, heads, h_blks, row_slice(ctx, t0, tc), cls, refs)
        return _put(carry, acc, t0)

    n = cfg.num_tokens
    return fori(n_blocks(n, tc), token_body, obj.init(cfg, stage, n), refs)


def forward(cfg: FusedConfig, obj: Objective, arrays: OptionArrays, heads: Heads, ctx: Any, cls: Any) -> Any:
    """Every stage's statistics pass and finish: the finished row context of every row."""
    for stage in range(obj.num_stages):
        acc = _statistics(cfg, obj, arrays, stage, heads, ctx, cls)
        ctx = obj.finish(cfg, arrays, stage, acc, ctx, cls)
    return ctx


def _zero_grads(cfg: FusedConfig, heads: Heads, dh: bool, dw: bool, want: tuple[bool, ...]) -> tuple:
    """Per head: ``(dh, dW, db)`` accumulators (empty where not wanted, and for heads that need no gradient)."""
    out = []
    for hd, wanted in zip(heads, want, strict=True):
        with_dh, with_dw = dh and wanted, dw and wanted
        out.append(
            (
                jnp.zeros(hd.hidden.shape if with_dh else (0, 0), cfg.acc_dtype),
                jnp.zeros(hd.weight.shape if with_dw else (0, 0), cfg.acc_dtype),
                jnp.zeros((cfg.vocab,) if (with_dw and hd.bias is not None) else (0,), cfg.acc_dtype),
            )
        )
    return tuple(out)


def _token_outer_update(cfg: FusedConfig, head: Head, acc, dx, w_blk, h_dw, tmask, v0, wanted: bool):
    """Adds one block's ``dx`` to the ``dh`` block accumulator and (when ``h_dw`` is given) to the full ``dW``/``db``
    accumulators; ``h_dw``/``tmask`` have the rows of an overlapping last token block masked. A head that needs no
    gradient (``wanted`` false) keeps its empty accumulators, and XLA drops its ``dx``."""
    if not wanted:
        return acc
    dh_acc, dw_acc, db_acc = acc
    vc, ax = cfg.vocab_chunk, cfg.vocab_axis
    dx_m = dx.astype(cfg.matmul_dtype)
    dh_acc = dh_acc + dh_block(cfg, dx_m, w_blk)
    if h_dw is not None:
        upd = dw_block(cfg, h_dw, dx_m)
        dw_acc = lax.dynamic_update_slice_in_dim(dw_acc, lax.dynamic_slice_in_dim(dw_acc, v0, vc, ax) + upd, v0, ax)
        if head.bias is not None:
            col_sum = jnp.sum(dx if tmask is None else jnp.where(tmask[:, None], dx, 0.0), axis=0)
            db_acc = lax.dynamic_update_slice_in_dim(db_acc, lax.dynamic_slice_in_dim(db_acc, v0, vc) + col_sum, v0, 0)
    return dh_acc, dw_acc, db_acc


def _grad_vocab_inner(cfg, obj, arrays, heads, h_blks, cls, coefs_blk, accs, h_dws, tmask, refs, want, bufs=None):
    """The vocabulary loop of a token-outer gradient pass; ``bufs`` are the one-pass row buffers, if kept.
    ``accs`` holds each head's ``(dW, db)``; returns each head's ``(dh block, dW, db)`` (empty where not ``want``)."""
    vc = cfg.vocab_chunk

    def body(j, c):
        v0 = block_start(j, vc, cfg.vocab)
        w_blks = tuple(weight_block(cfg, hd.weight, v0) for hd in heads)
        if bufs is None:
            _, xs = _logit_blocks(cfg, heads, h_blks, v0)
        else:
            xs = tuple(lax.dynamic_slice_in_dim(b, v0, vc, 1) for b in bufs)
        dxs = obj.grad_block(cfg, arrays, xs, v0, vocab_valid(cfg, j, v0), coefs_blk, cls, None)
        return tuple(
            _token_outer_update(cfg, hd, acc, dx, w_blk, h_dw, tmask, v0, wanted)
            for hd, acc, dx, w_blk, h_dw, wanted in zip(heads, c, dxs, w_blks, h_dws, want, strict=True)
        )

    init = tuple(
        (jnp.zeros((cfg.token_chunk, hd.hidden.shape[1]) if wanted else (0, 0), cfg.acc_dtype), *acc)
        for hd, acc, wanted in zip(heads, accs, want, strict=True)
    )
    return fori(n_blocks(cfg.vocab, vc), body, init, refs)


def _dh_dtype(cfg: FusedConfig, h):
    """``dh`` blocks are stored in ``hidden``'s dtype, or in float32 when the slices' parts are summed after."""
    return cfg.acc_dtype if cfg.sharded else h.dtype


def _grad_token_outer(cfg: FusedConfig, obj, arrays, heads: Heads, cls, coefs, want_dw: bool, want: tuple):
    """Token-outer pass: each ``dh`` block is complete after its vocabulary loop; ``dW`` (if wanted) is a full
    ``[D, V]`` float32 accumulator."""
    refs = (heads, cls, coefs, arrays)
    tc = cfg.token_chunk

    def token_body(i, carry):
        t0 = block_start(i, tc, cfg.num_tokens)
        h_blks = _token_blocks(cfg, heads, t0)
        tmask = token_valid(cfg, i, t0) if want_dw else None
        # Rows of an overlapping last block were already done: their dh is rewritten unchanged, their dW masked.
        h_dws = tuple(masked_rows(h, tmask) if want_dw else None for h in h_blks)
        accs = tuple((dw, db) for _, dw, db in carry)
        coefs_blk = row_slice(coefs, t0, tc)
        out = _grad_vocab_inner(cfg, obj, arrays, heads, h_blks, cls, coefs_blk, accs, h_dws, tmask, refs, want)
        return tuple(
            (_put(c[0], o[0], t0) if wanted else c[0], o[1], o[2])
            for c, o, wanted in zip(carry, out, want, strict=True)
        )

    init = tuple(
        (jnp.zeros(hd.hidden.shape if wanted else (0, 0), _dh_dtype(cfg, hd.hidden)), dw, db)
        for hd, (_, dw, db), wanted in zip(
            heads, _zero_grads(cfg, heads, dh=False, dw=want_dw, want=want), want, strict=True
        )
    )
    return fori(n_blocks(cfg.num_tokens, tc), token_body, init, refs)


def _grad_vocab_outer(cfg: FusedConfig, obj, arrays, heads: Heads, cls, coefs, want_dh: bool, want: tuple):
    """Vocabulary-outer pass: each ``dW`` block ``[D, Vc]`` is complete after its token loop and written once in
    ``weight``'s dtype; ``dh`` (if wanted) is a full ``[N, D]`` float32 accumulator."""
    refs = (heads, cls, coefs, arrays)
    tc, vc = cfg.token_chunk, cfg.vocab_chunk

    def vocab_body(j, carry):
        v0 = block_start(j, vc, cfg.vocab)
        w_blks = tuple(weight_block(cfg, hd.weight, v0) for hd in heads)
        # Columns of an overlapping last block were already done: their dW is rewritten unchanged, their dh masked.
        vmask = vocab_valid(cfg, j, v0) if want_dh else None
        w_dhs = w_blks
        if vmask is not None:
            vm = vmask[None, :] if cfg.vocab_axis == 1 else vmask[:, None]
            w_dhs = tuple(jnp.where(vm, w, jnp.zeros((), w.dtype)) for w in w_blks)

        def token_body(i, c):
            t0 = block_start(i, tc, cfg.num_tokens)
            h_blks = _token_blocks(cfg, heads, t0)
            xs = tuple(logit_block(cfg, h, w, hd.bias, v0) for h, w, hd in zip(h_blks, w_blks, heads, strict=True))
            dxs = obj.grad_block(cfg, arrays, xs, v0, None, row_slice(coefs, t0, tc), cls, token_valid(cfg, i, t0))
            out = []
            for hd, (dh_acc, dw_blk, db_blk), h_blk, dx, w_dh, wanted in zip(
                heads, c, h_blks, dxs, w_dhs, want, strict=True
            ):
                if not wanted:
                    out.append((dh_acc, dw_blk, db_blk))
                    continue
                dx_m = dx.astype(cfg.matmul_dtype)
                dw_blk = dw_blk + dw_block(cfg, h_blk, dx_m)
                if hd.bias is not None:
                    db_blk = db_blk + jnp.sum(dx, axis=0)
                if want_dh:
                    upd = dh_block(cfg, dx_m, w_dh)
                    dh_acc = lax.dynamic_update_slice_in_dim(
                        dh_acc, lax.dynamic_slice_in_dim(dh_acc, t0, tc) + upd, t0, 0
                    )
                out.append((dh_acc, dw_blk, db_blk))
            return tuple(out)

        init = []
        for hd, (dh_all, _, _), wanted in zip(heads, carry, want, strict=True):
            d = hd.hidden.shape[1]
            blk_shape = (d, vc) if cfg.vocab_axis == 1 else (vc, d)
            db0 = jnp.zeros((vc if hd.bias is not None and wanted else 0,), cfg.acc_dtype)
            init.append((dh_all, jnp.zeros(blk_shape if wanted else (0, 0), cfg.acc_dtype), db0))
        blocks = fori(n_blocks(cfg.num_tokens, tc), token_body, tuple(init), refs)
        out = []
        for hd, (_, dw_all, db_all), (dh_all, dw_blk, db_blk), wanted in zip(heads, carry, blocks, want, strict=True):
            if not wanted:
                out.append((dh_all, dw_all, db_all))
                continue
            dw_all = lax.dynamic_update_slice_in_dim(dw_all, dw_blk.astype(dw_all.dtype), v0, axis=cfg.vocab_axis)
            if hd.bias is not None:
                db_all = lax.dynamic_update_slice_in_dim(db_all, db_blk, v0, 0)
            out.append((dh_all, dw_all, db_all))
        return tuple(out)

    init = tuple(
        (
            jnp.zeros(hd.hidden.shape if want_dh and wanted else (0, 0), cfg.acc_dtype),
            jnp.zeros(hd.weight.shape if wanted else (0, 0), hd.weight.dtype),
            db,
        )
        for hd, (_, _, db), wanted in zip(
            heads, _zero_grads(cfg, heads, dh=False, dw=True, want=want), want, strict=True
        )
    )
    return fori(n_blocks(cfg.vocab, vc), vocab_body, init, refs)


def gradients(
    cfg: FusedConfig, obj: Objective, arrays: OptionArrays, heads: Heads, cls: Any, coefs: Any, want: tuple
) -> tuple:
    """Per head, ``(dh, dW, db)`` in float32 or the input dtype (``db`` is ``None`` without a bias; all three are
    ``None`` for a head that needs no gradient, ``want`` false), by the configured schedule."""
    if cfg.schedule in ("token", "one_pass"):
        out = _grad_token_outer(cfg, obj, arrays, heads, cls, coefs, want_dw=True, want=want)
    elif cfg.schedule == "vocab":
        out = _grad_vocab_outer(cfg, obj, arrays, heads, cls, coefs, want_dh=True, want=want)
    else:
        dhs = _grad_token_outer(cfg, obj, arrays, heads, cls, coefs, want_dw=False, want=want)
        dws = _grad_vocab_outer(cfg, obj, arrays, heads, cls, coefs, want_dh=False, want=want)
        out = tuple((a[0], b[1], b[2]) for a, b in zip(dhs, dws, strict=True))
    return tuple(
        (dh, dw, db if hd.bias is not None else None) if wanted else (None, None, None)
        for hd, (dh, dw, db), wanted in zip(heads, out, want, strict=True)
    )


def one_pass(cfg: FusedConfig, obj: Objective, arrays: OptionArrays, heads: Heads, ctx, cls, unit_coefs, want):
    """The finished row context and the gradients for a fixed per-row cotangent, in one token-outer pass.

    ``unit_coefs(ctx_blk, t0)`` gives the gradient coefficients of a token block from its finished context (the
    cotangent is known in advance: a ``"mean"``/``"sum"`` reduction). Returns the context of every row and, per
    head, ``(dh, dW, db)`` in float32 (empty for heads that need no gradient, ``want`` false).

    ``dh`` is kept in float32 like ``dW``, also for 16-bit hidden states: in 16 bits the unit-cotangent gradient
    could overflow (a ``"mean"`` over large class weights) or, scaled down first, underflow (small per-token
    gradients before a loss-scaling cotangent); the cotangent is applied in float32.

    Each token block's logits are kept in a ``[Tc, V]`` float32 row buffer per head between the statistics loops and
    the gradient loop, so each weight takes part in three matmuls in all (as in the unfused loss).
    """
    refs = (heads, ctx, cls, arrays)
    tc = cfg.token_chunk

    def finish_block(h_blks, ctx_blk):
        bufs = tuple(jnp.zeros((tc, cfg.vocab), cfg.acc_dtype) for _ in heads)
        for stage in range(obj.num_stages):
            bufs, acc = _vocab_loop(
                cfg, obj, arrays, stage, heads, h_blks, ctx_blk, cls, refs, bufs=bufs, keep=stage == 0
            )
            ctx_blk = obj.finish(cfg, arrays, stage, acc, ctx_blk, cls)
        return bufs, ctx_blk

    def token_body(i, carry):
        ctx_all, grads = carry
        t0 = block_start(i, tc, cfg.num_tokens)
        h_blks = _token_blocks(cfg, heads, t0)
        bufs, ctx_blk = finish_block(h_blks, row_slice(ctx, t0, tc))
        tmask = token_valid(cfg, i, t0)
        h_dws = tuple(masked_rows(h, tmask) for h in h_blks)
        accs = tuple((dw, db) for _, dw, db in grads)
        coefs = unit_coefs(ctx_blk, t0)
        out = _grad_vocab_inner(cfg, obj, arrays, heads, h_blks, cls, coefs, accs, h_dws, tmask, refs, want, bufs)
        grads = tuple(
            (_put(g[0], o[0], t0) if wanted else g[0], o[1], o[2])
            for g, o, wanted in zip(grads, out, want, strict=True)
        )
        return _put(ctx_all, ctx_blk, t0), grads

    n = cfg.num_tokens
    shapes = jax.eval_shape(lambda: finish_block(_token_blocks(cfg, heads, 0), row_slice(ctx, 0, tc))[1])
    ctx0 = jax.tree.map(lambda s: jnp.zeros((n, *s.shape[1:]), s.dtype), shapes)
    init = (ctx0, _zero_grads(cfg, heads, dh=True, dw=True, want=want))
    return fori(n_blocks(n, tc), token_body, init, refs)
