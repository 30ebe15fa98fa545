"""One ``[token_chunk, vocab_chunk]`` block of the fused loss: its logits, statistics and gradients.

A block's logits :math:`x = h_{\\text{blk}} W_{\\text{blk}} + b_{\\text{blk}}` are transformed (soft-cap,
temperature) by :func:`jxent._rowmath.transform_logits`; :func:`block_stats` reduces them to the row statistics
and additive sums of :mod:`jxent._rowmath`, and :func:`logit_cotangent` forms :math:`\\partial\\ell/\\partial x` from
the per-row coefficients with :func:`jxent._rowmath.logit_gradient`. Blocks are cut with ``dynamic_slice``; the
last block of an axis that the chunk does not divide is shifted back to end at the edge, and the columns (or rows)
it shares with its neighbour are masked.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jxent._options import OptionArrays
from jxent._rowmath import RowStats, logit_gradient, row_stats, shifted_exp, transform_logits
from jxent.fused.config import FusedConfig

__all__ = [
    "RowCoefficients",
    "RowSums",
    "block_start",
    "block_stats",
    "dh_block",
    "dw_block",
    "logit_block",
    "logit_cotangent",
    "n_blocks",
    "transformed",
]


class RowSums(NamedTuple):
    """Per-row sums that add up over blocks and over vocabulary slices.

    ``target`` is :math:`z_y` (0 in a part that does not hold the label). With label smoothing, over the present
    classes (finite logit): ``weighted`` :math:`\\sum_c \\sigma_c z_c`, ``spread`` :math:`\\sum_c \\sigma_c` and
    ``num_present`` :math:`K`, where :math:`\\sigma_c` is the class weight (1 without class weights).
    """

    target: jax.Array
    weighted: jax.Array | None = None
    spread: jax.Array | None = None
    num_present: jax.Array | None = None


class RowCoefficients(NamedTuple):
    """Per-row coefficients of ``dloss/dx = coef_p softmax(z) - coef_a onehot(y) - coef_b sigma`` (cotangents
    applied), the labels local to this vocabulary slice, and the softmax statistics of the whole row as
    :func:`jxent._rowmath.exp_offsets` and ``1 / total``: ``softmax(z) = shifted_exp(z, offset, d) / total`` (exact
    also at ``+inf`` logits)."""

    coef_p: jax.Array
    coef_a: jax.Array
    coef_b: jax.Array | None
    labels: jax.Array
    offset: jax.Array
    d: jax.Array
    inv_total: jax.Array


def empty_sums(cfg: FusedConfig, shape: tuple[int, ...]) -> RowSums:
    zeros = jnp.zeros(shape, cfg.acc_dtype)
    if not cfg.has_smoothing:
        return RowSums(zeros)
    return RowSums(zeros, zeros, zeros, zeros)


def add_sums(a: RowSums, b: RowSums) -> RowSums:
    return jax.tree.map(jnp.add, a, b)


def n_blocks(total: int, chunk: int) -> int:
    return -(-total // chunk)


def block_start(k: jax.Array, chunk: int, total: int) -> jax.Array:
    """Start of block ``k``; the last block is shifted back to end at ``total`` (it then overlaps its neighbour)."""
    return jnp.minimum(k * chunk, total - chunk)


def take(cfg: FusedConfig, x: jax.Array, start: Any, size: int, axis: int) -> jax.Array:
    """A block of ``x`` in the matmul dtype.

    The barrier ties ``x`` to the loop index, so XLA cannot hoist an elementwise op on the whole of ``x`` out of the
    loop (the CPU backend computes 16-bit arrays in float32 and would otherwise cast all of ``weight`` at once).
    """
    x, start = lax.optimization_barrier((x, start))
    return lax.dynamic_slice_in_dim(x, start, size, axis=axis).astype(cfg.matmul_dtype)


def weight_block(cfg: FusedConfig, w: jax.Array, v0: Any) -> jax.Array:
    """Columns ``v0:v0+Vc`` of the weight, in its own layout: ``[D, Vc]``, or ``[Vc, D]`` for a ``[V, D]`` one."""
    return take(cfg, w, v0, cfg.vocab_chunk, cfg.vocab_axis)


def logit_block(cfg: FusedConfig, h_blk: jax.Array, w_blk: jax.Array, bias: Any, v0: Any) -> jax.Array:
    """``h_blk @ W[:, v0:v0+Vc] (+ bias)`` in the accumulation dtype, ``[Tc, Vc]``; ``dot_general`` contracts ``D``
    of the weight block in whichever layout it has (no transpose)."""
    dims = (((1,), (1 - cfg.vocab_axis,)), ((), ()))
    x = lax.dot_general(h_blk, w_blk, dims, preferred_element_type=cfg.acc_dtype)
    if bias is not None:
        x = x + lax.dynamic_slice_in_dim(bias, v0, cfg.vocab_chunk).astype(cfg.acc_dtype)[None, :]
    return x


def vocab_valid(cfg: FusedConfig, k: Any, v0: Any) -> jax.Array | None:
    """Columns of block ``k`` not already covered by block ``k - 1`` (``None`` when blocks never overlap)."""
    if cfg.vocab % cfg.vocab_chunk == 0:
        return None
    return (v0 + jnp.arange(cfg.vocab_chunk)) >= k * cfg.vocab_chunk


def token_valid(cfg: FusedConfig, k: Any, t0: Any) -> jax.Array | None:
    if cfg.num_tokens % cfg.token_chunk == 0:
        return None
    return (t0 + jnp.arange(cfg.token_chunk)) >= k * cfg.token_chunk


def class_weight_block(cfg: FusedConfig, cw: Any, v0: Any) -> Any:
    return lax.dynamic_slice_in_dim(cw, v0, cfg.vocab_chunk)[None, :] if cfg.has_class_weight else 1.0


def block_stats(
    cfg: FusedConfig, arrays: OptionArrays, x: jax.Array, v0: Any, valid: Any, labels_blk: jax.Array, cw: Any
) -> tuple[RowStats, RowSums]:
    """The row statistics and sums of one logit block ``x`` (columns ``v0:v0+Vc``; ``valid`` masks overlap)."""
    z = transform_logits(x, cfg, arrays)
    # The overlapped columns of a shifted last block are masked out here. (A sentinel column index would not do:
    # sharded, any integer can be a local label, e.g. ``V_local`` for the next device's first class.)
    is_target = (v0 + jnp.arange(cfg.vocab_chunk))[None, :] == labels_blk[:, None]
    if valid is not None:
        is_target = is_target & valid[None, :]
        z = jnp.where(valid[None, :], z, -jnp.inf)
    sums = RowSums(jnp.sum(jnp.where(is_target, z, 0.0), axis=1))
    if cfg.has_smoothing:
        present = z != -jnp.inf
        sigma = jnp.where(present, class_weight_block(cfg, cw, v0), 0.0)
        sums = RowSums(
            sums.target,
            weighted=jnp.sum(jnp.where(present, sigma * z, 0.0), axis=1),
            spread=jnp.sum(sigma, axis=1),
            num_present=jnp.sum(present, axis=1).astype(cfg.acc_dtype),
        )
    return row_stats(z, keepdims=False), sums


def transformed(cfg: FusedConfig, arrays: OptionArrays, x: jax.Array) -> tuple[jax.Array, Any]:
    """The transformed logits ``z`` (soft-cap, temperature) of a block and the map from ``dz`` to ``dx`` (``None``
    when there is no transform)."""
    if not (cfg.has_cap or cfg.has_temperature):
        return x, None
    z, pullback = jax.vjp(lambda v: transform_logits(v, cfg, arrays), x)
    return z, lambda dz: pullback(dz)[0]


def logit_cotangent(
    cfg: FusedConfig,
    arrays: OptionArrays,
    x: jax.Array,
    v0: Any,
    valid: Any,
    rows: RowCoefficients,
    cw: Any,
    token_mask: Any = None,
) -> jax.Array:
    """``dloss/dx`` of one block: :func:`jxent._rowmath.logit_gradient` pulled back through soft-cap and temperature.

    ``token_mask`` zeroes the rows of an overlapping last token block.
    """
    z, pullback = transformed(cfg, arrays, x)
    coef_p, coef_a, coef_b = rows.coef_p, rows.coef_a, rows.coef_b
    if token_mask is not None:
        coef_p, coef_a = (jnp.where(token_mask, c, 0.0) for c in (coef_p, coef_a))
        coef_b = None if coef_b is None else jnp.where(token_mask, coef_b, 0.0)
    spread = None
    if coef_b is not None:
        spread = jnp.where(z != -jnp.inf, class_weight_block(cfg, cw, v0), 0.0)
    dz = logit_gradient(
        coef=coef_p[:, None],
        p=shifted_exp(z, rows.offset[:, None], rows.d[:, None]) * rows.inv_total[:, None],
        a=coef_a[:, None],
        is_target=(v0 + jnp.arange(cfg.vocab_chunk))[None, :] == rows.labels[:, None],
        b=None if coef_b is None else coef_b[:, None],
        spread=spread,
    )
    if valid is not None:
        dz = jnp.where(valid[None, :], dz, 0.0)
    return dz if pullback is None else pullback(dz)


def dh_block(cfg: FusedConfig, dx: jax.Array, w_blk: jax.Array) -> jax.Array:
    """``dx @ W_blk^T``, ``[Tc, D]``: contracts the vocabulary axis of the weight block in its own layout."""
    dims = (((1,), (cfg.vocab_axis,)), ((), ()))
    return lax.dot_general(dx, w_blk, dims, preferred_element_type=cfg.acc_dtype)


def dw_block(cfg: FusedConfig, h_blk: jax.Array, dx: jax.Array) -> jax.Array:
    """``h_blk^T @ dx`` as a weight block: ``[D, Vc]``, or ``[Vc, D]`` for a ``[V, D]`` weight."""
    if cfg.vocab_axis == 1:
        return lax.dot_general(h_blk, dx, (((0,), (0,)), ((), ())), preferred_element_type=cfg.acc_dtype)
    return lax.dot_general(dx, h_blk, (((0,), (0,)), ((), ())), preferred_element_type=cfg.acc_dtype)


def masked_rows(h_blk: jax.Array, mask: Any) -> jax.Array:
    return h_blk if mask is None else jnp.where(mask[:, None], h_blk, jnp.zeros((), h_blk.dtype))
