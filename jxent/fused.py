"""Linear layer + softmax cross-entropy without materialising the ``[tokens, vocab]`` logits.

For hidden states :math:`h \\in \\mathbb{R}^{N \\times D}`, an output matrix :math:`W \\in \\mathbb{R}^{D \\times V}`
and an optional bias, the logits :math:`x = hW + b` are only ever formed one ``[token_chunk, vocab_chunk]`` block at
a time (``lax.fori_loop`` over ``dynamic_slice`` blocks). Each block is transformed (soft-cap, temperature) by
:func:`jxent.cross_entropy.transform_logits`, and each row uses the target coefficients of the dense loss
(:func:`jxent.cross_entropy.integer_label_coefficients`), :math:`q = a\\,\\mathrm{onehot}(y) + b\\,w`:

.. math::
  \\ell = a(\\mathrm{lse} - z_y) + b \\sum_c w_c(\\mathrm{lse} - z_c) + \\lambda_z \\mathrm{lse}^2,
  \\qquad \\frac{\\partial \\ell}{\\partial z} = \\Big(a + b \\sum_c w_c + 2\\lambda_z
  \\mathrm{lse}\\Big)\\, \\mathrm{softmax}(z) - q.

The statistics pass keeps a running max and sum per row (online log-sum-exp), the target logit and
:math:`\\sum_c w_c z_c`. Gradients come from a ``jax.custom_vjp``: ``dloss/dz`` of a block is pulled back through
the logit transform (``jax.vjp`` of ``transform_logits``), scaled by each row's cotangent and multiplied into
``dh``, ``dW`` and ``db`` with float32 accumulation. The vocabulary-parallel losses in :mod:`jxent.parallel` reuse
these kernels with the statistics combined across devices.

Reference: Wijmans et al., `Cut Your Losses in Large-Vocabulary Language Models
<https://arxiv.org/abs/2411.09009>`_, 2024.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jxent import _checks
from jxent.cross_entropy import check_options, integer_label_coefficients, is_zero, transform_logits
from jxent.reduction import reduce_loss, safe_divide

__all__ = ["linear_softmax_cross_entropy"]

SCHEDULES = ("auto", "one_pass", "split", "token", "vocab")
WEIGHT_LAYOUTS = ("dv", "vd")

# On accelerators, "auto" keeps a full float32 [N, D] dh accumulator ("vocab") up to this size, else "split".
ACCELERATOR_DH_BUDGET = 256 * 2**20


class _Static(NamedTuple):
    """Everything the kernels need to know at trace time (hashable)."""

    num_tokens: int
    vocab: int
    token_chunk: int
    vocab_chunk: int
    has_bias: bool
    has_class_weight: bool
    has_smoothing: bool
    has_z_loss: bool
    has_cap: bool
    has_temperature: bool
    ignore_index: int | None
    schedule: str
    matmul_dtype: str
    acc_dtype: str  # float32, or float64 for float64 inputs
    weight_dtype: str
    bias_dtype: str
    vocab_axis: int  # 1 for a [D, V] weight, 0 for a [V, D] one (a tied embedding passed as E.T)
    global_vocab: int  # V of the whole vocabulary (``vocab`` is this device's slice when ``axis_name`` is set)
    axis_name: Any = None  # mesh axis the vocabulary is sharded over (inside ``shard_map``), or None


class _Options(NamedTuple):
    """Scalar options as arrays in the accumulation dtype (constants: no gradient flows to them)."""

    label_smoothing: jax.Array
    z_loss: jax.Array
    soft_cap: jax.Array
    temperature: jax.Array


class _Rows(NamedTuple):
    """Per-row coefficients of ``dloss/dz = coef_p * softmax(z) - coef_a * onehot(y) - coef_b * w``."""

    coef_p: jax.Array
    coef_a: jax.Array
    coef_b: jax.Array | None
    labels: jax.Array
    lse: jax.Array


# --------------------------------------------------------------------------------------------------------------
# Per-row numerics (shared by the fused and the vocabulary-parallel paths)
# --------------------------------------------------------------------------------------------------------------


def target_coefficients(
    labels: jax.Array,
    num_classes: int,
    *,
    class_weight: jax.Array | None,
    label_smoothing: Any,
    ignore_index: int | None,
    dtype: Any = jnp.float32,
) -> tuple[jax.Array, jax.Array | None, jax.Array, jax.Array, jax.Array]:
    """``(a, b, counted, example_weight, weight_sum)`` for rows whose ``V`` classes are all present (``K = V``).

    ``a``, ``b``, ``counted`` and ``example_weight`` are those of
    :func:`jxent.cross_entropy.integer_label_coefficients`; ``weight_sum`` is :math:`\\sum_c w_c` (``V`` without
    class weights), so that :math:`\\sum_c q_c = a + b\\, \\sum_c w_c`.
    """
    a, b, counted, example_weight = integer_label_coefficients(
        labels,
        num_classes,
        class_weight=class_weight,
        label_smoothing=label_smoothing,
        num_present=num_classes,
        ignore_index=ignore_index,
        counted=jnp.ones(labels.shape, bool),
        dtype=dtype,
    )
    weight_sum = jnp.asarray(num_classes, dtype) if class_weight is None else jnp.sum(class_weight)
    return a, b, counted, example_weight, weight_sum


def row_loss(
    *,
    a: jax.Array,
    b: jax.Array | None,
    counted: jax.Array,
    lse: jax.Array,
    target_logit: jax.Array,
    weighted_logit_sum: jax.Array | None,
    weight_sum: jax.Array,
    z_loss: jax.Array | None,
) -> jax.Array:
    """``a (lse - z_y) + b (sum(w) lse - sum_c w_c z_c) + z_loss lse^2``, 0 for rows that do not count."""
    loss = a * (lse - target_logit)
    if b is not None and weighted_logit_sum is not None:
        loss = loss + b * (weight_sum * lse - weighted_logit_sum)
    if z_loss is not None:
        loss = loss + z_loss * jnp.square(lse)
    return jnp.where(counted, loss, 0.0)


def softmax_coefficient(
    *,
    a: jax.Array,
    b: jax.Array | None,
    counted: jax.Array,
    lse: jax.Array,
    weight_sum: jax.Array,
    z_loss: jax.Array | None,
) -> jax.Array:
    """``sum(q) + 2 z_loss lse = a + b sum(w) + 2 z_loss lse``: the factor of ``softmax(z)`` in ``dloss/dz``."""
    c = a
    if b is not None:
        c = c + b * weight_sum
    if z_loss is not None:
        c = c + 2.0 * z_loss * lse
    return jnp.where(counted, c, 0.0)


# --------------------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------------------


def _n_chunks(total: int, chunk: int) -> int:
    return -(-total // chunk)


def _start(k: jax.Array, chunk: int, total: int) -> jax.Array:
    """Start of block ``k``; the last block is shifted back to end at ``total`` (it then overlaps its neighbour)."""
    return jnp.minimum(k * chunk, total - chunk)


def _transform(st: _Static, opts: _Options):
    cap = opts.soft_cap if st.has_cap else None
    temperature = opts.temperature if st.has_temperature else 1.0
    return functools.partial(transform_logits, soft_cap=cap, temperature=temperature)


def _slice(st: _Static, x, start, size: int, axis: int) -> jax.Array:
    """A block of ``x`` in the matmul dtype.

    The barrier ties ``x`` to the loop index, so XLA cannot hoist an elementwise op on the whole of ``x`` out of the
    loop (the CPU backend computes 16-bit arrays in float32 and would otherwise cast all of ``weight`` at once).
    """
    x, start = lax.optimization_barrier((x, start))
    return lax.dynamic_slice_in_dim(x, start, size, axis=axis).astype(st.matmul_dtype)


def _weight_block(st: _Static, w, v0) -> jax.Array:
    """Columns ``v0:v0+Vc`` of the weight, in its own layout: ``[D, Vc]``, or ``[Vc, D]`` for a ``[V, D]`` one."""
    return _slice(st, w, v0, st.vocab_chunk, st.vocab_axis)


def _w_dims(st: _Static) -> int:
    """The ``D`` axis of a weight block."""
    return 1 - st.vocab_axis


def _logit_block(st: _Static, h_blk, w_blk, bias, v0) -> jax.Array:
    """``h_blk @ W[:, v0:v0+Vc] (+ bias)`` in the accumulation dtype, ``[Tc, Vc]``; ``dot_general`` contracts ``D``
    of the weight block in whichever layout it has (no transpose)."""
    dims = (((1,), (_w_dims(st),)), ((), ()))
    x = lax.dot_general(h_blk, w_blk, dims, preferred_element_type=st.acc_dtype)
    if st.has_bias:
        x = x + lax.dynamic_slice_in_dim(bias, v0, st.vocab_chunk).astype(st.acc_dtype)[None, :]
    return x


def _vocab_valid(st: _Static, k, v0) -> jax.Array | None:
    """Columns of block ``k`` not already covered by block ``k - 1`` (``None`` when blocks never overlap)."""
    if st.vocab % st.vocab_chunk == 0:
        return None
    return (v0 + jnp.arange(st.vocab_chunk)) >= k * st.vocab_chunk


def _token_valid(st: _Static, k, t0) -> jax.Array | None:
    if st.num_tokens % st.token_chunk == 0:
        return None
    return (t0 + jnp.arange(st.token_chunk)) >= k * st.token_chunk


def _block_stats(st: _Static, opts: _Options, x, v0, valid, labels_blk, cw):
    """Block max, sum of ``exp(z - max)``, target logit and ``sum_c w_c z_c`` of one logit block."""
    z = _transform(st, opts)(x)
    # The overlapped columns of a shifted last block are masked out here. (A sentinel column index would not do:
    # sharded, any integer can be a local label, e.g. ``V_local`` for the next device's first class.)
    is_target = (v0 + jnp.arange(st.vocab_chunk))[None, :] == labels_blk[:, None]
    if valid is not None:
        is_target = is_target & valid[None, :]
    z_lse = z if valid is None else jnp.where(valid[None, :], z, -jnp.inf)
    target = jnp.sum(jnp.where(is_target, z, 0.0), axis=1)
    wsum = None
    if st.has_smoothing:
        zv = z if valid is None else jnp.where(valid[None, :], z, 0.0)
        if st.has_class_weight:
            zv = zv * lax.dynamic_slice_in_dim(cw, v0, st.vocab_chunk)[None, :]
        wsum = jnp.sum(zv, axis=1)
    return z_lse, target, wsum


def _online_update(m, s, z_lse):
    """One step of the running ``(max, sum exp(z - max))`` of each row."""
    m_new = jnp.maximum(m, jnp.max(z_lse, axis=1))
    m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
    s_new = s * jnp.exp(m - m_safe) + jnp.sum(jnp.exp(z_lse - m_safe[:, None]), axis=1)
    return m_new, s_new


def _varying_axes(x) -> frozenset:
    """The ``shard_map`` mesh axes ``x`` varies over (empty outside ``shard_map``)."""
    aval = jax.typeof(x)
    mat = getattr(aval, "manual_axis_type", None)
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", frozenset()))


def _sum_to_type(ct, x):
    """Inside ``shard_map``, sums a cotangent over the mesh axes that its primal ``x`` is replicated over (e.g. the
    data axis for ``weight``), as each device only holds its own tokens' part."""
    extra = tuple(sorted(_varying_axes(ct) - _varying_axes(x)))
    return lax.psum(ct, extra) if extra else ct


