"""The ``custom_vjp`` of the fused losses: per-row outputs in the forward pass, blockwise gradients in the backward.

Forward: every stage of the objective's statistics passes and its finish (:func:`jxent.fused.schedules.forward`);
only per-row vectors are kept for the backward pass besides the inputs. Backward: the objective turns the output
cotangents into per-row coefficients (:meth:`jxent.fused.objective.Objective.cotangents`), and the configured
schedule recomputes the blocks and accumulates ``dh``, ``dW`` and ``db`` of every head with float32 accumulation.
For ``"mean"``/``"sum"`` on the ``"one_pass"`` schedule the cotangent is one scalar, so the gradients for a unit
cotangent are built in the forward pass instead (:func:`fused_total`).

On one device both rules use ``symbolic_zeros``: a head none of whose inputs is differentiated (a teacher under
``stop_gradient``) gets no ``dh``/``dW`` at all, neither accumulated nor multiplied. The vocabulary-sharded forms
run the same rules without it (:data:`fused_rows_every_head`): JAX does not support it in ``shard_map`` outside
``jit``.

Row weights (``token_weight`` and ``where``) are applied here for every objective: the loss of a row is multiplied
by its weight, so is its weight in ``"mean"`` and the cotangent of its loss; a row of weight 0 gives exactly 0 and a
zero gradient, even where its own loss would be NaN.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from jxent._options import OptionArrays
from jxent._typing import Reduction
from jxent._vma import sum_to_type
from jxent.fused.config import FusedConfig
from jxent.fused.objective import Head, Objective
from jxent.fused.schedules import forward, gradients, one_pass
from jxent.reduction import reduce_loss, safe_divide

__all__ = ["Problem", "compute", "fused_rows", "fused_rows_every_head", "fused_total", "per_row"]


class Problem(NamedTuple):
    """A prepared fused loss: configuration, objective and arrays (rows flattened to ``[N]``)."""

    cfg: FusedConfig
    objective: Objective
    arrays: OptionArrays
    heads: tuple[Head, ...]
    ctx: Any  # the per-row context the objective starts from (labels, ...)
    cls: Any  # per-class arrays (class weights), no gradient
    row_weight: jax.Array | None  # [N] token weights (0 where ``where`` is false), no gradient
    batch_shape: tuple[int, ...]


def _weighted(x: jax.Array, rw: jax.Array | None) -> jax.Array:
    """``rw * x`` per row, exactly 0 where ``rw`` is 0."""
    return x if rw is None else jnp.where(rw != 0, rw * x, 0.0)


def _zero_rows(tree: Any, rw: jax.Array | None) -> Any:
    """Every per-row coefficient set to 0 in rows of weight 0."""
    if rw is None:
        return tree

    def zero(c: jax.Array) -> jax.Array:
        keep = (rw != 0).reshape(rw.shape + (1,) * (c.ndim - 1))
        return jnp.where(keep, c, jnp.zeros((), c.dtype))

    return jax.tree.map(zero, tree)


def _outputs(obj: Objective, ctx: Any, rw: jax.Array | None) -> tuple:
    loss, *rest = obj.outputs(ctx)
    return (_weighted(loss, rw), *rest, _weighted(obj.count(ctx), rw))


def _no_cotangents(*trees: Any) -> tuple:
    """Zero cotangents for inputs that get none (``None`` for integer arrays)."""

    def zero(x: Any) -> Any:
        return jnp.zeros_like(x) if jnp.issubdtype(x.dtype, jnp.inexact) else None

    return tuple(jax.tree.map(zero, t) for t in trees)


def _unwrap(tree: Any) -> Any:
    """The values of a ``symbolic_zeros`` forward rule's primals."""
    return jax.tree.map(lambda p: p.value, tree, is_leaf=lambda x: isinstance(x, CustomVJPPrimal))


def _wanted(heads: Any) -> tuple[bool, ...]:
    """Per head, whether any of its inputs is differentiated (a frozen teacher is not: its gradient is skipped)."""
    leaves = [jax.tree.leaves(hd, is_leaf=lambda x: isinstance(x, CustomVJPPrimal)) for hd in heads]
    return tuple(any(p.perturbed for p in head) for head in leaves)


