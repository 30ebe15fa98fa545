"""Derivative rules and fusion of the sigmoid losses (sigmoid_binary_cross_entropy, sigmoid_focal_loss).

The loss and its gradient come from fast select-free / isolated formulas (jxent/binary.py); every higher
derivative comes from a reference formula through a custom_jvp. These tests pin what that must keep: exact
Hessians at x = 0 (where d|x|/dx = 0 would break a formula built from exp(-|x|)), forward mode, finite (not NaN)
derivatives at x = ±inf, and the gradient itself at the extremes. The last test checks the speed property the
fast formulas exist for: under value_and_grad(mean(loss)) on CPU, no more logits-sized passes than a plain
closed-form BCE.
"""

import importlib.util
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jxent
from tests import reference as ref

bce = jxent.sigmoid_binary_cross_entropy
sfl = jxent.sigmoid_focal_loss
INF = np.inf


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _focal_d2_at_0(y, gamma):
    """d^2/dx^2 of (1 - p_t)^g BCE at x = 0, for hard labels, by a float64 central difference of the reference."""
    h = 1e-4
    f = lambda x: float(ref.sigmoid_focal_loss(np.array([x]), np.array([y]), gamma=gamma)[0])
    return (f(h) - 2 * f(0.0) + f(-h)) / h**2


@pytest.mark.parametrize("y", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("pos_weight", [None, 2.5])
def test_bce_hessian_at_zero_reverse_and_forward(y, pos_weight):
    w_pos = y * (1.0 if pos_weight is None else pos_weight)
    expected = (1 - y + w_pos) * 0.25  # (w_neg + w_pos) sigmoid(0) sigmoid(-0)
    fn = lambda x: bce(x, jnp.float32(y), pos_weight=None if pos_weight is None else jnp.float32(pos_weight))
    x0 = jnp.float32(0.0)
    hess = jax.jit(jax.hessian(fn))(x0)
    fwd = jax.jit(jax.jacfwd(jax.jacfwd(fn)))(x0)
    fwd_rev = jax.jit(jax.jacfwd(jax.grad(fn)))(x0)
    np.testing.assert_allclose([hess, fwd, fwd_rev], [expected] * 3, rtol=1e-6)
    # Also the first derivative, forward and reverse.
    np.testing.assert_allclose(
        [jax.grad(fn)(x0), jax.jacfwd(fn)(x0)], [0.5 * (1 - y) - 0.5 * w_pos] * 2, rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("gamma", [0.5, 2.0, 1.5])
@pytest.mark.parametrize("y", [0.0, 1.0])
def test_focal_hessian_at_zero(gamma, y):
    fn = lambda x: sfl(x, jnp.float32(y), gamma=gamma)
    x0 = jnp.float32(0.0)
    expected = _focal_d2_at_0(y, gamma)
    hess = jax.jit(jax.hessian(fn))(x0)
    fwd = jax.jit(jax.jacfwd(jax.jacfwd(fn)))(x0)
    np.testing.assert_allclose([hess, fwd], [expected] * 2, rtol=1e-4)


def test_second_derivatives_finite_at_infinity():
    x = jnp.array([INF, -INF, INF, -INF], jnp.float32)
    y = jnp.array([1.0, 0.0, 0.0, 1.0], jnp.float32)  # right, right, wrong, wrong
    for name, fn in {
        "bce": lambda x: bce(x, y),
        "bce pos_weight": lambda x: bce(x, y, pos_weight=jnp.float32(2.0)),
        "focal gamma=2": lambda x: sfl(x, y, gamma=2.0, alpha=0.25),
        "focal gamma=0.5": lambda x: sfl(x, y, gamma=0.5),
    }.items():
        total = lambda x, fn=fn: jnp.sum(fn(x))
        grad, hess, fwd = jax.jit(lambda x, t=total: (jax.grad(t)(x), jax.hessian(t)(x), jax.jacfwd(jax.grad(t))(x)))(x)
        assert np.all(np.isfinite(grad)), name
        assert np.all(np.isfinite(hess)) and np.all(np.isfinite(fwd)), name
        np.testing.assert_allclose(np.diag(hess), 0.0, atol=1e-6, err_msg=name)


def test_values_and_gradients_at_the_extremes():
    """Limits at ±inf, huge finite logits and NaN: loss, gradient and their dtypes, for both losses."""
    x = jnp.array([INF, -INF, INF, -INF, 3e38, -3e38, 40.0, -40.0, np.nan], jnp.float32)
    y = jnp.array([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0], jnp.float32)
    loss, grad = jax.jit(lambda x: (bce(x, y), jax.grad(lambda x: jnp.sum(bce(x, y)))(x)))(x)
    big = np.float32(3e38)
    np.testing.assert_array_equal(loss[:6], [0.0, 0.0, INF, INF, big, big])
    assert not np.signbit(loss[0]) and not np.signbit(loss[1])  # +0
    np.testing.assert_allclose(loss[6:8], np.exp(-40.0), rtol=1e-6)
    np.testing.assert_array_equal(grad[:6], [0.0, 0.0, 1.0, -1.0, 1.0, -1.0])
    # The gradient keeps its relative accuracy where it is tiny (sigmoid(x) - y = -sigmoid(-40) for y = 1).
    np.testing.assert_allclose(grad[6:8], [-_sigmoid(-40.0), _sigmoid(-40.0)], rtol=1e-6)
    assert np.isnan(loss[8]) and np.isnan(grad[8])
    # Soft labels at ±inf: +inf where any weight is on the wrong side.
    soft = jax.jit(bce)(jnp.array([INF, -INF]), jnp.array([0.999, 1e-30]))
    np.testing.assert_array_equal(soft, [INF, INF])

    floss, fgrad = jax.jit(lambda x: (sfl(x, y), jax.grad(lambda x: jnp.sum(sfl(x, y)))(x)))(x)
    np.testing.assert_array_equal(floss[:6], [0.0, 0.0, INF, INF, big, big])
    np.testing.assert_array_equal(fgrad[:6], [0.0, 0.0, 1.0, -1.0, 1.0, -1.0])
    assert np.isnan(floss[8]) and np.isnan(fgrad[8])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_16_bit_inputs_and_labels(dtype):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(6, 7)) * 4, dtype)
    y = jnp.asarray(rng.random((6, 7)), dtype)
    for name, fn, expected in [
        ("bce", bce, ref.sigmoid_binary_cross_entropy(x, y)),
        ("focal", lambda x, y: sfl(x, y, alpha=0.25, gamma=1.5), ref.sigmoid_focal_loss(x, y, alpha=0.25, gamma=1.5)),
    ]:
        loss, grad = jax.jit(lambda x, fn=fn: (fn(x, y), jax.grad(lambda x: jnp.sum(fn(x, y)))(x)))(x)
        assert loss.dtype == jnp.float32 and grad.dtype == dtype, name
        np.testing.assert_allclose(loss, expected, **ref.tol(jnp.float32), err_msg=name)
        g32 = jax.grad(lambda x, fn=fn: jnp.sum(fn(x, y.astype(jnp.float32))))(x.astype(jnp.float32))
        np.testing.assert_allclose(ref.f64(grad), ref.f64(g32), **ref.tol(dtype), err_msg=name)