def _fori(n: int, body, init, refs):
    """``lax.fori_loop(0, n, body, init)``; inside ``shard_map`` the initial carry is first marked as varying over
    the mesh axes that ``refs`` (the arrays the body reads) vary over, as the loop's carry types must match."""
    axes: frozenset = frozenset()
    for r in jax.tree.leaves(refs):
        axes = axes | _varying_axes(r)
    if axes:

        def vary(x):
            missing = tuple(sorted(axes - _varying_axes(x)))
            return lax.pcast(x, missing, to="varying") if missing else x

        init = jax.tree.map(vary, init)
    return lax.fori_loop(0, n, body, init)


def _stats_init(tc: int, dtype: Any):
    """``(max, sum, target logit, weighted logit sum)`` of ``tc`` rows before any block."""
    zeros = jnp.zeros((tc,), dtype)
    return jnp.full((tc,), -jnp.inf, dtype), zeros, zeros, zeros


def _finish_lse(m, s):
    lse = jnp.where(jnp.isfinite(m), m, 0.0) + jnp.log(s)
    return jnp.where(m == -jnp.inf, -jnp.inf, jnp.where(m == jnp.inf, jnp.inf, lse))


def _stats(st: _Static, opts: _Options, h, w, bias, labels, cw):
    """Token-outer, vocabulary-inner pass: running max, ``sum exp(z - max)``, ``z_y`` and ``sum_c w_c z_c`` per row,
    each ``[N]`` float32 (``labels`` are local to this vocabulary slice)."""
    refs = (h, w, bias, labels, cw, opts)
    n_tok = _n_chunks(st.num_tokens, st.token_chunk)
    n_voc = _n_chunks(st.vocab, st.vocab_chunk)
    tc = st.token_chunk

    def token_body(i, carry):
        t0 = _start(i, tc, st.num_tokens)
        h_blk = _slice(st, h, t0, tc, 0)
        y_blk = lax.dynamic_slice_in_dim(labels, t0, tc)

        def vocab_body(j, c):
            m, s, tgt, ws = c
            v0 = _start(j, st.vocab_chunk, st.vocab)
            x = _logit_block(st, h_blk, _weight_block(st, w, v0), bias, v0)
            z_lse, t, zw = _block_stats(st, opts, x, v0, _vocab_valid(st, j, v0), y_blk, cw)
            m, s = _online_update(m, s, z_lse)
            return m, s, tgt + t, (ws + zw) if zw is not None else ws

        stats = _fori(n_voc, vocab_body, _stats_init(tc, st.acc_dtype), refs)
        return tuple(lax.dynamic_update_slice_in_dim(a, b, t0, 0) for a, b in zip(carry, stats, strict=True))

    return _fori(n_tok, token_body, _stats_init(st.num_tokens, st.acc_dtype), refs)