def _instantiate(ct: Any) -> Any:
    """A cotangent as an array: zeros for a symbolic zero (``None`` for an integer output, which has none)."""
    if not isinstance(ct, SymbolicZero):
        return ct
    return jnp.zeros(ct.shape, ct.dtype) if jnp.issubdtype(ct.dtype, jnp.inexact) else None


def _head_cotangents(heads: tuple[Head, ...], grads: tuple) -> tuple[Head | None, ...]:
    out: list[Head | None] = []
    for hd, (dh, dw, db) in zip(heads, grads, strict=True):
        if dh is None:  # a head that needs no gradient
            out.append(None)
            continue
        out.append(
            Head(
                sum_to_type(dh, hd.hidden).astype(hd.hidden.dtype),
                sum_to_type(dw, hd.weight).astype(hd.weight.dtype),
                None if db is None or hd.bias is None else sum_to_type(db, hd.bias).astype(hd.bias.dtype),
            )
        )
    return tuple(out)


def _rows(cfg: FusedConfig, obj: Objective, heads, ctx, cls, rw, arrays: OptionArrays):
    """The objective's per-row outputs (the first weighted by ``rw``), then each row's weight in ``"mean"``."""
    return _outputs(obj, forward(cfg, obj, arrays, heads, ctx, cls), rw)


def _rows_fwd(cfg: FusedConfig, obj: Objective, heads, ctx, cls, rw, arrays: OptionArrays, want: tuple[bool, ...]):
    done = forward(cfg, obj, arrays, heads, ctx, cls)
    # which heads need a gradient, carried as the structure of the residuals (an array or None per head)
    marks = tuple(jnp.zeros(()) if w else None for w in want)
    return _outputs(obj, done, rw), (heads, done, cls, rw, arrays, ctx, marks)


def _rows_bwd(cfg: FusedConfig, obj: Objective, res, cts):
    heads, done, cls, rw, arrays, ctx, marks = res
    want = tuple(m is not None for m in marks)
    ct_loss, *rest = (_instantiate(c) for c in cts[:-1])
    coefs = _zero_rows(obj.cotangents(cfg, done, (_weighted(ct_loss, rw), *rest)), rw)
    grads = gradients(cfg, obj, arrays, heads, cls, coefs, want)
    # every vocabulary slice contributes to each token's dh
    grads = tuple((None if dh is None else cfg.group.sum_slices(dh), dw, db) for dh, dw, db in grads)
    return _head_cotangents(heads, grads), *_no_cotangents(ctx, cls, rw, arrays)


fused_rows = jax.custom_vjp(_rows, nondiff_argnums=(0, 1))
"""Per-row outputs with gradients from their cotangents; with ``symbolic_zeros``, a head none of whose inputs is
differentiated gets no gradient work. JAX does not support ``symbolic_zeros`` inside ``shard_map`` outside ``jit``,
so the vocabulary-sharded losses use :data:`fused_rows_every_head`."""


def _rows_fwd_wanted(cfg: FusedConfig, obj: Objective, heads, ctx, cls, rw, arrays):
    want = _wanted(heads)
    heads, ctx, cls, rw, arrays = _unwrap((heads, ctx, cls, rw, arrays))
    return _rows_fwd(cfg, obj, heads, ctx, cls, rw, arrays, want)


fused_rows.defvjp(_rows_fwd_wanted, _rows_bwd, symbolic_zeros=True)

fused_rows_every_head = jax.custom_vjp(_rows, nondiff_argnums=(0, 1))
""":data:`fused_rows` without ``symbolic_zeros``: every head gets its gradient."""


def _rows_fwd_every_head(cfg: FusedConfig, obj: Objective, heads, ctx, cls, rw, arrays):
    return _rows_fwd(cfg, obj, heads, ctx, cls, rw, arrays, (True,) * len(heads))


fused_rows_every_head.defvjp(_rows_fwd_every_head, _rows_bwd)


