"""poly_loss_cross_entropy (against optax and the reference) and generalized_cross_entropy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jxent
from jxent.testing.tolerances import optax_tolerance
from tests import reference as ref

poly = jxent.poly_loss_cross_entropy
gce = jxent.generalized_cross_entropy


def _inputs(shape=(5, 4), axis=-1, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.normal(size=shape) * 2.5, dtype)
    t = rng.gamma(0.7, size=shape)
    t = jnp.asarray(t / t.sum(axis=axis, keepdims=True), jnp.float32)
    return z, t


@pytest.mark.parametrize(("shape", "axis"), [((5, 4), -1), ((4, 5), 0), ((2, 3, 4), (1, 2))])
def test_poly_matches_optax_and_reference(shape, axis):
    z, t = _inputs(shape, axis)
    where = jnp.asarray(np.random.default_rng(1).random(shape) < 0.7)

    @jax.jit
    def run(z, t):
        return [poly(z, t, epsilon=e, axis=axis) for e in (2.0, -1.0)] + [poly(z, t, axis=axis, where=where)]

    out = run(z, t)
    for e, value in zip((2.0, -1.0), out, strict=False):
        np.testing.assert_allclose(
            value, optax.losses.poly_loss_cross_entropy(z, t, epsilon=e, axis=axis), **optax_tolerance()
        )
        np.testing.assert_allclose(
            value, ref.poly_loss_cross_entropy(z, t, epsilon=e, axis=axis), **ref.tol(jnp.float32)
        )
    theirs = optax.losses.poly_loss_cross_entropy(z, t, axis=axis, where=where)
    np.testing.assert_allclose(out[2], theirs, **optax_tolerance())


def test_poly_integer_labels_equal_one_hot_and_ignore_index():
    z, _ = _inputs(seed=2)
    labels = jnp.array([0, 3, -100, 1, 2])
    safe = jnp.where(labels < 0, 0, labels)
    out_int, out_dense, out_mean = jax.jit(
        lambda z: (
            poly(z, labels, ignore_index=-100),
            poly(z, jax.nn.one_hot(safe, 4)),
            poly(z, labels, ignore_index=-100, reduction="mean"),
        )
    )(z)
    expected = ref.poly_loss_cross_entropy(z, ref.one_hot(safe, 4))
    expected[2] = 0.0
    np.testing.assert_allclose(out_int, expected, rtol=2e-6)
    np.testing.assert_allclose(np.delete(np.asarray(out_dense), 2), np.delete(expected, 2), rtol=2e-6)
    np.testing.assert_allclose(out_mean, expected.sum() / 4, rtol=2e-6)


def test_poly_gradient_closed_form():
    z, t = _inputs(seed=3)
    eps = 2.0
    g = jax.jit(jax.grad(lambda z: poly(z, t, epsilon=eps).sum()))(z)
    p = ref.softmax(z)
    tt = ref.f64(t)
    expected = (p - tt) - eps * p * (tt - np.sum(tt * p, -1, keepdims=True))
    np.testing.assert_allclose(g, expected, **ref.tol(jnp.float32))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gce_matches_reference(dtype):
    z, t = _inputs(seed=4, dtype=dtype)
    labels = jnp.array([0, 3, 2, 1, 2])
    qs = (0.1, 0.7, 1.0)
    out = jax.jit(lambda z: [(gce(z, labels, q=q), gce(z, t, q=q)) for q in qs])(z)
    for q, (v_int, v_prob) in zip(qs, out, strict=True):
        assert v_int.dtype == jnp.float32
        np.testing.assert_allclose(v_int, ref.generalized_cross_entropy(z, ref.one_hot(labels, 4), q=q), rtol=1e-5)
        np.testing.assert_allclose(v_prob, ref.generalized_cross_entropy(z, t, q=q), rtol=1e-5)
    # q = 1 is the mean absolute error 1 - p_y; GCE is bounded by 1 / q.
    np.testing.assert_allclose(out[2][0], 1 - np.sum(ref.softmax(z) * ref.one_hot(labels, 4), -1), rtol=1e-5)
    assert np.all(np.asarray(out[0][0]) <= 1 / 0.1)


def test_gce_gradient_closed_form():
    z, _ = _inputs(seed=5)
    labels = jnp.array([1, 1, 0, 3, 2])
    g = jax.jit(jax.grad(lambda z: gce(z, labels, q=0.7).sum()))(z)
    np.testing.assert_allclose(g, ref.generalized_cross_entropy_grad_integer(z, labels, q=0.7), rtol=1e-5, atol=1e-7)


def test_gce_where_and_reductions():
    z, _ = _inputs(seed=6)
    labels = jnp.array([1, 1, 0, 3, 2])
    where = jnp.array([True, False, True, True, False])
    out = jax.jit(lambda z: {r: gce(z, labels, where=where, reduction=r) for r in ("none", "sum", "mean")})(z)
    per = np.where(np.asarray(where), ref.generalized_cross_entropy(z, ref.one_hot(labels, 4)), 0.0)
    np.testing.assert_allclose(out["none"], per, rtol=1e-5)
    np.testing.assert_allclose(out["sum"], per.sum(), rtol=1e-5)
    np.testing.assert_allclose(out["mean"], per.sum() / 3, rtol=1e-5)


def test_argument_errors():
    z = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="`q`"):
        gce(z, jnp.array([0, 1]), q=0.0)
    with pytest.raises(ValueError, match="`q`"):
        gce(z, jnp.array([0, 1]), q=1.5)
    with pytest.raises(ValueError, match="reduction"):
        poly(z, jnp.array([0, 1]), reduction="max")
    with pytest.raises(TypeError, match="logits"):
        poly(jnp.zeros((2, 3), jnp.int32), z)


def test_float64_tuple_axes_and_float16(x64):
    rng = np.random.default_rng(8)
    z = jnp.asarray(rng.normal(size=(2, 3, 4)) * 2)  # float64; classes over axes (1, 2): 12 classes
    labels = jnp.asarray([5, 11])
    t = rng.dirichlet(np.ones(12), size=2).reshape(2, 3, 4)
    g, p = jax.jit(lambda z: (gce(z, labels, axis=(1, 2), q=0.4), poly(z, t, axis=(1, 2))))(z)
    assert g.dtype == p.dtype == jnp.float64
    dense = ref.integer_to_dense(labels, (2, 3, 4), (1, 2))
    np.testing.assert_allclose(g, ref.generalized_cross_entropy(z, dense, q=0.4, axis=(1, 2)), rtol=1e-10)
    np.testing.assert_allclose(p, ref.poly_loss_cross_entropy(z, t, axis=(1, 2)), rtol=1e-10)
    z16 = jnp.asarray(rng.normal(size=(3, 4)), jnp.float16)
    out = jax.jit(lambda z: poly(z, jnp.full((3, 4), 0.25)))(z16)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref.poly_loss_cross_entropy(z16, np.full((3, 4), 0.25)), rtol=2e-5)