def _combine(st: _Static, m, s, target, wsum):
    """``(lse, z_y, sum_c w_c z_c)`` from the running statistics; across the vocabulary shards when sharded."""
    if st.axis_name is not None:
        # The shift does not change lse; without a gradient, pmax needs no derivative rule (it has none), so
        # grad of grad works across shards too.
        m_all = lax.pmax(lax.stop_gradient(m), st.axis_name)
        m_safe = jnp.where(jnp.isfinite(m_all), m_all, 0.0)
        s = lax.psum(s * jnp.exp(m - m_safe), st.axis_name)
        m = m_all
        target = lax.psum(target, st.axis_name)
        wsum = lax.psum(wsum, st.axis_name) if st.has_smoothing else wsum
    return _finish_lse(m, s), target, wsum


def _local_labels(st: _Static, labels):
    """Labels relative to this device's vocabulary slice (out of ``[0, V_local)`` when another device owns them)."""
    if st.axis_name is None:
        return labels
    return labels - lax.axis_index(st.axis_name) * st.vocab


def _logit_cotangent(st: _Static, opts: _Options, x, v0, valid, rows_blk: _Rows, cw, token_valid):
    """``dloss/dx`` of one block: the ``dloss/dz`` above, pulled back through soft-cap and temperature."""
    if st.has_cap or st.has_temperature:
        z, pullback = jax.vjp(_transform(st, opts), x)
    else:
        z, pullback = x, None
    coef_p, coef_a = rows_blk.coef_p, rows_blk.coef_a
    coef_b = rows_blk.coef_b
    if token_valid is not None:
        coef_p = jnp.where(token_valid, coef_p, 0.0)
        coef_a = jnp.where(token_valid, coef_a, 0.0)
        coef_b = None if coef_b is None else jnp.where(token_valid, coef_b, 0.0)
    p = jnp.exp(z - rows_blk.lse[:, None])
    cols = v0 + jnp.arange(st.vocab_chunk)
    dz = coef_p[:, None] * p - jnp.where(cols[None, :] == rows_blk.labels[:, None], coef_a[:, None], 0.0)
    if coef_b is not None:
        spread = lax.dynamic_slice_in_dim(cw, v0, st.vocab_chunk)[None, :] if st.has_class_weight else 1.0
        dz = dz - coef_b[:, None] * spread
    if valid is not None:
        dz = jnp.where(valid[None, :], dz, 0.0)
    return dz if pullback is None else pullback(dz)[0]


def _slice_rows(rows: _Rows, t0, size) -> _Rows:
    def cut(r: Any) -> Any:
        return None if r is None else lax.dynamic_slice_in_dim(r, t0, size)

    return _Rows(cut(rows.coef_p), cut(rows.coef_a), cut(rows.coef_b), cut(rows.labels), cut(rows.lse))


def _dh_block(st: _Static, dx, w_blk) -> jax.Array:
    """``dx @ W_blk^T``, ``[Tc, D]``: contracts the vocabulary axis of the weight block in its own layout."""
    dims = (((1,), (st.vocab_axis,)), ((), ()))
    return lax.dot_general(dx, w_blk, dims, preferred_element_type=st.acc_dtype)


def _dw_block(st: _Static, h_blk, dx) -> jax.Array:
    """``h_blk^T @ dx`` as a weight block: ``[D, Vc]``, or ``[Vc, D]`` for a ``[V, D]`` weight."""
    if st.vocab_axis == 1:
        return lax.dot_general(h_blk, dx, (((0,), (0,)), ((), ())), preferred_element_type=st.acc_dtype)
    return lax.dot_general(dx, h_blk, (((0,), (0,)), ((), ())), preferred_element_type=st.acc_dtype)


def _token_outer_update(st: _Static, acc, dx, w_blk, h_dw, tvalid, v0):
    """Adds one block's ``dx`` to the ``dh`` block accumulator and (when ``h_dw`` is given) to the full ``dW``/``db``
    accumulators; ``h_dw``/``tvalid`` have the rows of an overlapping last token block masked."""
    dh_acc, dw_acc, db_acc = acc
    vc = st.vocab_chunk
    dx_m = dx.astype(st.matmul_dtype)
    dh_acc = dh_acc + _dh_block(st, dx_m, w_blk)
    if h_dw is not None:
        ax = st.vocab_axis
        upd = _dw_block(st, h_dw, dx_m)
        dw_acc = lax.dynamic_update_slice_in_dim(dw_acc, lax.dynamic_slice_in_dim(dw_acc, v0, vc, ax) + upd, v0, ax)
        if st.has_bias:
            col_sum = jnp.sum(dx if tvalid is None else jnp.where(tvalid[:, None], dx, 0.0), axis=0)
            db_acc = lax.dynamic_update_slice_in_dim(db_acc, lax.dynamic_slice_in_dim(db_acc, v0, vc) + col_sum, v0, 0)
    return dh_acc, dw_acc, db_acc


def _dh_dtype(st: _Static, h):
    """``dh`` blocks are stored in ``hidden``'s dtype, or in float32 when the shards' parts are summed after."""
    return st.acc_dtype if st.axis_name is not None else h.dtype


def _masked_rows(h_blk, tvalid):
    return h_blk if tvalid is None else jnp.where(tvalid[:, None], h_blk, jnp.zeros((), h_blk.dtype))


def _grad_token_outer(st: _Static, opts: _Options, h, w, bias, cw, rows: _Rows, want_dw: bool):
    """Token-outer pass: each ``dh`` block is complete after its vocabulary loop; ``dW`` (if wanted) is a full
    ``[D, V]`` float32 accumulator."""
    refs = (h, w, bias, cw, rows, opts)
    n_tok = _n_chunks(st.num_tokens, st.token_chunk)
    n_voc = _n_chunks(st.vocab, st.vocab_chunk)
    tc, vc = st.token_chunk, st.vocab_chunk
    d = h.shape[1]

    def token_body(i, carry):
        dh_all, dw_all, db_all = carry
        t0 = _start(i, tc, st.num_tokens)
        h_blk = _slice(st, h, t0, tc, 0)
        rows_blk = _slice_rows(rows, t0, tc)
        tvalid = _token_valid(st, i, t0) if want_dw else None
        # Rows of an overlapping last block were already done: their dh is rewritten unchanged, their dW masked.
        h_dw = _masked_rows(h_blk, tvalid)

        def vocab_body(j, c):
            v0 = _start(j, vc, st.vocab)
            w_blk = _weight_block(st, w, v0)
            x = _logit_block(st, h_blk, w_blk, bias, v0)
            dx = _logit_cotangent(st, opts, x, v0, _vocab_valid(st, j, v0), rows_blk, cw, None)
            return _token_outer_update(st, c, dx, w_blk, h_dw if want_dw else None, tvalid, v0)

        dh_blk, dw_all, db_all = _fori(n_voc, vocab_body, (jnp.zeros((tc, d), st.acc_dtype), dw_all, db_all), refs)
        dh_all = lax.dynamic_update_slice_in_dim(dh_all, dh_blk.astype(dh_all.dtype), t0, 0)
        return dh_all, dw_all, db_all

    dw0 = jnp.zeros(w.shape if want_dw else (0, 0), st.acc_dtype)
    db0 = jnp.zeros((st.vocab,) if (want_dw and st.has_bias) else (0,), st.acc_dtype)
    dh0 = jnp.zeros(h.shape, _dh_dtype(st, h))
    return _fori(n_tok, token_body, (dh0, dw0, db0), refs)