def _unit_coefficients(cfg: FusedConfig, obj: Objective, rw: jax.Array | None):
    """The gradient coefficients of a token block for the cotangent 1 (times its row weight) on each loss."""

    def coefs(ctx_blk: Any, t0: Any) -> Any:
        outs = obj.outputs(ctx_blk)
        w = None if rw is None else jax.lax.dynamic_slice_in_dim(rw, t0, cfg.token_chunk)
        ones = jnp.ones(outs[0].shape, cfg.acc_dtype)
        cts = (_weighted(ones, w), *(jnp.zeros_like(o) for o in outs[1:]))
        return _zero_rows(obj.cotangents(cfg, ctx_blk, cts), w)

    return coefs


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def fused_total(cfg: FusedConfig, obj: Objective, heads, ctx, cls, rw, arrays: OptionArrays):
    """``(sum of the weighted row losses, sum of the row weights in "mean")``: for ``"mean"``/``"sum"`` the
    cotangent is a scalar. The second output has no gradient."""
    outs = _outputs(obj, forward(cfg, obj, arrays, heads, ctx, cls), rw)
    return jnp.sum(outs[0]), jnp.sum(outs[-1])


def _fused_total_fwd(cfg: FusedConfig, obj: Objective, heads, ctx, cls, rw, arrays: OptionArrays):
    want = _wanted(heads)
    heads, ctx, cls, rw, arrays = _unwrap((heads, ctx, cls, rw, arrays))
    done, grads = one_pass(cfg, obj, arrays, heads, ctx, cls, _unit_coefficients(cfg, obj, rw), want)
    outs = _outputs(obj, done, rw)
    grads = tuple(
        (dh, dw, db if hd.bias is not None else None) if wanted else None
        for hd, (dh, dw, db), wanted in zip(heads, grads, want, strict=True)
    )
    dtypes = tuple(jnp.zeros((0,), hd.hidden.dtype) for hd in heads)  # the hidden states' dtypes, as empty arrays
    return (jnp.sum(outs[0]), jnp.sum(outs[-1])), (grads, dtypes, _heads_meta(heads), ctx, cls, rw, arrays)


def _heads_meta(heads: tuple[Head, ...]) -> tuple:
    """Empty arrays of each head's weight and bias dtypes (kept instead of the arrays themselves)."""
    return tuple(
        (jnp.zeros((0,), hd.weight.dtype), None if hd.bias is None else jnp.zeros((0,), hd.bias.dtype)) for hd in heads
    )


def _fused_total_bwd(cfg: FusedConfig, obj: Objective, res, cts):
    grads, dtypes, meta, ctx, cls, rw, arrays = res
    ct = _instantiate(cts[0]).astype(cfg.acc_dtype)
    out: list[Head | None] = []
    for grad, h_dtype, (w_dtype, b_dtype) in zip(grads, dtypes, meta, strict=True):
        if grad is None:  # a head that needs no gradient
            out.append(None)
            continue
        dh, dw, db = grad
        out.append(
            Head(
                (ct * dh).astype(h_dtype.dtype),
                (ct * dw).astype(w_dtype.dtype),
                None if db is None else (ct * db).astype(b_dtype.dtype),
            )
        )
    return tuple(out), *_no_cotangents(ctx, cls, rw, arrays)


fused_total.defvjp(_fused_total_fwd, _fused_total_bwd, symbolic_zeros=True)


def per_row(p: Problem) -> tuple[jax.Array, ...]:
    """The objective's outputs, then the row weights in ``"mean"`` (no gradient), each of the batch shape."""
    if math.prod(p.batch_shape) == 0:
        return (*p.objective.empty(p.cfg, p.batch_shape), jnp.zeros(p.batch_shape, p.cfg.acc_dtype))
    kernel = fused_rows_every_head if p.cfg.sharded else fused_rows
    outs = kernel(p.cfg, p.objective, p.heads, p.ctx, p.cls, p.row_weight, p.arrays)
    *values, weight = (x.reshape(p.batch_shape + x.shape[1:]) for x in outs)
    return (*values, jax.lax.stop_gradient(weight))


def compute(p: Problem, reduction: Reduction, outputs: bool = False) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """The reduced loss of the prepared problem on this device, and the other per-row outputs when ``outputs``
    (else ``()``: then ``"mean"``/``"sum"`` on the ``"one_pass"`` schedule build the gradients in the forward)."""
    n: int = math.prod(p.batch_shape)
    if p.cfg.schedule == "one_pass" and reduction != "none" and n > 0 and not outputs:
        total, weight = fused_total(p.cfg, p.objective, p.heads, p.ctx, p.cls, p.row_weight, p.arrays)
        return (total if reduction == "sum" else safe_divide(total, jax.lax.stop_gradient(weight))), ()
    loss, *rest, weight = per_row(p)
    return reduce_loss(loss, weights=weight, reduction=reduction), tuple(rest)
