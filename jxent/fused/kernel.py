"""The ``custom_vjp`` of the fused loss: per-row losses (and ``lse``) in the forward pass, blockwise gradients in
the backward pass.

Forward: the statistics pass (:func:`jxent.fused.schedules.statistics`) and :func:`jxent.fused.rows.finish_rows`;
only ``[N]`` vectors are kept for the backward pass besides the inputs. Backward: each row's cotangent scales its
coefficients (:func:`jxent.fused.rows.row_cotangents`), and the configured schedule recomputes the blocks and
accumulates ``dh``, ``dW`` and ``db`` with float32 accumulation. For ``"mean"``/``"sum"`` on the ``"one_pass"``
schedule the cotangent is one scalar, so the gradients for a unit cotangent are built in the forward pass instead
(:func:`fused_total`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from jxent._options import OptionArrays
from jxent._vma import sum_to_type
from jxent.fused.config import FusedConfig, Prepared
from jxent.fused.rows import FinishedRows, finish_rows, global_class_weight, row_cotangents
from jxent.fused.schedules import gradients, one_pass, statistics
from jxent.reduction import reduce_loss, safe_divide

__all__ = ["compute", "fused_rows", "fused_total", "per_row"]


def _forward(cfg: FusedConfig, h, w, bias, labels, cw, arrays: OptionArrays) -> FinishedRows:
    local = cfg.group.local_labels(labels, cfg.vocab)
    stats, sums = statistics(cfg, arrays, h, w, bias, local, cw)
    return finish_rows(cfg, arrays, labels, global_class_weight(cfg, cw), stats, sums)


def _zero_options(arrays: OptionArrays) -> OptionArrays:
    return OptionArrays(*(jnp.zeros_like(o) for o in arrays))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def fused_rows(cfg: FusedConfig, h, w, bias, labels, cw, arrays: OptionArrays):
    """``(loss, lse, example_weight)`` per row; gradients flow from the cotangents of ``loss`` and ``lse``."""
    rows = _forward(cfg, h, w, bias, labels, cw, arrays)
    return rows.loss, rows.lse, rows.example_weight


def _fused_rows_fwd(cfg: FusedConfig, h, w, bias, labels, cw, arrays: OptionArrays):
    rows = _forward(cfg, h, w, bias, labels, cw, arrays)
    return (rows.loss, rows.lse, rows.example_weight), (h, w, bias, labels, cw, arrays, rows)


def _fused_rows_bwd(cfg: FusedConfig, res, cts):
    h, w, bias, labels, cw, arrays, rows = res
    ct_loss, ct_lse, _ = cts
    coefs = row_cotangents(cfg, rows, labels, ct_loss, ct_lse)
    dh, dw, db = gradients(cfg, arrays, h, w, bias, cw, coefs)
    dh = cfg.group.sum_slices(dh)  # every vocabulary slice contributes to each token's dh
    dh = sum_to_type(dh, h).astype(h.dtype)
    dw = sum_to_type(dw, w).astype(w.dtype)
    db = None if db is None else sum_to_type(db, bias).astype(bias.dtype)
    return dh, dw, db, None, None, _zero_options(arrays)


fused_rows.defvjp(_fused_rows_fwd, _fused_rows_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def fused_total(cfg: FusedConfig, h, w, bias, labels, cw, arrays: OptionArrays):
    """``(sum of the row losses, sum of the example weights)``: for ``"mean"``/``"sum"`` the cotangent is a
    scalar. The second output has no gradient."""
    rows = _forward(cfg, h, w, bias, labels, cw, arrays)
    return jnp.sum(rows.loss), jnp.sum(rows.example_weight)


def _fused_total_fwd(cfg: FusedConfig, h, w, bias, labels, cw, arrays: OptionArrays):
    rows, dh, dw, db = one_pass(cfg, arrays, h, w, bias, labels, cw, global_class_weight(cfg, cw))
    out = (jnp.sum(rows.loss), jnp.sum(rows.example_weight))
    return out, (dh, dw, db if cfg.has_bias else None, arrays, jnp.zeros((0,), h.dtype))


def _fused_total_bwd(cfg: FusedConfig, res, cts):
    dh, dw, db, arrays, h_dtype = res  # h_dtype: an empty array of the hidden states' dtype
    ct = cts[0].astype(cfg.acc_dtype)
    dh = (ct * dh).astype(h_dtype.dtype)
    dw = (ct * dw).astype(cfg.weight_dtype)
    db = None if db is None else (ct * db).astype(cfg.bias_dtype)
    return dh, dw, db, None, None, _zero_options(arrays)


fused_total.defvjp(_fused_total_fwd, _fused_total_bwd)


def per_row(p: Prepared) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(loss, lse, example_weight)`` of the prepared loss, each of the batch shape; the example weights (the
    ``"mean"`` denominators, 0 for tokens that do not count) carry no gradient."""
    if math.prod(p.batch_shape) == 0:
        empty = jnp.zeros(p.batch_shape, jnp.float32)
        return empty, empty, empty
    loss, lse, weight = fused_rows(p.cfg, p.hidden, p.weight, p.bias, p.labels, p.class_weight, p.arrays)
    return tuple(x.reshape(p.batch_shape) for x in (loss, lse, jax.lax.stop_gradient(weight)))  # type: ignore[return-value]


def compute(p: Prepared, reduction: str, return_lse: bool):
    """Runs the prepared loss on this device and reduces it."""
    n: int = math.prod(p.batch_shape)
    if p.cfg.schedule == "one_pass" and reduction != "none" and not return_lse and n > 0:
        total, weight = fused_total(p.cfg, p.hidden, p.weight, p.bias, p.labels, p.class_weight, p.arrays)
        return total if reduction == "sum" else safe_divide(total, jax.lax.stop_gradient(weight))
    losses, lse, weight = per_row(p)
    out = reduce_loss(losses, weights=weight, reduction=reduction)
    return (out, lse) if return_lse else out