def _rows_pass(st: _Static, opts: _Options, h, w, bias, labels, cw):
    """Loss, ``lse`` and the gradients for a unit cotangent on every row, in one token-outer pass.

    ``dh`` is kept in float32 like ``dW``, also for 16-bit hidden states: in 16 bits the unit-cotangent gradient
    could overflow (a ``"mean"`` over large class weights) or, scaled down first, underflow (small per-token
    gradients before a loss-scaling cotangent); the cotangent is applied in float32.

    Each token block's logits are kept in a ``[Tc, V]`` float32 row buffer between the statistics loop and the
    gradient loop, so ``weight`` takes part in three matmuls in all (as in the unfused loss).
    """
    refs = (h, w, bias, labels, cw, opts)
    n_tok = _n_chunks(st.num_tokens, st.token_chunk)
    n_voc = _n_chunks(st.vocab, st.vocab_chunk)
    tc, vc = st.token_chunk, st.vocab_chunk
    d = h.shape[1]
    a_all, b_all, counted_all, _, weight_sum = _coefficients(st, opts, labels, cw)
    z_loss = opts.z_loss if st.has_z_loss else None

    def token_body(i, carry):
        loss_all, lse_all, dh_all, dw_all, db_all = carry
        t0 = _start(i, tc, st.num_tokens)
        h_blk = _slice(st, h, t0, tc, 0)
        y_blk = lax.dynamic_slice_in_dim(labels, t0, tc)

        def stats_body(j, c):
            buf, m, s, tgt, ws = c
            v0 = _start(j, vc, st.vocab)
            x = _logit_block(st, h_blk, _weight_block(st, w, v0), bias, v0)
            z_lse, t, zw = _block_stats(st, opts, x, v0, _vocab_valid(st, j, v0), y_blk, cw)
            m, s = _online_update(m, s, z_lse)
            buf = lax.dynamic_update_slice_in_dim(buf, x, v0, 1)
            return buf, m, s, tgt + t, (ws + zw) if zw is not None else ws

        buf0 = jnp.zeros((tc, st.vocab), st.acc_dtype)
        buf, m, s, tgt, ws = _fori(n_voc, stats_body, (buf0, *_stats_init(tc, st.acc_dtype)), refs)
        lse = _finish_lse(m, s)
        a, counted = (lax.dynamic_slice_in_dim(r, t0, tc) for r in (a_all, counted_all))
        b = None if b_all is None else lax.dynamic_slice_in_dim(b_all, t0, tc)
        loss = row_loss(
            a=a,
            b=b,
            counted=counted,
            lse=lse,
            target_logit=tgt,
            weighted_logit_sum=ws if st.has_smoothing else None,
            weight_sum=weight_sum,
            z_loss=z_loss,
        )
        c = softmax_coefficient(a=a, b=b, counted=counted, lse=lse, weight_sum=weight_sum, z_loss=z_loss)
        rows_blk = _Rows(coef_p=c, coef_a=a, coef_b=b, labels=y_blk, lse=lse)
        tvalid = _token_valid(st, i, t0)
        h_dw = _masked_rows(h_blk, tvalid)

        def grad_body(j, acc):
            v0 = _start(j, vc, st.vocab)
            x = lax.dynamic_slice_in_dim(buf, v0, vc, 1)
            dx = _logit_cotangent(st, opts, x, v0, _vocab_valid(st, j, v0), rows_blk, cw, None)
            return _token_outer_update(st, acc, dx, _weight_block(st, w, v0), h_dw, tvalid, v0)

        dh_blk, dw_all, db_all = _fori(n_voc, grad_body, (jnp.zeros((tc, d), st.acc_dtype), dw_all, db_all), refs)
        return (
            lax.dynamic_update_slice_in_dim(loss_all, loss, t0, 0),
            lax.dynamic_update_slice_in_dim(lse_all, lse, t0, 0),
            lax.dynamic_update_slice_in_dim(dh_all, dh_blk.astype(dh_all.dtype), t0, 0),
            dw_all,
            db_all,
        )

    zeros = jnp.zeros((st.num_tokens,), st.acc_dtype)
    init = (
        zeros,
        zeros,
        jnp.zeros(h.shape, st.acc_dtype),
        jnp.zeros(w.shape, st.acc_dtype),
        jnp.zeros((st.vocab if st.has_bias else 0,), st.acc_dtype),
    )
    return _fori(n_tok, token_body, init, refs)


