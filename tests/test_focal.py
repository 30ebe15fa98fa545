"""sigmoid_focal_loss and softmax_focal_loss: optax, float64 references and closed-form gradients."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jxent
from jxent.testing.tolerances import optax_tolerance
from tests import reference as ref

sfl = jxent.sigmoid_focal_loss
mfl = jxent.softmax_focal_loss

ALPHAS = (None, 0.25)
GAMMAS = (0.0, 0.5, 2.0)
COMBOS = list(itertools.product(ALPHAS, GAMMAS))


def _binary(shape=(4, 5), seed=0, scale=4.0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape) * scale, dtype)
    soft = jnp.asarray(rng.random(shape), jnp.float32)
    return x, soft, jnp.round(soft)


def test_sigmoid_focal_matches_optax():
    x, soft, hard = _binary()
    # One jitted call for every (alpha, gamma) combination, soft and hard labels (a list: None is not sortable).
    out = jax.jit(lambda x: [(sfl(x, soft, alpha=a, gamma=g), sfl(x, hard, alpha=a, gamma=g)) for a, g in COMBOS])(x)
    for (a, g), values in zip(COMBOS, out, strict=True):
        for y, value in zip((soft, hard), values, strict=True):
            theirs = optax.losses.sigmoid_focal_loss(x, y, alpha=a, gamma=g)
            np.testing.assert_allclose(value, theirs, **optax_tolerance(), err_msg=f"alpha={a} gamma={g}")


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_sigmoid_focal_matches_reference(dtype):
    x, soft, hard = _binary(seed=1, dtype=dtype)
    out = jax.jit(lambda x: [(sfl(x, soft, alpha=a, gamma=g), sfl(x, hard, alpha=a, gamma=g)) for a, g in COMBOS])(x)
    for (a, g), (v_soft, v_hard) in zip(COMBOS, out, strict=True):
        assert v_soft.dtype == jnp.float32
        np.testing.assert_allclose(v_soft, ref.sigmoid_focal_loss(x, soft, alpha=a, gamma=g), **ref.tol(jnp.float32))
        np.testing.assert_allclose(v_hard, ref.sigmoid_focal_loss(x, hard, alpha=a, gamma=g), **ref.tol(jnp.float32))


def test_sigmoid_focal_gamma_0_is_bce():
    x, soft, _ = _binary(seed=2)
    out = jax.jit(lambda x: sfl(x, soft, gamma=0.0))(x)
    np.testing.assert_allclose(out, ref.sigmoid_binary_cross_entropy(x, soft), rtol=2e-6)


def _grad_sum(fn):
    return jax.grad(lambda x: jnp.sum(fn(x)))


def test_sigmoid_focal_gradient_closed_form_hard_labels():
    x, _, hard = _binary(seed=3, scale=3.0)
    grads = jax.jit(lambda x: [_grad_sum(lambda x, a=a, g=g: sfl(x, hard, alpha=a, gamma=g))(x) for a, g in COMBOS])(x)
    for (a, g), value in zip(COMBOS, grads, strict=True):
        expected = ref.sigmoid_focal_grad_hard(x, hard, alpha=a, gamma=g)
        np.testing.assert_allclose(value, expected, **ref.tol(jnp.float32), err_msg=f"alpha={a} gamma={g}")


def test_sigmoid_focal_weight_where_reduction():
    x, soft, _ = _binary(seed=4)
    weight = jnp.asarray(np.random.default_rng(5).uniform(0, 2, size=(4, 5)), jnp.float32)
    where = jnp.asarray(np.random.default_rng(6).random((4, 5)) < 0.6)
    out = jax.jit(
        lambda x: {r: sfl(x, soft, alpha=0.25, weight=weight, where=where, reduction=r) for r in ("sum", "mean")}
    )(x)
    elementwise = np.where(where, ref.sigmoid_focal_loss(x, soft, alpha=0.25) * ref.f64(weight), 0.0)
    np.testing.assert_allclose(out["sum"], elementwise.sum(), rtol=2e-6)
    np.testing.assert_allclose(out["mean"], elementwise.sum() / np.sum(where), rtol=2e-6)


# ----------------------------------------------------------------------------------------------------------------
# Softmax focal loss
# ----------------------------------------------------------------------------------------------------------------


def _multiclass(shape=(5, 4), seed=10, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.normal(size=shape) * 2.5, dtype)
    labels = jnp.asarray(rng.integers(0, shape[-1], size=shape[:-1]))
    t = jnp.asarray(rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]), jnp.float32)
    return z, labels, t


# (alpha, gamma) for the softmax focal loss: no alpha, a scalar alpha and per-class alphas, each gamma.
SOFTMAX_COMBOS = [(None, 0.0), (None, 0.5), (0.25, 2.0), ((0.1, 0.2, 0.3, 0.4), 0.5), ((0.1, 0.2, 0.3, 0.4), 2.0)]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_softmax_focal_matches_reference(dtype):
    z, labels, t = _multiclass(dtype=dtype)
    combos = SOFTMAX_COMBOS if dtype == jnp.float32 else SOFTMAX_COMBOS[-1:]

    @jax.jit
    def run(z):
        out = []
        for a, g in combos:
            a = None if a is None else jnp.asarray(a, jnp.float32)
            out.append((mfl(z, labels, alpha=a, gamma=g), mfl(z, t, alpha=a, gamma=g)))
        return out

    for (a, g), (v_int, v_prob) in zip(combos, run(z), strict=True):
        assert v_int.dtype == jnp.float32
        exp_int = ref.softmax_focal_loss(z, ref.one_hot(labels, 4), alpha=a, gamma=g)
        np.testing.assert_allclose(v_int, exp_int, **ref.tol(jnp.float32), err_msg=f"alpha={a} gamma={g}")
        exp_prob = ref.softmax_focal_loss(z, t, alpha=a, gamma=g)
        np.testing.assert_allclose(v_prob, exp_prob, **ref.tol(jnp.float32), err_msg=f"alpha={a} gamma={g}")


def test_softmax_focal_gamma_0_is_weighted_cross_entropy():
    z, labels, _ = _multiclass(seed=11)
    alpha = jnp.array([0.1, 0.2, 0.3, 0.4])
    out = jax.jit(lambda z: mfl(z, labels, alpha=alpha, gamma=0.0))(z)
    expected = ref.softmax_cross_entropy(z, ref.one_hot(labels, 4), weight=alpha)
    np.testing.assert_allclose(out, expected, rtol=2e-6)


def test_softmax_focal_gradient_closed_form_integer_labels():
    z, labels, _ = _multiclass(seed=12)
    alpha = (0.1, 0.2, 0.3, 0.4)
    grads = jax.jit(
        lambda z: {g: _grad_sum(lambda z, g=g: mfl(z, labels, alpha=jnp.asarray(alpha), gamma=g))(z) for g in GAMMAS}
    )(z)
    for g, value in grads.items():
        expected = ref.softmax_focal_grad_integer(z, labels, alpha=alpha, gamma=g)
        np.testing.assert_allclose(value, expected, **ref.tol(jnp.float32), err_msg=f"gamma={g}")


def test_softmax_focal_ignore_index_where_and_mean():
    z, labels, _ = _multiclass(shape=(6, 4), seed=13)
    labels = labels.at[2].set(-100)
    where = jnp.array([True, True, True, True, False, True])
    alpha = jnp.array([0.5, 1.0, 2.0, 1.5])

    @jax.jit
    def run(z):
        opts = {"alpha": alpha, "gamma": 2.0, "ignore_index": -100, "where": where}
        return {r: mfl(z, labels, reduction=r, **opts) for r in ("none", "mean")}

    out = run(z)
    counted = (np.asarray(labels) != -100) & np.asarray(where)
    safe = np.where(counted, labels, 0)
    per = np.where(counted, ref.softmax_focal_loss(z, ref.one_hot(safe, 4), alpha=alpha, gamma=2.0), 0.0)
    np.testing.assert_allclose(out["none"], per, rtol=1e-5, atol=1e-7)
    # "mean" divides by the number of counted examples; alpha is not part of the denominator (torchvision).
    np.testing.assert_allclose(out["mean"], per.sum() / counted.sum(), rtol=1e-5)


def test_argument_errors():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="gamma"):
        sfl(x, x, gamma=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        sfl(x, x, alpha=1.5)
    with pytest.raises(ValueError, match="alpha"):
        mfl(x, jnp.array([0, 1]), alpha=-0.5)
    with pytest.raises(ValueError, match="`alpha`"):
        mfl(x, jnp.array([0, 1]), alpha=jnp.ones(4))
    with pytest.raises(TypeError, match="logits"):
        sfl(jnp.zeros((2, 3), jnp.int32), x)


def test_float64_and_class_axis_0(x64):
    rng = np.random.default_rng(20)
    x = jnp.asarray(rng.normal(size=(4, 5)) * 3)  # float64
    soft = jnp.asarray(rng.random((4, 5)))
    labels = jnp.asarray(rng.integers(0, 4, size=5))  # class axis 0: 4 classes, 5 examples
    s, m = jax.jit(lambda x: (sfl(x, soft, alpha=0.25, gamma=0.5), mfl(x, labels, axis=0, gamma=0.5)))(x)
    assert s.dtype == m.dtype == jnp.float64
    np.testing.assert_allclose(s, ref.sigmoid_focal_loss(x, soft, alpha=0.25, gamma=0.5), rtol=1e-10)
    expected = ref.softmax_focal_loss(np.asarray(x).T, ref.one_hot(labels, 4), gamma=0.5)
    np.testing.assert_allclose(m, expected, rtol=1e-10)


def test_softmax_focal_large_logits_keep_their_digits():
    """``log(1 - p_top)`` is a difference of two log-sum-exps: taken after the row maximum is subtracted, it keeps
    its digits at 1e8-sized logits (it was 0.693 instead of 0.173 before)."""
    big = 2.0**26  # float32 holds big + multiples of 8 exactly
    z = jnp.array([[big, big, 0.0], [big + 8, big, big - 8], [1e30, 1e30, -1e30]], jnp.float32)
    labels = jnp.array([0, 1, 1])
    got = jax.jit(lambda z: mfl(z, labels))(z)
    expected = ref.softmax_focal_loss(np.asarray(z, np.float64), ref.one_hot(labels, 3))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.all(np.isfinite(jax.grad(lambda z: jnp.sum(mfl(z, labels)))(z)))