def _hlo_passes_module():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("_bench_losses", os.path.join(root, "benchmarks", "bench_losses.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="pass counts of the XLA:CPU pipeline")
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_value_and_grad_reads_logits_as_few_times_as_plain_bce(dtype):
    """mean(loss) + its gradient: at most the logits-sized passes of a plain closed-form BCE (4 reads, 1 write in
    float32): the loss fuses into the reduction and the gradient is one elementwise pass."""
    bench = _hlo_passes_module()
    n, v = 64, 1024
    x = jax.ShapeDtypeStruct((n, v), dtype)

    def passes(fn):
        f = jax.jit(jax.value_and_grad(lambda x, y: jnp.mean(fn(x, y))))
        return bench.hlo_passes(f.lower(x, x).compile().as_text(), n, v)[:2]

    plain = passes(bench.bce_closed_form)
    for name, fn in {
        "bce": bce,
        "focal": lambda x, y: sfl(x, y, alpha=0.25),
        "focal gamma=0.5": lambda x, y: sfl(x, y, gamma=0.5),
    }.items():
        reads, writes = passes(fn)
        assert reads <= plain[0] and writes <= plain[1], (name, (reads, writes), plain)


@pytest.mark.parametrize("loss", [bce, lambda x, y: sfl(x, y, gamma=0.0)], ids=["bce", "focal_gamma0"])
@pytest.mark.parametrize("label_shape", [(), (4,)])
def test_broadcast_16bit_label_gradient_is_summed_in_float32(loss, label_shape):
    """d/dy sum(BCE(x, y)) = -sum(x) over the broadcast axes; summing in bfloat16 would lose about 1%."""
    x = jnp.asarray(np.linspace(-3.0, 3.0, 4096 * 4).reshape(4096, 4) + 0.37, jnp.float32)
    y = jnp.full(label_shape, 0.3, jnp.bfloat16)
    grad = jax.grad(lambda y: jnp.sum(loss(x, y)))(y)
    assert grad.dtype == jnp.bfloat16
    expected = -np.asarray(x, np.float64).reshape(4096, 4).sum(axis=0 if label_shape else None)
    np.testing.assert_allclose(np.asarray(grad, np.float64), expected, rtol=4e-3)