def _grad_vocab_outer(st: _Static, opts: _Options, h, w, bias, cw, rows: _Rows, want_dh: bool):
    """Vocabulary-outer pass: each ``dW`` block ``[D, Vc]`` is complete after its token loop and written once in
    ``weight``'s dtype; ``dh`` (if wanted) is a full ``[N, D]`` float32 accumulator."""
    refs = (h, w, bias, cw, rows, opts)
    n_tok = _n_chunks(st.num_tokens, st.token_chunk)
    n_voc = _n_chunks(st.vocab, st.vocab_chunk)
    tc, vc = st.token_chunk, st.vocab_chunk
    d = h.shape[1]

    def vocab_body(j, carry):
        dh_all, dw_all, db_all = carry
        v0 = _start(j, vc, st.vocab)
        w_blk = _weight_block(st, w, v0)
        # Columns of an overlapping last block were already done: their dW is rewritten unchanged, their dh masked.
        vvalid = _vocab_valid(st, j, v0) if want_dh else None
        if vvalid is not None:
            vmask = vvalid[None, :] if st.vocab_axis == 1 else vvalid[:, None]
            w_dh = jnp.where(vmask, w_blk, jnp.zeros((), w_blk.dtype))
        else:
            w_dh = w_blk

        def token_body(i, c):
            dh_acc, dw_blk, db_blk = c
            t0 = _start(i, tc, st.num_tokens)
            h_blk = _slice(st, h, t0, tc, 0)
            rows_blk = _slice_rows(rows, t0, tc)
            x = _logit_block(st, h_blk, w_blk, bias, v0)
            dx = _logit_cotangent(st, opts, x, v0, None, rows_blk, cw, _token_valid(st, i, t0))
            dx_m = dx.astype(st.matmul_dtype)
            dw_blk = dw_blk + _dw_block(st, h_blk, dx_m)
            if st.has_bias:
                db_blk = db_blk + jnp.sum(dx, axis=0)
            if want_dh:
                upd = _dh_block(st, dx_m, w_dh)
                dh_acc = lax.dynamic_update_slice_in_dim(dh_acc, lax.dynamic_slice_in_dim(dh_acc, t0, tc) + upd, t0, 0)
            return dh_acc, dw_blk, db_blk

        blk_shape = (d, vc) if st.vocab_axis == 1 else (vc, d)
        init = (dh_all, jnp.zeros(blk_shape, st.acc_dtype), jnp.zeros((vc if st.has_bias else 0,), st.acc_dtype))
        dh_all, dw_blk, db_blk = _fori(n_tok, token_body, init, refs)
        dw_all = lax.dynamic_update_slice_in_dim(dw_all, dw_blk.astype(dw_all.dtype), v0, axis=st.vocab_axis)
        if st.has_bias:
            db_all = lax.dynamic_update_slice_in_dim(db_all, db_blk, v0, 0)
        return dh_all, dw_all, db_all

    dh0 = jnp.zeros(h.shape if want_dh else (0, 0), st.acc_dtype)
    dw0 = jnp.zeros(w.shape, w.dtype)
    db0 = jnp.zeros((st.vocab if st.has_bias else 0,), st.acc_dtype)
    return _fori(n_voc, vocab_body, (dh0, dw0, db0), refs)


def _gradients(st: _Static, opts: _Options, h, w, bias, cw, rows: _Rows):
    """``(dh, dW, db)`` in float32 or the input dtype, by the chosen schedule."""
    schedule = st.schedule
    if schedule in ("token", "one_pass"):
        dh, dw, db = _grad_token_outer(st, opts, h, w, bias, cw, rows, want_dw=True)
    elif schedule == "vocab":
        dh, dw, db = _grad_vocab_outer(st, opts, h, w, bias, cw, rows, want_dh=True)
    else:
        dh, _, _ = _grad_token_outer(st, opts, h, w, bias, cw, rows, want_dw=False)
        _, dw, db = _grad_vocab_outer(st, opts, h, w, bias, cw, rows, want_dh=False)
    return dh, dw, (db if st.has_bias else None)


# --------------------------------------------------------------------------------------------------------------
# custom_vjp core: per-row losses and lse
# --------------------------------------------------------------------------------------------------------------


def _all_gather_invariant(x, axis_name):
    """``all_gather`` typed as the same on every device (needed for outputs that ``shard_map`` sees replicated)."""
    try:
        return lax.all_gather(x, axis_name, tiled=True, to="invarying")
    except TypeError:  # pragma: no cover - JAX without varying-axis types
        return lax.all_gather(x, axis_name, tiled=True)


def _coefficients(st: _Static, opts: _Options, labels, cw):
    """Per-row target coefficients from the global labels (and the gathered class weights when sharded)."""
    if cw is not None and st.axis_name is not None:
        cw = _all_gather_invariant(cw, st.axis_name)
    return target_coefficients(
        labels,
        st.global_vocab,
        class_weight=cw,
        label_smoothing=opts.label_smoothing if st.has_smoothing else 0.0,
        ignore_index=st.ignore_index,
        dtype=st.acc_dtype,
    )


def _forward(st: _Static, h, w, bias, labels, cw, opts: _Options):
    lse, target, zw = _combine(st, *_stats(st, opts, h, w, bias, _local_labels(st, labels), cw))
    a, b, counted, _, weight_sum = _coefficients(st, opts, labels, cw)
    loss = row_loss(
        a=a,
        b=b,
        counted=counted,
        lse=lse,
        target_logit=target,
        weighted_logit_sum=zw,
        weight_sum=weight_sum,
        z_loss=opts.z_loss if st.has_z_loss else None,
    )
    return loss, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(st: _Static, h, w, bias, labels, cw, opts: _Options):
    return _forward(st, h, w, bias, labels, cw, opts)


def _fused_fwd(st: _Static, h, w, bias, labels, cw, opts: _Options):
    loss, lse = _forward(st, h, w, bias, labels, cw, opts)
    return (loss, lse), (h, w, bias, labels, cw, opts, lse)


def _row_cotangents(st: _Static, opts: _Options, labels, cw, lse, ct_loss, ct_lse) -> _Rows:
    """Per-row coefficients of ``dx`` for per-row cotangents of the loss and of ``lse``."""
    a, b, counted, _, weight_sum = _coefficients(st, opts, labels, cw)
    z_loss = opts.z_loss if st.has_z_loss else None
    c = softmax_coefficient(a=a, b=b, counted=counted, lse=lse, weight_sum=weight_sum, z_loss=z_loss)
    ct_loss = ct_loss.astype(st.acc_dtype)
    return _Rows(
        coef_p=ct_loss * c + ct_lse.astype(st.acc_dtype),
        coef_a=ct_loss * a,
        coef_b=None if b is None else ct_loss * b,
        labels=_local_labels(st, labels),
        lse=lse,
    )


def _fused_bwd(st: _Static, res, cts):
    h, w, bias, labels, cw, opts, lse = res
    ct_loss, ct_lse = cts
    rows = _row_cotangents(st, opts, labels, cw, lse, ct_loss, ct_lse)
    dh, dw, db = _gradients(st, opts, h, w, bias, cw, rows)
    if st.axis_name is not None:
        dh = lax.psum(dh, st.axis_name)  # every vocabulary slice contributes to each token's dh
    dh = _sum_to_type(dh, h).astype(h.dtype)
    dw = _sum_to_type(dw, w).astype(w.dtype)
    db = None if db is None else _sum_to_type(db, bias).astype(bias.dtype)
    return dh, dw, db, None, None, _Options(*(jnp.zeros_like(o) for o in opts))


