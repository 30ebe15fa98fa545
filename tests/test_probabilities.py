"""categorical_cross_entropy and binary_cross_entropy on probabilities (torch's clamped logarithm)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jxent
from tests import reference as ref

cce = jxent.categorical_cross_entropy
bce = jxent.binary_cross_entropy


def _probs(shape, axis=-1, seed=0, dtype=jnp.float32):
    p = np.random.default_rng(seed).gamma(1.0, size=shape)
    return jnp.asarray(p / p.sum(axis=axis, keepdims=True), dtype)


def test_tutorial_values_in_nats():
    probs = jnp.array([[0.4, 0.4, 0.2], [0.1, 0.2, 0.7]])
    out = jax.jit(cce)(probs, jnp.array([1, 2]))
    np.testing.assert_allclose(out, [-np.log(0.4), -np.log(0.7)], rtol=1e-6)
    np.testing.assert_allclose(jax.jit(bce)(jnp.array([0.8, 0.8]), jnp.array([1.0, 0.0])), [-np.log(0.8), -np.log(0.2)])


@pytest.mark.parametrize(
    ("shape", "axis", "dtype"),
    [((5, 4), -1, jnp.float32), ((4, 5), 0, jnp.float32), ((2, 3, 4), (1, 2), jnp.float32), ((5, 4), -1, jnp.bfloat16)],
)
def test_categorical_matches_reference(shape, axis, dtype):
    p = _probs(shape, axis, dtype=dtype)
    axes = ref.class_axes(axis, len(shape))
    batch = tuple(s for i, s in enumerate(shape) if i not in axes)
    num_classes = int(np.prod([shape[a] for a in axes]))
    labels = jnp.asarray(np.random.default_rng(1).integers(0, num_classes, size=batch))
    t = _probs(shape, axis, seed=2)
    out_int, out_prob = jax.jit(lambda p, y, t: (cce(p, y, axis=axis), cce(p, t, axis=axis)))(p, labels, t)
    assert out_int.dtype == jnp.float32 and out_int.shape == batch
    np.testing.assert_allclose(
        out_int, ref.categorical_cross_entropy(p, ref.integer_to_dense(labels, shape, axis), axis), rtol=2e-6
    )
    np.testing.assert_allclose(out_prob, ref.categorical_cross_entropy(p, t, axis), rtol=2e-6)


def test_categorical_options_and_reductions():
    p = _probs((6, 4), seed=3)
    labels = jnp.array([0, 1, -100, 3, 2, -100])
    weight = jnp.array([0.5, 1.0, 2.0, 1.5])
    where = jnp.array([True, True, True, False, True, True])

    @jax.jit
    def run(p):
        opts = {"weight": weight, "ignore_index": -100, "label_smoothing": 0.2, "where": where}
        return {r: cce(p, labels, reduction=r, **opts) for r in ("none", "sum", "mean")}

    out = run(p)
    y = np.asarray(labels)
    counted = (y != -100) & np.asarray(where)
    safe = np.where(counted, y, 0)
    q = (0.8 * ref.one_hot(safe, 4) + 0.2 / 4) * ref.f64(weight)
    expected = np.where(counted, -np.sum(q * ref.clamped_log(p), -1), 0.0)
    np.testing.assert_allclose(out["none"], expected, rtol=2e-6)
    np.testing.assert_allclose(out["sum"], expected.sum(), rtol=2e-6)
    np.testing.assert_allclose(out["mean"], expected.sum() / ref.f64(weight)[safe][counted].sum(), rtol=2e-6)


def test_binary_matches_torch_formula():
    rng = np.random.default_rng(4)
    p = jnp.asarray(rng.uniform(0.01, 0.99, size=(4, 5)), jnp.float32)
    y = jnp.asarray(rng.random((4, 5)), jnp.float32)
    weight = jnp.asarray(rng.uniform(0, 2, size=(5,)), jnp.float32)
    where = jnp.asarray(rng.random((4, 5)) < 0.7)

    @jax.jit
    def run(p, y):
        return (
            bce(p, y),
            bce(p, y, label_smoothing=0.1),
            {r: bce(p, y, weight=weight, where=where, reduction=r) for r in ("none", "sum", "mean")},
        )

    plain, smoothed, red = run(p, y)
    np.testing.assert_allclose(plain, ref.binary_cross_entropy(p, y), rtol=2e-6)
    np.testing.assert_allclose(smoothed, ref.binary_cross_entropy(p, y, label_smoothing=0.1), rtol=2e-6)
    expected = np.where(where, ref.binary_cross_entropy(p, y) * ref.f64(weight), 0.0)
    np.testing.assert_allclose(red["none"], expected, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(red["sum"], expected.sum(), rtol=2e-6)
    np.testing.assert_allclose(red["mean"], expected.sum() / np.sum(where), rtol=2e-6)


def test_gradients_closed_form():
    rng = np.random.default_rng(5)
    p = jnp.asarray(rng.uniform(0.05, 0.95, size=(3, 4)), jnp.float32)
    y = jnp.asarray(rng.random((3, 4)), jnp.float32)
    labels = jnp.array([2, 0, 3])
    g_bce, g_cce = jax.jit(
        lambda p: (jax.grad(lambda p: bce(p, y).sum())(p), jax.grad(lambda p: cce(p, labels).sum())(p))
    )(p)
    pp, yy = ref.f64(p), ref.f64(y)
    np.testing.assert_allclose(g_bce, (pp - yy) / (pp * (1 - pp)), rtol=1e-5)
    np.testing.assert_allclose(g_cce, -ref.one_hot(labels, 4) / pp, rtol=1e-6)


def test_16_bit_and_float64(x64):
    p = _probs((3, 4), seed=6, dtype=jnp.float16)
    labels = jnp.array([0, 1, 3])
    out, g = jax.jit(lambda p: (cce(p, labels), jax.grad(lambda p: cce(p, labels).sum())(p)))(p)
    assert out.dtype == jnp.float32 and g.dtype == jnp.float16
    p64 = _probs((3, 4), seed=6, dtype=jnp.float64)
    out64 = jax.jit(cce)(p64, labels)
    assert out64.dtype == jnp.float64
    np.testing.assert_allclose(out64, ref.categorical_cross_entropy(p64, ref.one_hot(labels, 4)), rtol=1e-13)
    assert jax.jit(bce)(p64, jnp.ones_like(p64)).dtype == jnp.float64


def test_argument_errors():
    p = jnp.full((2, 3), 1 / 3)
    with pytest.raises(TypeError, match="probabilities"):
        cce(jnp.ones((2, 3), jnp.int32), jnp.array([0, 1]))
    with pytest.raises(TypeError, match="probabilities"):
        bce(jnp.ones((2, 3), jnp.int32), p)
    with pytest.raises(ValueError, match="weight"):
        cce(p, jnp.array([0, 1]), weight=jnp.ones(4))
    with pytest.raises(ValueError, match="label_smoothing"):
        bce(p, p, label_smoothing=-0.1)
    with pytest.raises(ValueError, match="labels"):
        bce(p, jnp.ones((4,)))


def _poison(x, mask, values):
    """``x`` with the masked (``mask=False``) entries replaced by ``values`` in turn (NaN, +inf, -inf, ...)."""
    x = np.array(x)
    masked = np.argwhere(~np.broadcast_to(mask, x.shape))
    for i, idx in enumerate(masked):
        x[tuple(idx)] = values[i % len(values)]
    return jnp.asarray(x)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_binary_masked_nan_and_inf_give_zero_loss_and_gradient(reduction):
    rng = np.random.default_rng(7)
    p = jnp.asarray(rng.uniform(0.05, 0.95, size=(4, 5)), jnp.float32)
    y = jnp.asarray(rng.random((4, 5)), jnp.float32)
    where = jnp.asarray(rng.random((4, 5)) < 0.6)
    weight = jnp.asarray(rng.uniform(0.5, 2, size=(4, 5)), jnp.float32)
    bad_p = _poison(p, where, [np.nan, np.inf, -np.inf, 2.0])
    bad_y = _poison(y, where, [np.inf, np.nan, -np.inf])
    bad_w = _poison(weight, where, [np.nan, np.inf])

    def loss(p, y, w):
        return bce(p, y, weight=w, where=where, reduction=reduction)

    grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    clean_value, clean_grads = grads(p, y, weight)
    for args in [(bad_p, y, weight), (p, bad_y, weight), (p, y, bad_w), (bad_p, bad_y, bad_w)]:
        value, g = grads(*args)
        np.testing.assert_array_equal(value, clean_value)
        for g_bad, g_clean in zip(g, clean_grads, strict=True):
            assert np.all(np.isfinite(g_bad))
            np.testing.assert_array_equal(np.where(where, 0.0, g_bad), 0.0)  # exactly 0 where masked
            np.testing.assert_array_equal(g_bad, g_clean)
        out = jax.jit(lambda p, y, w: bce(p, y, weight=w, where=where))(*args)
        np.testing.assert_array_equal(np.where(where, 0.0, out), 0.0)
        assert np.all(np.isfinite(out))
    # Without a weight too, and the gradient elsewhere is the closed form.
    g = jax.jit(jax.grad(lambda p: bce(p, y, where=where, reduction="sum")))(bad_p)
    pp, yy = ref.f64(p), ref.f64(y)
    np.testing.assert_allclose(g, np.where(where, (pp - yy) / (pp * (1 - pp)), 0.0), rtol=1e-5)
    np.testing.assert_array_equal(np.where(where, 0.0, g), 0.0)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("form", ["integer", "probabilities"])
@pytest.mark.parametrize("mask_kind", ["classes", "rows"])
def test_categorical_masked_nan_and_inf_give_zero_loss_and_gradient(mask_kind, form, label_smoothing):
    p = _probs((5, 4), seed=9)
    t = _probs((5, 4), seed=10)
    int_labels = jnp.array([0, 3, 2, 0, 3])
    if mask_kind == "classes":  # class 1 masked everywhere, plus a few more entries (none on the integer labels)
        where = np.ones((5, 4), bool)
        where[:, 1] = False
        where[2, 0] = where[4, 2] = False
        full = where
    else:  # a batch-shaped mask: whole rows
        where = np.array([True, False, True, False, True])
        full = np.broadcast_to(where[:, None], (5, 4))
    where = jnp.asarray(where)
    # A NaN class weight on class 1, masked everywhere in the per-class case (a row mask does not mask a class).
    weight = jnp.array([0.5, np.nan if mask_kind == "classes" else 1.5, 2.0, 1.0])
    bad_p = _poison(p, full, [np.nan, np.inf, -np.inf, 3.0])
    bad_t = _poison(t, full, [np.inf, np.nan, -np.inf])
    clean_weight = jnp.where(jnp.isnan(weight), 1.0, weight)

    def loss(p, t, weight):
        labels = int_labels if form == "integer" else t
        opts = {"where": where, "weight": weight, "label_smoothing": label_smoothing}
        return cce(p, labels, reduction="mean", **opts), cce(p, labels, **opts)

    run = jax.jit(lambda p, t, w: (loss(p, t, w)[1], jax.grad(lambda p, t: loss(p, t, w)[0], argnums=(0, 1))(p, t)))
    clean_out, clean_grads = run(p, t, clean_weight)
    for args in [(bad_p, t, weight), (p, bad_t, weight), (bad_p, bad_t, weight), (bad_p, bad_t, clean_weight)]:
        out, grads = run(*args)
        np.testing.assert_array_equal(out, clean_out)
        assert np.all(np.isfinite(out))
        for g_bad, g_clean in zip(grads, clean_grads, strict=True):
            assert np.all(np.isfinite(g_bad))
            np.testing.assert_array_equal(np.where(full, 0.0, g_bad), 0.0)  # exactly 0 where masked
            np.testing.assert_array_equal(g_bad, g_clean)
    if mask_kind == "rows":
        np.testing.assert_array_equal(np.where(where, 0.0, clean_out), 0.0)
