"""Hypothesis properties of the losses (deterministic: derandomize=True, modest max_examples).

The losses are jitted once at module level with a fixed batch of 4 rows and 5 classes, so the examples reuse the
compiled code; only the slicing properties see other shapes (at most 5 batch sizes).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import jxent

N, V = 4, 5
N_SLICE = 3  # rows in the slicing properties: every kept-row count (0..3) is one more compilation
SETTINGS = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)

finite = st.floats(-20.0, 20.0, width=32, allow_nan=False, allow_infinity=False)
logits_st = arrays(np.float32, (N, V), elements=finite)
shift_st = arrays(np.float32, (N, 1), elements=st.floats(-50.0, 50.0, width=32))
labels_st = arrays(np.int32, (N,), elements=st.integers(0, V - 1))
mask_st = arrays(np.bool_, (N,), elements=st.booleans())
unit = st.floats(0.0, 1.0, width=32)
weights_st = arrays(np.float32, (N, V), elements=st.floats(0.0, 1.0, width=32))


def _distribution(w: np.ndarray) -> np.ndarray:
    w = w + 1e-3
    return (w / w.sum(-1, keepdims=True)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Shift invariance: adding a constant to each row's logits changes no softmax loss
# ----------------------------------------------------------------------------------------------------------------


@jax.jit
def _softmax_losses(z, y, t):
    return {
        "ce_int": jxent.softmax_cross_entropy_with_integer_labels(z, y, label_smoothing=0.1),
        "ce_prob": jxent.softmax_cross_entropy(z, t),
        "focal": jxent.softmax_focal_loss(z, y, gamma=2.0),
        "poly": jxent.poly_loss_cross_entropy(z, t),
        "gce": jxent.generalized_cross_entropy(z, y),
        "log_softmax": jxent.log_softmax(z),
        "softmax": jxent.softmax(z),
    }


@SETTINGS
@given(logits_st, shift_st, labels_st, weights_st)
def test_softmax_losses_are_shift_invariant(z, c, y, w):
    t = _distribution(w)
    base = _softmax_losses(z, y, t)
    shifted = _softmax_losses(z + c, y, t)
    for key in base:
        np.testing.assert_allclose(shifted[key], base[key], rtol=1e-5, atol=1e-4, err_msg=key)


# ----------------------------------------------------------------------------------------------------------------
# CE(t, softmax(z)) = H(t) + KL(t || softmax(z))
# ----------------------------------------------------------------------------------------------------------------


@jax.jit
def _ce_decomposition(z, t):
    ce = jxent.softmax_cross_entropy(z, t)
    return ce, jxent.entropy(t) + jxent.kl_divergence(jxent.log_softmax(z), t)


@SETTINGS
@given(logits_st, weights_st, arrays(np.bool_, (N, V), elements=st.booleans()))
def test_cross_entropy_is_entropy_plus_kl(z, w, zeros):
    zeros[:, 0] = False  # some targets exactly 0 (0 log 0 = 0), never a whole row
    t = np.where(zeros, 0.0, w + 1e-3)
    t = (t / t.sum(-1, keepdims=True)).astype(np.float32)
    ce, h_plus_kl = _ce_decomposition(z, t)
    np.testing.assert_allclose(ce, h_plus_kl, rtol=1e-5, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# Non-negativity
# ----------------------------------------------------------------------------------------------------------------


@jax.jit
def _all_losses(z, y, t, b, p):
    log_q = jxent.log_softmax(z)
    return {
        "ce_int": jxent.softmax_cross_entropy_with_integer_labels(z, y, label_smoothing=0.2, z_loss=1e-3),
        "ce_prob": jxent.softmax_cross_entropy(z, t, soft_cap=10.0, temperature=0.5),
        "sigmoid_bce": jxent.sigmoid_binary_cross_entropy(z, b),
        "sigmoid_focal": jxent.sigmoid_focal_loss(z, b, alpha=0.25, gamma=0.5),
        "softmax_focal": jxent.softmax_focal_loss(z, t, gamma=2.0),
        "poly": jxent.poly_loss_cross_entropy(z, t, epsilon=1.0),
        "gce": jxent.generalized_cross_entropy(z, t, q=0.5),
        "kl": jxent.kl_divergence(log_q, t),
        "kl_log": jxent.kl_divergence_with_log_targets(log_q, jnp.log(t)),
        "entropy": jxent.entropy(t),
        "js": jxent.js_divergence(t, jxent.softmax(z)),
        "bce_probs": jxent.binary_cross_entropy(p, b),
        "cce_probs": jxent.categorical_cross_entropy(jxent.softmax(z), y),
    }


@SETTINGS
@given(
    logits_st,
    labels_st,
    weights_st,
    arrays(np.float32, (N, V), elements=unit),
    arrays(np.float32, (N, V), elements=unit),
)
def test_every_loss_is_non_negative(z, y, w, b, p):
    out = _all_losses(z, y, _distribution(w), b, p)
    for key, value in out.items():
        value = np.asarray(value)
        assert not np.any(np.isnan(value)), key
        assert np.all(value >= -1e-6), (key, value.min())


# ----------------------------------------------------------------------------------------------------------------
# where row masks and ignore_index equal dropping the rows
# ----------------------------------------------------------------------------------------------------------------


REDUCTIONS = ("none", "sum", "mean")


@jax.jit
def _masked(z, y, t, where):
    """Every reduction of every row-maskable loss, in one compiled call per batch size."""
    ce_int = jxent.softmax_cross_entropy_with_integer_labels
    class_where = jnp.broadcast_to(where[:, None], z.shape)
    out = {}
    for r in REDUCTIONS:
        out["ce_int", r] = ce_int(z, y, where=where, label_smoothing=0.1, reduction=r)
        out["ce_prob", r] = jxent.softmax_cross_entropy(z, t, where=where, reduction=r)
        out["focal", r] = jxent.softmax_focal_loss(z, y, where=where, reduction=r)
        out["poly", r] = jxent.poly_loss_cross_entropy(z, t, where=where, reduction=r)
        out["gce", r] = jxent.generalized_cross_entropy(z, y, where=where, reduction=r)
        out["kl", r] = jxent.kl_divergence(jxent.log_softmax(z), t, where=class_where, reduction=r)
        out["bce", r] = jxent.sigmoid_binary_cross_entropy(z, t, where=class_where, reduction=r)
    return out


@SETTINGS
@given(
    arrays(np.float32, (N_SLICE, V), elements=finite),
    arrays(np.int32, (N_SLICE,), elements=st.integers(0, V - 1)),
    arrays(np.float32, (N_SLICE, V), elements=st.floats(0.0, 1.0, width=32)),
    arrays(np.bool_, (N_SLICE,), elements=st.booleans()),
)
def test_where_row_mask_equals_slicing_the_rows_out(z, y, w, where):
    t = _distribution(w)
    masked = _masked(z, y, t, where)
    kept = _masked(z[where], y[where], t[where], np.ones(int(where.sum()), bool))
    for (key, reduction), value in masked.items():
        value = np.asarray(value)
        if reduction == "none":
            np.testing.assert_array_equal(value[~where], 0.0, err_msg=key)
            value = value[where]
        np.testing.assert_allclose(value, kept[key, reduction], rtol=1e-5, atol=1e-6, err_msg=f"{key} {reduction}")


@functools.partial(jax.jit, static_argnames=("ignore_index",))
def _integer_losses(z, y, weight, ignore_index):
    out = {}
    for r in ("sum", "mean"):
        kw = {"reduction": r, "ignore_index": ignore_index}
        ce_int = jxent.softmax_cross_entropy_with_integer_labels
        out["ce_int", r] = ce_int(z, y, weight=weight, label_smoothing=0.1, **kw)
        out["ce", r] = jxent.softmax_cross_entropy(z, y, **kw)
        out["focal", r] = jxent.softmax_focal_loss(z, y, gamma=0.5, **kw)
        out["poly", r] = jxent.poly_loss_cross_entropy(z, y, **kw)
        out["gce", r] = jxent.generalized_cross_entropy(z, y, **kw)
        out["cce", r] = jxent.categorical_cross_entropy(jxent.softmax(z), y, weight=weight, **kw)
    return out


@SETTINGS
@given(
    arrays(np.float32, (N_SLICE, V), elements=finite),
    arrays(np.int32, (N_SLICE,), elements=st.integers(0, V - 1)),
    arrays(np.bool_, (N_SLICE,), elements=st.booleans()),
    arrays(np.float32, (V,), elements=st.floats(0.125, 2.0, width=32)),
)
def test_ignore_index_equals_dropping_the_rows(z, y, drop, weight):
    y_ignored = np.where(drop, -100, y).astype(np.int32)
    ignored = _integer_losses(z, y_ignored, weight, -100)
    kept = _integer_losses(z[~drop], y[~drop], weight, -100)  # no label is -100 there: nothing ignored
    for key, value in ignored.items():
        np.testing.assert_allclose(value, kept[key], rtol=1e-5, atol=1e-6, err_msg=str(key))