_fused.defvjp(_fused_fwd, _fused_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused_total(st: _Static, h, w, bias, labels, cw, opts: _Options):
    """``sum`` of the per-row losses, for ``"mean"``/``"sum"``: the cotangent is one scalar."""
    return jnp.sum(_forward(st, h, w, bias, labels, cw, opts)[0])


def _fused_total_fwd(st: _Static, h, w, bias, labels, cw, opts: _Options):
    loss, _, dh, dw, db = _rows_pass(st, opts, h, w, bias, labels, cw)
    return jnp.sum(loss), (dh, dw, db if st.has_bias else None, opts, jnp.zeros((0,), h.dtype))


def _fused_total_bwd(st: _Static, res, ct):
    dh, dw, db, opts, h_dtype = res  # h_dtype: an empty array of the hidden states' dtype
    ct = ct.astype(st.acc_dtype)
    dh = (ct * dh).astype(h_dtype.dtype)
    dw = (ct * dw).astype(st.weight_dtype)
    db = None if db is None else (ct * db).astype(st.bias_dtype)
    return dh, dw, db, None, None, _Options(*(jnp.zeros_like(o) for o in opts))


_fused_total.defvjp(_fused_total_fwd, _fused_total_bwd)


# --------------------------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------------------------


def untransposed(weight: Any) -> Any:
    """``E`` when ``weight`` is ``E.T`` (a 2-D transpose) traced in the current ``jit``, else ``None``.

    Under ``jit`` (and ``jit`` of ``grad``), ``E.T`` is a transpose op in the trace; looking through it lets the
    blocks be sliced from ``E`` in its own ``[V, D]`` layout, so XLA never materialises the transposed matrix (a
    while-loop operand would otherwise get a transposed copy). This reads JAX's tracer internals and falls back to
    ``None`` (the ``[D, V]`` path, which copies) whenever they are not what it expects.
    """
    try:
        return _untransposed(weight)
    except Exception:  # pragma: no cover - depends on JAX internals
        return None


def _untransposed(x: Any) -> Any:
    if not isinstance(x, jax.core.Tracer) or getattr(x, "ndim", 0) != 2:
        return None
    parent = getattr(x, "parent", None)
    if parent is not None:  # a jaxpr tracer: the equation that made it
        if getattr(parent.primitive, "name", None) == "transpose" and tuple(parent.params["permutation"]) == (1, 0):
            (source,) = parent.in_tracers
            return source if isinstance(source, jax.core.Tracer) and source.shape == x.shape[::-1] else None
        return None
    primal, tangent = getattr(x, "primal", None), getattr(x, "tangent", None)
    if primal is None or tangent is None or type(x).__name__ not in ("LinearizeTracer", "JVPTracer"):
        return None
    p, t = _untransposed(primal), _untransposed(tangent)
    if p is None or t is None:
        return None
    tracer_type: Any = type(x)
    return tracer_type(x._trace, p, t)  # the same differentiable value, one transpose earlier


def _chunk(value: int | None, default: int, total: int, name: str) -> int:
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
    return int(min(value, total))


def _platform() -> str:
    """The platform computations go to: that of ``jax.default_device`` when set, else the default backend."""
    device = getattr(jax.config, "jax_default_device", None)
    if device is not None:
        return str(getattr(device, "platform", device))
    return jax.default_backend()


def _choose_schedule(schedule: str, w_dtype: Any, sharded: bool, cpu: bool, dh_bytes: int) -> str:
    """``schedule="auto"``: see the table in :func:`linear_softmax_cross_entropy`."""
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}; got {schedule!r}.")
    if schedule == "one_pass" and sharded:
        return "token"
    if schedule != "auto":
        return schedule
    if not cpu:  # few, large blocks: each loop iteration costs a kernel launch or more
        return "vocab" if dh_bytes <= ACCELERATOR_DH_BUDGET else "split"
    # A float32 weight gradient is its own accumulator, so the token-outer loops need no extra [D, V] buffer.
    if jnp.dtype(w_dtype).itemsize >= 4:
        return "token" if sharded else "one_pass"
    return "split"


