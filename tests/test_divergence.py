"""kl_divergence (+ log-target form), entropy and js_divergence against SciPy and optax."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import kl_div as special_kl_div
from scipy.special import rel_entr

import jxent
from jxent.testing.tolerances import optax_tolerance
from tests import reference as ref

kl = jxent.kl_divergence
kl_log = jxent.kl_divergence_with_log_targets


def _dists(shape=(5, 4), axis=-1, seed=0, zeros=False):
    rng = np.random.default_rng(seed)
    t = rng.gamma(0.7, size=shape)
    if zeros:
        t = np.where(rng.random(shape) < 0.25, 0.0, t)
        t[(slice(None),) * (len(shape) - 1) + (0,)] += 0.1  # no all-zero row
    return jnp.asarray(t / t.sum(axis=axis, keepdims=True), jnp.float32)


@pytest.mark.parametrize(("shape", "axis"), [((5, 4), -1), ((4, 5), 0), ((2, 3, 4), (1, 2)), ((3, 4), None)])
def test_kl_matches_optax_and_scipy(shape, axis):
    t = _dists(shape, axis, seed=1, zeros=True)  # zero targets: 0 log 0 = 0
    t_pos = _dists(shape, axis, seed=3)
    log_q = jnp.log(_dists(shape, axis, seed=2))
    out, out_log, out_log_pos = jax.jit(
        lambda a, b, c: (kl(a, b, axis=axis), kl_log(a, jnp.log(b), axis=axis), kl_log(a, jnp.log(c), axis=axis))
    )(log_q, t, t_pos)
    np.testing.assert_allclose(out, optax.losses.kl_divergence(log_q, t, axis=axis), **optax_tolerance())
    np.testing.assert_allclose(out, ref.kl_divergence(log_q, t, axis=axis), **ref.tol(jnp.float32))
    np.testing.assert_allclose(out_log, ref.kl_divergence_with_log_targets(log_q, jnp.log(t), axis=axis), rtol=2e-5)
    # optax's log-target form gives NaN at log_targets = -inf, so it is compared on positive targets only.
    theirs = optax.losses.kl_divergence_with_log_targets(log_q, jnp.log(t_pos), axis=axis)
    np.testing.assert_allclose(out_log_pos, theirs, **optax_tolerance())


def test_kl_where_and_reductions():
    t = _dists(seed=3)
    log_q = jnp.log(_dists(seed=4))
    where = jnp.asarray(np.random.default_rng(5).random((5, 4)) < 0.7)
    where = where.at[2].set(False)
    out = jax.jit(lambda a, b: {r: kl(a, b, where=where, reduction=r) for r in ("none", "sum", "mean")})(log_q, t)
    np.testing.assert_allclose(out["none"], optax.losses.kl_divergence(log_q, t, where=where), **optax_tolerance())
    per = np.sum(np.where(where, rel_entr(ref.f64(t), np.exp(ref.f64(log_q))), 0.0), -1)
    np.testing.assert_allclose(out["none"], per, **ref.tol(jnp.float32))
    np.testing.assert_allclose(out["sum"], per.sum(), rtol=2e-5)
    np.testing.assert_allclose(out["mean"], per.sum() / 4, rtol=2e-5)  # the fully masked row does not count


def test_entropy_and_js_match_scipy():
    p = _dists(seed=6, zeros=True)
    q = _dists(seed=7)
    h, js, h0 = jax.jit(lambda p, q: (jxent.entropy(p), jxent.js_divergence(p, q), jxent.entropy(p, axis=0)))(p, q)
    np.testing.assert_allclose(h, ref.entropy(p), rtol=2e-6)
    np.testing.assert_allclose(h0, ref.entropy(p, axis=0), rtol=2e-6)
    # scipy's jensenshannon is the square root of the divergence (natural log by default).
    expected_js = jensenshannon(ref.f64(p), ref.f64(q), axis=-1) ** 2
    np.testing.assert_allclose(js, expected_js, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(js, ref.js_divergence(p, q), rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(js) <= np.log(2) + 1e-6)


def test_cross_entropy_is_entropy_plus_kl():
    logits = jnp.asarray(np.random.default_rng(8).normal(size=(5, 4)) * 2, jnp.float32)
    t = _dists(seed=9, zeros=True)
    ce, h, d = jax.jit(lambda z, t: (jxent.softmax_cross_entropy(z, t), jxent.entropy(t), kl(jxent.log_softmax(z), t)))(
        logits, t
    )
    np.testing.assert_allclose(ce, h + d, rtol=2e-6, atol=1e-6)


def test_gradients_closed_form():
    t = _dists(seed=10, zeros=True)
    log_q = jnp.log(_dists(seed=11))
    p = _dists(seed=12)
    g_kl, g_kl_log, g_h = jax.jit(
        lambda a, b, p: (
            jax.grad(lambda a: kl(a, b).sum())(a),
            jax.grad(lambda a: kl_log(a, jnp.log(b)).sum())(a),
            jax.grad(lambda p: jxent.entropy(p).sum())(p),
        )
    )(log_q, t, p)
    np.testing.assert_allclose(g_kl, -ref.f64(t), rtol=1e-6)
    np.testing.assert_allclose(g_kl_log, -ref.f64(t), rtol=1e-6)
    np.testing.assert_allclose(g_h, -(np.log(ref.f64(p)) + 1), rtol=1e-5)


def _divergences(log_q, t, log_t, q):
    return (
        kl(log_q, t),
        kl_log(log_q, log_t),
        jxent.entropy(t),
        jxent.js_divergence(t, q),
        jax.grad(lambda a: kl(a, t).sum())(log_q),
    )


def _reference_divergences(log_q, t, log_t, q):
    return (
        ref.kl_divergence(log_q, t),
        ref.kl_divergence_with_log_targets(log_q, log_t),
        ref.entropy(t),
        ref.js_divergence(t, q),
    )


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float64])
def test_dtypes(x64, dtype):
    # The inputs are made in float64 and rounded once to `dtype`; the reference sees exactly the rounded values.
    t = _dists(seed=13).astype(dtype)
    q = _dists(seed=14).astype(dtype)
    log_q = jnp.log(_dists(seed=14).astype(jnp.float64)).astype(dtype)
    log_t = jnp.log(_dists(seed=13).astype(jnp.float64)).astype(dtype)
    *values, g = jax.jit(_divergences)(log_q, t, log_t, q)
    assert g.dtype == dtype
    # float64: rtol only, tighter than the float64 reference row (none of these values is near 0).
    tolerance = {"rtol": 1e-12} if dtype == jnp.float64 else ref.tol(jnp.float32)
    for value, expected in zip(values, _reference_divergences(log_q, t, log_t, q), strict=True):
        assert value.dtype == (jnp.float64 if dtype == jnp.float64 else jnp.float32)
        np.testing.assert_allclose(value, expected, **tolerance)


def test_argument_errors():
    a = jnp.zeros((2, 3))
    with pytest.raises(TypeError, match="log_predictions"):
        kl(jnp.zeros((2, 3), jnp.int32), a)
    with pytest.raises(TypeError, match="targets"):
        kl(a, jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="targets"):
        kl(a, jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="reduction"):
        jxent.entropy(a, reduction="batchmean")


def test_kl_absent_predictions_exact():
    """0 log 0 = 0 and 0 * (-inf) = 0 without selects: any positive target (even the smallest normal one) on a -inf
    log-prediction gives +inf, a zero target there gives 0; the gradient w.r.t. the log-predictions is -t."""
    log_q = jnp.log(jnp.array([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5], [0.25, 0.25, 0.5]], jnp.float32))
    t = jnp.array([[0.0, 0.5, 0.5], [np.finfo(np.float32).tiny, 0.5, 0.5], [0.0, 0.0, 1.0]], jnp.float32)
    values = jax.jit(kl)(log_q, t)
    np.testing.assert_allclose(np.asarray(values)[[0, 2]], [0.0, np.log(2.0)], rtol=1e-6, atol=1e-7)
    assert values[1] == np.inf
    grad = jax.jit(jax.grad(lambda lq: kl(lq, t).sum()))(log_q)
    np.testing.assert_array_equal(grad, -t)


@pytest.mark.parametrize("absent", [-np.inf, -200.0])  # a masked class, and one whose probability underflows
def test_gradients_through_softmax_with_zero_probabilities(absent):
    """An entropy bonus or a reverse KL over a masked vocabulary: finite gradients, 0 at the zero-probability class,
    the closed forms elsewhere (``xlogy``'s own derivative would give 0/0 = NaN there)."""
    z = np.array([[2.0, 0.5, absent, -1.0], [0.3, absent, 1.2, 0.0]])
    log_q = np.log(np.tile([0.4, 0.3, 0.2, 0.1], (2, 1)))
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    log_p = np.log(np.where(p > 0, p, 1.0))
    h = -np.sum(p * log_p, axis=-1, keepdims=True)
    d = np.sum(p * (log_p - log_q), axis=-1, keepdims=True)
    expected = {
        "entropy": -p * (log_p + h),  # d H(softmax z) / dz
        "kl": p * (log_p - log_q - d),  # d KL(softmax z || q) / dz
    }
    x = jnp.asarray(z, jnp.float32)
    grads = jax.jit(
        lambda x: {
            "entropy": jax.grad(lambda x: jnp.sum(jxent.entropy(jax.nn.softmax(x))))(x),
            "kl": jax.grad(lambda x: jnp.sum(kl(jnp.asarray(log_q, jnp.float32), jax.nn.softmax(x))))(x),
            "kl_where": jax.grad(
                lambda x: jnp.sum(kl(jnp.asarray(log_q, jnp.float32), jax.nn.softmax(x), where=x > -1.5))
            )(x),
            "js": jax.grad(lambda x: jnp.sum(jxent.js_divergence(jax.nn.softmax(x), jax.nn.softmax(2.0 * x))))(x),
        }
    )(x)
    np.testing.assert_allclose(grads["entropy"], expected["entropy"], **ref.tol(jnp.float32))
    np.testing.assert_allclose(grads["kl"], expected["kl"], **ref.tol(jnp.float32))
    for name, g in grads.items():
        assert np.all(np.isfinite(g)), name
        assert np.all(np.asarray(g)[np.asarray(p) == 0] == 0), name
    # JS on the full vocabulary equals JS on the vocabulary without the zero-probability class.
    keep = np.isfinite(z) & (p > 0)
    for row in range(2):
        x_row = jnp.asarray(z[row][keep[row]], jnp.float32)
        g_row = jax.grad(lambda x: jxent.js_divergence(jax.nn.softmax(x), jax.nn.softmax(2.0 * x)))(x_row)
        np.testing.assert_allclose(np.asarray(grads["js"])[row][keep[row]], g_row, rtol=1e-5, atol=1e-7)


def test_entropy_derivative_at_zero_is_finite_and_exact_elsewhere():
    p = jnp.array([0.5, 0.5, 0.0])
    g = jax.grad(lambda p: jnp.sum(jxent.entropy(p)))(p)
    np.testing.assert_allclose(g[:2], -(np.log(0.5) + 1.0), rtol=1e-6)
    np.testing.assert_allclose(g[2], -(np.log(np.finfo(np.float32).tiny) + 1.0), rtol=1e-6)  # slope at tiny


@pytest.mark.parametrize("masked", [False, True])
def test_generalized_kl_matches_optax_and_scipy(masked):
    rng = np.random.default_rng(21)
    t = jnp.asarray(rng.gamma(0.7, size=(5, 4)) * np.where(rng.random((5, 4)) < 0.25, 0.0, 1.0), jnp.float32)
    log_q = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)  # unnormalised
    where = jnp.asarray(rng.random((5, 4)) < 0.7) if masked else None
    out = jax.jit(lambda a, b, w: jxent.generalized_kl_divergence(a, b, where=w))(log_q, t, where)
    theirs = optax.losses.generalized_kl_divergence(log_q, t, where=where)
    np.testing.assert_allclose(out, theirs, **optax_tolerance())
    keep = np.ones((5, 4), bool) if where is None else np.asarray(where)
    expected = np.sum(np.where(keep, special_kl_div(t, jnp.exp(log_q)), 0.0), axis=-1)
    np.testing.assert_allclose(out, expected, **ref.tol(jnp.float32))
    np.testing.assert_allclose(jxent.convex_kl_divergence(log_q, t, where=where), out, rtol=1e-6)
    grad = jax.grad(lambda a: jnp.sum(jxent.generalized_kl_divergence(a, t, where=where)))(log_q)
    np.testing.assert_allclose(grad, np.where(keep, np.exp(log_q) - t, 0.0), **ref.tol(jnp.float32))  # q - t


