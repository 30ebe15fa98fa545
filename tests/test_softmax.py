"""logsumexp, log_softmax, softmax and soft_cap against SciPy float64 references and jax.nn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jxent
from tests import reference as ref

_ALL_AXES = [((7,), -1), ((3, 7), -1), ((3, 7), 0), ((2, 3, 4), 1), ((2, 3, 4), (0, 2)), ((2, 3, 4), None)]
# float32 on every layout; the 16-bit dtypes on two (they share the float32 kernel).
CASES = [(s, a, jnp.float32) for s, a in _ALL_AXES] + [
    (s, a, d) for d in (jnp.bfloat16, jnp.float16) for s, a in [((3, 7), -1), ((2, 3, 4), (0, 2))]
]


# Jitted entry points: one compilation per shape instead of one per primitive (the un-jitted path runs in
# test_transforms.py's chex variants).
logsumexp = jax.jit(jxent.logsumexp, static_argnames=("axis", "keepdims"))
softmax = jax.jit(jxent.softmax, static_argnames=("axis",))
log_softmax = jax.jit(jxent.log_softmax, static_argnames=("axis",))


def _logits(shape, dtype=jnp.float32, seed=0, scale=3.0):
    x = np.random.default_rng(seed).normal(size=shape) * scale
    return jnp.asarray(x, dtype)


@pytest.mark.parametrize(("shape", "axis", "dtype"), CASES)
def test_logsumexp_matches_scipy(shape, axis, dtype):
    x = _logits(shape, dtype)
    out = logsumexp(x, axis=axis)
    assert out.dtype == dtype
    np.testing.assert_allclose(ref.f64(out), ref.logsumexp(x, axis=axis), **ref.tol(dtype))


@pytest.mark.parametrize(("shape", "axis", "dtype"), CASES)
def test_softmax_and_log_softmax_match_scipy(shape, axis, dtype):
    x = _logits(shape, dtype, seed=1)
    p = softmax(x, axis=axis)
    log_p = log_softmax(x, axis=axis)
    assert p.dtype == log_p.dtype == dtype
    assert p.shape == log_p.shape == shape
    np.testing.assert_allclose(ref.f64(p), ref.softmax(x, axis=axis), **ref.tol(dtype))
    np.testing.assert_allclose(ref.f64(log_p), ref.log_softmax(x, axis=axis), **ref.tol(dtype))


def test_float64_under_x64(x64):
    x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 6)) * 5, jnp.float64)
    assert logsumexp(x).dtype == jnp.float64
    np.testing.assert_allclose(logsumexp(x, axis=0), ref.logsumexp(x, axis=0), rtol=1e-13)
    np.testing.assert_allclose(softmax(x), ref.softmax(x), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(log_softmax(x, axis=(0, 1)), ref.log_softmax(x, axis=(0, 1)), rtol=1e-13)


@pytest.mark.parametrize(("shape", "axis"), [((3, 7), -1), ((3, 7), 0), ((2, 3, 4), (1, 2)), ((2, 3, 4), (2, 1))])
def test_matches_jax_nn_on_finite_inputs(shape, axis):
    x = _logits(shape, seed=3, scale=10.0)
    kw = {"rtol": 1e-6, "atol": 1e-6}
    np.testing.assert_allclose(logsumexp(x, axis=axis), jax.nn.logsumexp(x, axis=axis), **kw)
    np.testing.assert_allclose(log_softmax(x, axis=axis), jax.nn.log_softmax(x, axis=axis), **kw)
    np.testing.assert_allclose(softmax(x, axis=axis), jax.nn.softmax(x, axis=axis), **kw)


def test_keepdims():
    x = _logits((2, 3, 4))
    out = logsumexp(x, axis=(0, 2), keepdims=True)
    assert out.shape == (1, 3, 1)
    np.testing.assert_allclose(out[0, :, 0], ref.logsumexp(x, axis=(0, 2)), rtol=2e-6)


@pytest.mark.parametrize("mask_shape", ["batch", "full"])
def test_where_leaves_entries_out(mask_shape):
    x = _logits((4, 5), seed=4)
    rng = np.random.default_rng(5)
    if mask_shape == "batch":
        where = np.array([True, False, True, True])
    else:
        where = rng.random((4, 5)) < 0.6
        where[:, 0] = True
        where[2] = False  # a row with no entry at all
    full = ref.batch_mask_to_full(where, x.shape, -1)
    lse = logsumexp(x, where=where)
    np.testing.assert_allclose(lse, ref.logsumexp(x, where=where), rtol=2e-6)
    p = softmax(x, where=where)
    np.testing.assert_allclose(p, ref.softmax_masked(x, where), rtol=2e-6, atol=1e-7)
    log_p = log_softmax(x, where=where)
    assert np.all(np.asarray(log_p)[~full] == -np.inf)
    np.testing.assert_allclose(
        np.asarray(log_p)[full], (ref.f64(x) - ref.logsumexp(x, where=where)[:, None])[full], rtol=2e-6, atol=1e-6
    )
    np.testing.assert_allclose(jax.nn.logsumexp(x, axis=-1, where=full), lse, rtol=1e-6)


def test_logsumexp_gradient_is_softmax():
    x = _logits((3, 6), seed=6)
    g = jax.jit(jax.grad(lambda x: jnp.sum(jnp.arange(3.0) * jxent.logsumexp(x))))(x)
    np.testing.assert_allclose(g, np.arange(3.0)[:, None] * ref.softmax(x), rtol=1e-5, atol=1e-7)


def test_softmax_and_log_softmax_jacobians_closed_form():
    x = _logits((5,), seed=7)
    p = ref.softmax(x)
    np.testing.assert_allclose(
        jax.jit(jax.jacobian(jxent.softmax))(x), np.diag(p) - np.outer(p, p), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        jax.jit(jax.jacobian(jxent.log_softmax))(x), np.eye(5) - p[None, :], rtol=1e-5, atol=1e-7
    )


def test_neg_inf_entries_are_absent_classes():
    x = jnp.array([0.5, -jnp.inf, 1.5, -jnp.inf])
    finite = np.array([0.5, 1.5])
    present = np.array([True, False, True, False])
    p = ref.softmax(finite)
    np.testing.assert_allclose(logsumexp(x), ref.logsumexp(finite), rtol=1e-6)
    np.testing.assert_allclose(softmax(x), [p[0], 0, p[1], 0], rtol=1e-6)
    assert log_softmax(x)[1] == -np.inf
    g, jac_p, jac_log_p = jax.jit(
        lambda x: (jax.grad(jxent.logsumexp)(x), jax.jacobian(jxent.softmax)(x), jax.jacobian(jxent.log_softmax)(x))
    )(x)
    full_p = np.array([p[0], 0, p[1], 0])
    np.testing.assert_allclose(g, full_p, rtol=1e-6)
    # Jacobians: the closed forms on the present entries, zero rows and columns at the absent (-inf) entries.
    expected_jac_p = np.diag(full_p) - np.outer(full_p, full_p)
    expected_jac_log_p = np.where(present[:, None], np.eye(4) - full_p[None, :], 0.0)
    np.testing.assert_allclose(jac_p, expected_jac_p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jac_log_p, expected_jac_log_p, rtol=1e-6, atol=1e-7)


def test_row_without_any_present_entry():
    x = jnp.full((1, 3), -jnp.inf)
    assert logsumexp(x)[0] == -np.inf
    np.testing.assert_array_equal(softmax(x), np.zeros((1, 3)))
    np.testing.assert_array_equal(log_softmax(x), np.full((1, 3), -np.inf))
    # Zero derivatives (jax.nn gives NaN).
    jacs = jax.jit(lambda x: [jax.jacobian(f)(x) for f in (jxent.logsumexp, jxent.softmax, jxent.log_softmax)])(x)
    np.testing.assert_array_equal(jacs[0], np.zeros((1, 1, 3)))
    np.testing.assert_array_equal(jacs[1], np.zeros((1, 3, 1, 3)))
    np.testing.assert_array_equal(jacs[2], np.zeros((1, 3, 1, 3)))


def test_pos_inf_gives_the_limit():
    x = jnp.array([[jnp.inf, 0.0, jnp.inf, -jnp.inf]])
    assert logsumexp(x)[0] == np.inf
    np.testing.assert_array_equal(softmax(x), [[0.5, 0.0, 0.5, 0.0]])
    np.testing.assert_allclose(log_softmax(x), [[np.log(0.5), -np.inf, np.log(0.5), -np.inf]], rtol=1e-6)
    assert np.all(np.isnan(jax.nn.softmax(x)))  # what jxent improves on


def test_nan_propagates_to_its_row_only():
    x = jnp.array([[0.0, jnp.nan, 1.0], [0.0, 1.0, 2.0]])
    assert np.isnan(logsumexp(x)[0]) and np.isfinite(logsumexp(x)[1])
    assert np.all(np.isnan(softmax(x)[0])) and np.all(np.isfinite(softmax(x)[1]))


def test_large_finite_logits():
    x = jnp.array([[1e30, 0.0, -1e30]])
    np.testing.assert_array_equal(logsumexp(x), np.float32([1e30]))
    np.testing.assert_array_equal(softmax(x), [[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(log_softmax(x), [[0.0, -1e30, -2e30]], rtol=1e-6)


def test_soft_cap_values_and_derivative():
    cap = 5.0
    z = jnp.array([-jnp.inf, -30.0, -2.0, 0.0, 3.0, 30.0, jnp.inf])
    out = jax.jit(jxent.soft_cap)(z, cap)
    expected = ref.soft_cap(np.asarray(z), cap)
    expected[0] = -np.inf
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    g = jax.jit(jax.vmap(jax.grad(lambda t: jxent.soft_cap(t, cap))))(z)
    np.testing.assert_allclose(g[1:-1], 1 - np.tanh(np.asarray(z[1:-1], np.float64) / cap) ** 2, **ref.tol(jnp.float32))
    assert g[0] == 0 and g[-1] == 0
    assert jxent.soft_cap(jnp.ones(2, jnp.bfloat16), cap).dtype == jnp.bfloat16


def test_soft_cap_computes_bfloat16_in_float32():
    # Rounding tanh's input and output to bfloat16 would be off by up to 0.125 near 30; float32 compute leaves only
    # the final rounding of the result (half a bfloat16 ulp, 0.0625 at 30).
    z = jnp.linspace(20.0, 60.0, 41).astype(jnp.bfloat16)
    out = jax.jit(jxent.soft_cap)(z, 30.0)
    exact = 30.0 * np.tanh(np.asarray(z, np.float64) / 30.0)
    expected = np.asarray(jnp.asarray(exact, jnp.float32).astype(jnp.bfloat16), np.float64)
    np.testing.assert_array_equal(np.asarray(out, np.float64), expected)


@pytest.mark.parametrize("cap", [0.0, -1.0])
def test_soft_cap_rejects_non_positive_cap(cap):
    with pytest.raises(ValueError, match="soft_cap"):
        jxent.soft_cap(jnp.ones(3), cap)


@pytest.mark.parametrize("fn", [jxent.logsumexp, jxent.softmax, jxent.log_softmax])
def test_argument_errors(fn):
    with pytest.raises(TypeError, match="`x`"):
        fn(jnp.arange(3))
    with pytest.raises(ValueError, match="axis"):
        fn(jnp.ones((2, 3)), axis=2)
    with pytest.raises(ValueError, match="axis"):
        fn(jnp.ones((2, 3)), axis=(1, -1))
    with pytest.raises(TypeError, match="where"):
        fn(jnp.ones((2, 3)), where=jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="where"):
        fn(jnp.ones((2, 3)), where=jnp.ones((3,), bool))