def _default_chunks(schedule: str, cpu: bool, hidden_size: int, vocab: int) -> tuple[int, int]:
    """``(token_chunk, vocab_chunk)`` defaults (clipped to the problem afterwards)."""
    if schedule == "one_pass":  # the [Tc, V] float32 row buffer: about 32 MiB
        return int(min(1024, max(16, 2**23 // vocab))), 2048
    if cpu:  # [Tc, D] and [D, Vc] float32 blocks of about 8 MiB each (the CPU computes 16-bit blocks in float32)
        size = int(min(2048, max(128, 2 ** int(np.log2(max(2**21 // max(hidden_size, 1), 1))))))
        return size, size
    return 8192, (2048 if schedule == "vocab" else 8192)


class _Prepared(NamedTuple):
    st: _Static
    opts: _Options
    hidden: jax.Array  # [N, D]
    weight: jax.Array
    bias: jax.Array | None
    labels: jax.Array  # [N] int32
    class_weight: jax.Array | None  # float32, no gradient
    batch_shape: tuple[int, ...]


def prepare(
    hidden: Any,
    weight: Any,
    labels: Any,
    *,
    bias: Any,
    class_weight: Any,
    ignore_index: int | None,
    label_smoothing: Any,
    z_loss: Any,
    soft_cap: Any,
    temperature: Any,
    reduction: str,
    chunk_size: int | None,
    token_chunk_size: int | None,
    schedule: str,
    weight_layout: str = "dv",
    axis_name: Any = None,
    axis_size: int = 1,
) -> _Prepared:
    """Checks the arguments and fixes the trace-time configuration. With ``axis_name``, ``weight``, ``bias`` and
    ``class_weight`` are this device's slice of ``axis_size`` equal vocabulary slices and ``labels`` are global."""
    check_options(
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        soft_cap=soft_cap,
        temperature=temperature,
        reduction=reduction,
        ignore_index=ignore_index,
    )
    hidden = _checks.as_float_array(hidden, "hidden")
    weight = _checks.as_float_array(weight, "weight")
    labels = _checks.as_int_array(labels, "labels")
    if hidden.ndim < 1:
        raise ValueError(f"`hidden` must have shape [..., D]; got shape {tuple(hidden.shape)}.")
    if weight_layout not in WEIGHT_LAYOUTS:
        raise ValueError(f"`weight_layout` must be one of {WEIGHT_LAYOUTS}; got {weight_layout!r}.")
    d_axis = 0 if weight_layout == "dv" else 1
    if weight.ndim != 2 or weight.shape[d_axis] != hidden.shape[-1]:
        expected = "[D, V]" if weight_layout == "dv" else "[V, D]"
        other = "`weight_layout='vd'` for a [V, D] matrix" if weight_layout == "dv" else "the default layout [D, V]"
        raise ValueError(
            f"`weight` must have shape {expected} with D = hidden.shape[-1] = {hidden.shape[-1]}; got shape "
            f"{tuple(weight.shape)}. Use {other}."
        )
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(
            f"`labels` must have shape {tuple(hidden.shape[:-1])} (hidden's shape without D); got shape "
            f"{tuple(labels.shape)}."
        )
    d, vocab = weight.shape[d_axis], weight.shape[1 - d_axis]
    if vocab < 1:
        raise ValueError("`weight` must have at least one class (V >= 1).")
    vocab_axis = 1 - d_axis
    embedding = untransposed(weight) if weight_layout == "dv" else None
    if embedding is not None:  # `weight` is `E.T` traced here: use E's [V, D] layout, never the transpose
        weight, vocab_axis = embedding, 0
    if bias is not None:
        bias = _checks.as_float_array(bias, "bias")
        if bias.shape != (vocab,):
            raise ValueError(f"`bias` must have shape ({vocab},); got shape {tuple(bias.shape)}.")
    cw = None
    if class_weight is not None:
        cw = _checks.as_float_array(class_weight, "class_weight")
        if cw.shape != (vocab,):
            raise ValueError(f"`class_weight` must have shape ({vocab},); got shape {tuple(cw.shape)}.")
        cw = lax.stop_gradient(cw)
    batch_shape = tuple(labels.shape)
    st, opts = make_config(
        num_tokens=math.prod(batch_shape),
        vocab=vocab,
        hidden_size=d,
        dtypes=(hidden.dtype, weight.dtype),
        weight_dtype=weight.dtype,
        bias_dtype=None if bias is None else bias.dtype,
        has_class_weight=cw is not None,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        soft_cap=soft_cap,
        temperature=temperature,
        chunk_size=chunk_size,
        token_chunk_size=token_chunk_size,
        schedule=schedule,
        axis_name=axis_name,
        axis_size=axis_size,
        vocab_axis=vocab_axis,
    )
    cw = None if cw is None else cw.astype(st.acc_dtype)
    h2 = hidden.reshape(-1, d)
    y = _checks.labels_as_int32(labels.reshape(-1), st.global_vocab, ignore_index)
    return _Prepared(st, opts, h2, weight, bias, y, cw, batch_shape)


def make_config(
    *,
    num_tokens: int,
    vocab: int,
    hidden_size: int,
    dtypes: tuple[Any, ...],
    weight_dtype: Any,
    bias_dtype: Any,
    has_class_weight: bool,
    ignore_index: int | None,
    label_smoothing: Any,
    z_loss: Any,
    soft_cap: Any,
    temperature: Any,
    chunk_size: int | None,
    token_chunk_size: int | None,
    schedule: str,
    axis_name: Any = None,
    axis_size: int = 1,
    vocab_axis: int = 1,
) -> tuple[_Static, _Options]:
    """The trace-time configuration and the scalar options (as constants in the compute dtype)."""
    n = max(num_tokens, 1)
    cpu = _platform() == "cpu"
    resolved = _choose_schedule(schedule, weight_dtype, axis_name is not None, cpu, 4 * n * hidden_size)
    default_tc, default_vc = _default_chunks(resolved, cpu, hidden_size, vocab)
    matmul_dtype = functools.reduce(jnp.promote_types, dtypes)
    acc_dtype = _checks.compute_dtype(matmul_dtype)
    if cpu:
        matmul_dtype = _checks.compute_dtype(matmul_dtype)  # no 16-bit matmul units: cast blocks to float32
    st = _Static(
        num_tokens=n,
        vocab=vocab,
        token_chunk=_chunk(token_chunk_size, default_tc, n, "token_chunk_size"),
        vocab_chunk=_chunk(chunk_size, default_vc, vocab, "chunk_size"),
        has_bias=bias_dtype is not None,
        has_class_weight=has_class_weight,
        has_smoothing=not is_zero(label_smoothing),
        has_z_loss=not is_zero(z_loss),
        has_cap=soft_cap is not None,
        has_temperature=_checks.concrete_value(temperature) != 1.0,
        ignore_index=ignore_index,
        schedule=resolved,
        matmul_dtype=jnp.dtype(matmul_dtype).name,
        acc_dtype=jnp.dtype(acc_dtype).name,
        weight_dtype=jnp.dtype(weight_dtype).name,
        bias_dtype="" if bias_dtype is None else jnp.dtype(bias_dtype).name,
        vocab_axis=vocab_axis,
        global_vocab=vocab * axis_size,
        axis_name=axis_name,
    )
    as_acc = functools.partial(jnp.asarray, dtype=acc_dtype)
    opts = _Options(
        label_smoothing=lax.stop_gradient(as_acc(label_smoothing)),
        z_loss=lax.stop_gradient(as_acc(z_loss)),
        soft_cap=lax.stop_gradient(as_acc(1.0 if soft_cap is None else soft_cap)),
        temperature=lax.stop_gradient(as_acc(temperature)),
    )
    return st, opts


def compute(p: _Prepared, reduction: str, return_lse: bool, batch_axis_name: Any = None):
    """Runs the prepared loss and reduces it (over ``batch_axis_name`` too, inside ``shard_map``)."""
    st, opts = p.st, p.opts
    n = math.prod(p.batch_shape)
    if n == 0:
        empty = jnp.zeros(p.batch_shape, jnp.float32)
        out = reduce_over(empty, empty, reduction, batch_axis_name)
        return (out, empty) if return_lse else out
    example_weight = lax.stop_gradient(_coefficients(st, opts, p.labels, p.class_weight)[3])
    if st.schedule == "one_pass" and reduction != "none" and not return_lse and batch_axis_name is None:
        total = _fused_total(st, p.hidden, p.weight, p.bias, p.labels, p.class_weight, opts)
        return total if reduction == "sum" else safe_divide(total, jnp.sum(example_weight))
    losses, lse = _fused(st, p.hidden, p.weight, p.bias, p.labels, p.class_weight, opts)
    losses, lse, example_weight = (x.reshape(p.batch_shape) for x in (losses, lse, example_weight))
    out = reduce_over(losses, example_weight, reduction, batch_axis_name)
    if return_lse:
        return out, lse
    return out


def reduce_over(losses, example_weight, reduction: str, batch_axis_name: Any = None):
    """:func:`jxent.reduce_loss`, with the sums taken over the devices of ``batch_axis_name`` when it is given."""
    if batch_axis_name is None or reduction == "none":
        return reduce_loss(losses, weights=example_weight, reduction=reduction)
    total = lax.psum(jnp.sum(losses), batch_axis_name)
    if reduction == "sum":
        return total
    return safe_divide(total, lax.psum(jnp.sum(example_weight), batch_axis_name))


def linear_softmax_cross_entropy(
    hidden: Any,
    weight: Any,
    labels: Any,
    *,
    bias: Any = None,
    class_weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: Any = 0.0,
    z_loss: Any = 0.0,
    soft_cap: Any = None,
    temperature: Any = 1.0,
    reduction: str = "mean",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: str = "auto",
    weight_layout: str = "dv",
    return_lse: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Softmax cross-entropy of ``hidden @ weight (+ bias)`` with integer labels, blockwise, without the logits.

    Equal in value and gradients to ``softmax_cross_entropy_with_integer_labels(hidden @ weight + bias, labels,
    weight=class_weight, ...)`` with the same options and formula (all ``V`` classes present, ``K = V``; torch's
    semantics for class weights, ``ignore_index``, label smoothing and ``"mean"``):

    .. math::
      \\ell = (1-\\varepsilon) w_y (\\mathrm{lse} - z_y) + \\frac{\\varepsilon}{V} \\sum_c w_c
      (\\mathrm{lse} - z_c) + \\lambda_z \\mathrm{lse}^2, \\qquad
      z = \\frac{\\mathrm{cap} \\tanh(x / \\mathrm{cap})}{T},\\quad x = hW + b.

    Gradients (``jax.custom_vjp``, reverse mode): with :math:`g = \\partial \\ell / \\partial x` per block,
    :math:`dh = g W^\\top`, :math:`dW = h^\\top g`, :math:`db = \\sum_i g_i`, each row scaled by the cotangent of
    its loss, so ``reduction="none"`` is exact for any per-token cotangent. The cotangent of the returned ``lse``
    (``return_lse=True``) is propagated too (:math:`\\partial\\,\\mathrm{lse}/\\partial z = \\mathrm{softmax}(z)`).

    Memory model (``N`` tokens, ``D`` hidden, ``V`` vocabulary, ``Tc = token_chunk_size``, ``Vc = chunk_size``;
    float32 = 4 bytes). Never anything of size ``N x V``. The forward pass holds one logit block ``4 Tc Vc`` (and a
    few elementwise temporaries of that size) plus ``O(Tc)`` running statistics; for the backward it stores
    ``lse`` (``4 N``) besides the inputs, and recomputes each logit block from ``(hidden, weight, lse)``. The
    backward pass (or, for ``"one_pass"``, the forward) then works by ``schedule``:

    * ``"one_pass"`` (3 matmuls; ``"mean"``/``"sum"`` only, else ``"token"``): per token block the logits go into
      a ``4 Tc V`` row buffer, and ``dh``, ``dW``, ``db`` for a unit cotangent are built in the forward pass and
      scaled by the scalar cotangent afterwards. Holds a full float32 ``dW`` (``4 D V``: the gradient's own buffer
      for float32 weights) and a float32 ``dh`` (``4 N D``, also for 16-bit hidden states).
    * ``"token"`` (4 matmuls): token-outer; each ``dh`` block ``4 Tc D`` is complete after its vocabulary loop;
      full float32 ``dW`` accumulator ``4 D V``.
    * ``"vocab"`` (4 matmuls): vocabulary-outer; each ``dW`` block ``4 D Vc`` is complete after its token loop and
      written once in ``weight``'s dtype; full float32 ``dh`` accumulator ``4 N D``.
    * ``"split"`` (5 matmuls): a token-outer loop for ``dh`` (``4 Tc D``), then a vocabulary-outer loop for ``dW``
      (``4 D Vc``): no accumulator of full size.

    ``"auto"`` (default) on CPU: ``"one_pass"`` for float32 weights (``Tc = 2**23 / V``, at most 1024, i.e. a
    32 MiB row buffer; ``Vc = 2048``), ``"split"`` for 16-bit weights (``Tc = Vc = 2**floor(log2(2**21 / D))`` in
    ``[128, 2048]``: 8 MiB float32 blocks; 512 at ``D = 4096``, about 33 MiB of temporaries at ``N = 8192,
    V = 131072``). On accelerators, where each loop iteration costs kernel launches, few large blocks:
    ``"vocab"`` while its float32 ``dh`` fits in 256 MiB, else ``"split"``, with ``Tc = 8192`` and
    ``Vc = 2048`` (``"vocab"``) or ``8192``. The platform is that of ``jax.default_device`` or the default backend.
    16-bit inputs multiply in their dtype with float32 accumulation (on CPU, blocks are cast to float32).

    ``weight`` is sliced along ``V`` with ``dynamic_slice`` and multiplied with ``dot_general`` in its own layout,
    so a tied embedding ``E [V, D]`` is used as it is, without a transposed copy: pass ``E`` with
    ``weight_layout="vd"``. (Passing ``E.T`` also avoids the copy under ``jit``, also ``jit`` of ``grad``: the
    transpose is recognised in the trace and ``E`` is sliced along its rows instead. That recognition reads JAX's
    tracers and falls back to a copy if it cannot; ``weight_layout="vd"`` does not depend on it. Eagerly, ``E.T``
    is computed before the call.)

    Args:
      hidden: ``[..., D]`` hidden states (float32, 16-bit or, with x64, float64).
      weight: ``[D, V]`` output matrix (a Flax ``Dense`` kernel), or with ``weight_layout="vd"`` a ``[V, D]`` one
        (a tied embedding table, e.g. Flax ``Embed.embedding``).
      labels: Integer labels ``[...]`` (``hidden``'s shape without ``D``).
      bias: Optional ``[V]`` bias (finite: masking classes with ``-inf`` is not supported here).
      class_weight: Optional per-class weights ``[V]`` (torch's ``weight``).
      ignore_index: Label value whose tokens give loss 0, gradient 0 and do not count in ``"mean"``.
      label_smoothing: :math:`\\varepsilon \\in [0, 1]`, spread over all ``V`` classes.
      z_loss: Coefficient :math:`\\lambda_z` of :math:`\\mathrm{lse}^2`.
      soft_cap: Soft-capping value (Gemma 2) or ``None``.
      temperature: :math:`T > 0`, applied after soft-capping.
      reduction: ``"mean"`` (default: divided by :math:`\\sum w_{y_i}` over counted tokens, 0 with zero gradients
        if none counts), ``"sum"`` or ``"none"``.
      chunk_size: Vocabulary block ``Vc``; need not divide ``V`` (the last block is shifted back and its overlap
        masked).
      token_chunk_size: Token block ``Tc``; need not divide ``N``.
      schedule: ``"auto"``, ``"one_pass"``, ``"token"``, ``"vocab"`` or ``"split"`` (table above).
      weight_layout: ``"dv"`` (default: ``weight`` is ``[D, V]``) or ``"vd"`` (``weight`` is ``[V, D]``; its
        gradient is ``[V, D]`` too).
      return_lse: Also return the per-token log-sum-exp ``[...]`` of the transformed logits.

    Returns:
      The loss (float32, or float64 for float64 inputs; ``[...]`` for ``"none"``, else a scalar), and ``lse`` when
      ``return_lse``. An out-of-range label that is not ``ignore_index`` gives NaN (``-1`` does not wrap).
      ``label_smoothing``, ``z_loss``, ``soft_cap`` and ``temperature`` are constants (no gradient); ``jax.jvp`` of
      the loss itself is not available (``custom_vjp``), but second derivatives are: ``grad`` of ``grad`` and
      ``jax.hessian`` differentiate the blockwise backward pass.

    References:
      Wijmans et al., `Cut Your Losses in Large-Vocabulary Language Models <https://arxiv.org/abs/2411.09009>`_,
      2024.
    """
    p = prepare(
        hidden,
        weight,
        labels,
        bias=bias,
        class_weight=class_weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        soft_cap=soft_cap,
        temperature=temperature,
        reduction=reduction,
        chunk_size=chunk_size,
        token_chunk_size=token_chunk_size,
        schedule=schedule,
        weight_layout=weight_layout,
    )
    return compute(p, reduction, return_lse)