def test_safe_softmax_cross_entropy_is_the_softmax_cross_entropy():
    logits = jnp.array([[1.0, -jnp.inf, 0.5], [2.0, 0.0, -jnp.inf]])
    labels = jnp.array([[0.7, 0.0, 0.3], [0.0, 1.0, 0.0]])
    out = jxent.safe_softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(out, optax.losses.safe_softmax_cross_entropy(logits, labels), rtol=1e-6)
    np.testing.assert_array_equal(out, jxent.softmax_cross_entropy(logits, labels))
    # The arguments of jxent's softmax_cross_entropy (optax's safe variant takes only the two arrays), so that
    # mypy checks every option.
    assert inspect.signature(jxent.safe_softmax_cross_entropy) == inspect.signature(jxent.softmax_cross_entropy)
    where = jnp.array([True, False])
    np.testing.assert_array_equal(
        jxent.safe_softmax_cross_entropy(logits.T, labels.T, 0, where, reduction="sum"),
        jxent.softmax_cross_entropy(logits.T, labels.T, 0, where, reduction="sum"),
    )


def test_js_hessian_with_tiny_probabilities():
    """JS's ``x log m`` terms keep finite second derivatives where ``m**2`` underflows (``m < 1e-19`` in float32):
    the Hessian through a softmax with a logit 60 below the others equals the float64 one."""
    z = np.array([2.0, 0.5, -60.0, -1.0])

    def js(z):
        return jxent.js_divergence(jax.nn.softmax(z), jax.nn.softmax(2.0 * z))

    def plain_js(z):  # the textbook formula, in float64 (no probability here is 0 or has an underflowing square)
        p, q = jax.nn.softmax(z), jax.nn.softmax(2.0 * z)
        m = 0.5 * (p + q)
        return 0.5 * jnp.sum(p * jnp.log(p / m) + q * jnp.log(q / m))

    got = jax.jit(jax.hessian(js))(jnp.asarray(z, jnp.float32))
    with jax.enable_x64(True):
        expected = np.asarray(jax.hessian(plain_js)(jnp.asarray(z, jnp.float64)))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-9)
