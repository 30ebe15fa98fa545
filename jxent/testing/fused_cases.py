"""The cases of the fused (linear-head) functions for :mod:`jxent.testing.cases`.

The logits are ``hidden @ weight``, never materialised. ``bias`` must be finite, so the extreme rows are large
hidden states (logits of order ``±1e4``) and a zero row rather than infinite logits. Functions with several outputs
(the token statistics) are checked on their stacked float outputs; those with a ``where=`` take it in the
``"masked"`` variant, the others mask a row through ``ignore_index``.
"""

from __future__ import annotations

import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jxent
from jxent.testing.cases import BIG_ROW, MASKED_ROW, NUM_CLASSES, NUM_ROWS, SEED, ZERO_ROW

__all__ = ["fused_spec"]

HIDDEN = 6
TOP_K = 3


def _rng(*keys: str) -> np.random.Generator:
    return np.random.default_rng([SEED, *(zlib.crc32(k.encode()) for k in keys)])


def _head(key: str, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """A ``[rows, D]`` hidden state with one large row and one zero row, and a ``[D, V]`` weight, in ``dtype``."""
    rng = _rng("linear", key)
    hidden = rng.standard_normal((NUM_ROWS, HIDDEN))
    hidden[BIG_ROW] *= 4e3
    hidden[ZERO_ROW] = 0.0
    weight = rng.standard_normal((HIDDEN, NUM_CLASSES))
    dt = jnp.dtype(dtype)
    return hidden.astype(dt), weight.astype(dt)


def fused_spec(loss: str, dtype: str, masked: bool) -> tuple[str, Any, tuple, tuple, dict, tuple]:
    """``(label, fn, diff_args, aux_args, nonfinite_ok, batched)`` of a fused function (see ``_spec``)."""
    hidden, weight = _head("student", dtype)
    labels = _rng("labels").integers(0, NUM_CLASSES, NUM_ROWS).astype(np.int32)
    mask = np.ones(NUM_ROWS, bool)  # all True in the plain variant
    mask[MASKED_ROW] = not masked
    if loss == "linear_softmax_cross_entropy":
        if not masked:
            return loss, jxent.linear_softmax_cross_entropy, (hidden, weight), (labels,), {}, (True, False, True)
        labels[MASKED_ROW] = -100

        def ce(h, w, y):
            return jxent.linear_softmax_cross_entropy(
                h, w, y, ignore_index=-100, label_smoothing=0.1, z_loss=1e-3, soft_cap=30.0, reduction="mean"
            )

        return loss, ce, (hidden, weight), (labels,), {}, (True, False, True)
    if loss == "linear_token_statistics":
        options: dict[str, Any] = {"ignore_index": -100, "soft_cap": 30.0, "temperature": 0.8} if masked else {}
        if masked:
            labels[MASKED_ROW] = -100

        def stats(h, w, y):
            return jnp.stack(jxent.linear_token_statistics(h, w, y, **options)[:3], axis=-1)

        return loss, stats, (hidden, weight), (labels,), {}, (True, False, True)
    if loss in ("linear_kl_divergence", "linear_js_divergence"):
        t_hidden, t_weight = _head("teacher", dtype)
        fn = getattr(jxent, loss)
        options = {"reduction": "none"}
        if masked:
            options.update({"reverse": True, "temperature": 2.0} if "kl" in loss else {"beta": 0.3})

        def pair(h, w, th, tw, where):
            return fn(h, w, th, tw, where=where, **options)

        return loss, pair, (hidden, weight, t_hidden, t_weight), (mask,), {}, (
            True, False, True, False, True,
        )  # fmt: skip
    if loss == "linear_sparse_kl_divergence":
        teacher = jax.nn.log_softmax(jnp.asarray(_rng("teacher").standard_normal((NUM_ROWS, NUM_CLASSES)) * 2.0))
        top_log_p, idx = jax.lax.top_k(teacher, TOP_K)
        log_p = np.asarray(top_log_p, np.float64).astype(jnp.dtype(dtype))
        options = {"reduction": "none", "temperature": 1.5} if masked else {"reduction": "none"}

        def sparse(h, w, lp, indices, where):
            return jxent.linear_sparse_kl_divergence(h, w, indices, lp, where=where, **options)

        aux = (np.asarray(idx, np.int32), mask)
        return loss, sparse, (hidden, weight, log_p), aux, {}, (True, False, True, True, True)
    raise KeyError(f"No fused case for {loss!r}.")
