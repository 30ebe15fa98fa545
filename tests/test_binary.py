"""sigmoid_binary_cross_entropy against the float64 reference, optax, and its closed-form gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jxent
from jxent.testing.tolerances import optax_tolerance
from tests import reference as ref

bce = jxent.sigmoid_binary_cross_entropy


def _inputs(shape=(4, 5), dtype=jnp.float32, seed=0, soft=True):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape) * 4, dtype)
    y = rng.random(shape) if soft else rng.integers(0, 2, size=shape)
    return x, jnp.asarray(y, jnp.float32)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_matches_reference(dtype):
    x, y = _inputs(dtype=dtype)
    hard = jnp.round(y)
    out_soft, out_hard, out_bcast = jax.jit(lambda x, y, h: (bce(x, y), bce(x, h), bce(x, y[0])))(x, y, hard)
    assert out_soft.dtype == jnp.float32 and out_soft.shape == x.shape
    np.testing.assert_allclose(out_soft, ref.sigmoid_binary_cross_entropy(x, y), **ref.tol(jnp.float32))
    np.testing.assert_allclose(out_hard, ref.sigmoid_binary_cross_entropy(x, hard), **ref.tol(jnp.float32))
    np.testing.assert_allclose(out_bcast, ref.sigmoid_binary_cross_entropy(x, y[0]), **ref.tol(jnp.float32))


def test_matches_optax_on_finite_logits():
    x, y = _inputs(seed=1)
    x = x * 5  # up to |x| ~ 50
    ours = jax.jit(lambda x, y: (bce(x, y), bce(x, jnp.round(y))))(x, y)
    np.testing.assert_allclose(ours[0], optax.losses.sigmoid_binary_cross_entropy(x, y), **optax_tolerance())
    np.testing.assert_allclose(ours[1], optax.losses.sigmoid_binary_cross_entropy(x, jnp.round(y)), **optax_tolerance())


def test_float64_under_x64(x64):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(3, 4)) * 3)
    y = jnp.asarray(rng.random((3, 4)))
    out = jax.jit(bce)(x, y)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, ref.sigmoid_binary_cross_entropy(x, y), rtol=1e-13)


def test_pos_weight_label_smoothing_weight_where_and_reductions():
    x, y = _inputs(seed=3)
    pos_weight = jnp.asarray(np.random.default_rng(4).uniform(0.5, 3.0, size=(5,)), jnp.float32)
    weight = jnp.asarray(np.random.default_rng(5).uniform(0.0, 2.0, size=(4, 5)), jnp.float32)
    where = jnp.asarray(np.random.default_rng(6).random((4, 5)) < 0.7)

    @jax.jit
    def run(x, y):
        opts = {"pos_weight": pos_weight, "label_smoothing": 0.2, "weight": weight, "where": where}
        return {r: bce(x, y, reduction=r, **opts) for r in ("none", "sum", "mean")}

    out = run(x, y)
    elementwise = ref.sigmoid_binary_cross_entropy(x, y, pos_weight=ref.f64(pos_weight), label_smoothing=0.2)
    expected = np.where(where, elementwise * ref.f64(weight), 0.0)
    np.testing.assert_allclose(out["none"], expected, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(out["sum"], expected.sum(), rtol=2e-6)
    # "mean" divides by the number of unmasked elements; element weights are not in the denominator (torch).
    np.testing.assert_allclose(out["mean"], expected.sum() / np.sum(where), rtol=2e-6)


def test_keras_binary_label_smoothing():
    x = jnp.array([0.3, -1.2])
    y = jnp.array([1.0, 0.0])
    smoothed = np.array([1 - 0.1 / 2, 0.1 / 2])  # y (1 - eps) + eps / 2
    np.testing.assert_allclose(
        jax.jit(lambda x, y: bce(x, y, label_smoothing=0.1))(x, y),
        ref.sigmoid_binary_cross_entropy(x, smoothed),
        rtol=1e-6,
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gradient_closed_form(dtype):
    x, y = _inputs(dtype=dtype, seed=7)
    pos_weight = 2.5
    g, g_pw = jax.jit(
        lambda x: (
            jax.grad(lambda x: bce(x, y).sum())(x),
            jax.grad(lambda x: bce(x, y, pos_weight=jnp.float32(pos_weight)).sum())(x),
        )
    )(x)
    assert g.dtype == dtype
    np.testing.assert_allclose(ref.f64(g), ref.sigmoid_binary_cross_entropy_grad(x, y), **ref.tol(dtype))
    np.testing.assert_allclose(
        ref.f64(g_pw), ref.sigmoid_binary_cross_entropy_grad(x, y, pos_weight=pos_weight), **ref.tol(dtype)
    )


def test_gradient_with_respect_to_labels():
    x, y = _inputs(seed=8)
    g = jax.jit(jax.grad(lambda y: bce(x, y).sum()))(y)
    np.testing.assert_allclose(g, -ref.f64(x), rtol=1e-6, atol=1e-6)  # d/dy = log sigmoid(-x) - log sigmoid(x)


def test_argument_errors():
    x = jnp.zeros((2, 3))
    with pytest.raises(TypeError, match="logits"):
        bce(jnp.zeros((2, 3), jnp.int32), x)
    with pytest.raises(ValueError, match="labels"):
        bce(x, jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="pos_weight"):
        bce(x, x, pos_weight=jnp.ones((4,)))
    with pytest.raises(ValueError, match="weight"):
        bce(x, x, weight=jnp.ones((2, 2)))
    with pytest.raises(TypeError, match="where"):
        bce(x, x, where=jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="label_smoothing"):
        bce(x, x, label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction"):
        bce(x, x, reduction="avg")


@pytest.mark.parametrize("fn", [jxent.sigmoid_binary_cross_entropy, jxent.sigmoid_focal_loss])
def test_masked_nan_and_inf_inputs_give_zero_gradient(fn):
    """Padding with garbage (NaN, inf) under ``where=False``: loss 0 and gradient 0 there, the rest unchanged."""
    x = jnp.array([[1.0, jnp.nan, -2.0, jnp.inf]])
    y = jnp.array([[1.0, 0.0, 0.0, jnp.nan]])
    mask = jnp.array([[True, False, True, False]])

    def total(x, y):
        return fn(x, y, where=mask, reduction="sum")

    gx, gy = jax.grad(total, (0, 1))(x, y)
    clean = jax.grad(lambda x: fn(x[:, ::2], y[:, ::2], reduction="sum"))(x)
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gy))
    np.testing.assert_array_equal(np.asarray(gx)[:, 1::2], 0.0)
    np.testing.assert_array_equal(np.asarray(gy)[:, 1::2], 0.0)
    np.testing.assert_allclose(gx[:, ::2], clean[:, ::2], rtol=1e-6)
    np.testing.assert_allclose(total(x, y), fn(x[:, ::2], y[:, ::2], reduction="sum"), rtol=1e-6)
