"""Transformations of every public loss: chex variants (jit / no jit / device / no device), one trace per shape,
vmap, and ``jax.test_util.check_grads`` to order 2 in forward and reverse mode under float64.

The closed-form gradients are checked module by module (test_cross_entropy.py, test_focal.py, ...); the numerical
``check_grads`` of all of them lives here, in one test, so that the float64 operations they share are compiled once
per test process rather than once per module.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads

import jxent
from tests import reference as ref

_RNG = np.random.default_rng(0)
Z = np.float32(_RNG.normal(size=(3, 4)) * 2)  # logits
Y = np.int32([1, 3, 0])  # integer labels
T = np.float32(_RNG.dirichlet(np.ones(4), size=3))  # probability labels / targets
B = np.float32(_RNG.random((3, 4)))  # binary (soft) labels
P = np.float32(_RNG.uniform(0.05, 0.95, size=(3, 4)))  # probabilities
LOG_Q = np.float32(ref.log_softmax(Z))

# name -> (function with its options, arguments, float64 reference value)
LOSSES = {
    "softmax_cross_entropy": (
        functools.partial(jxent.softmax_cross_entropy, label_smoothing=0.1),
        (Z, T),
        ref.softmax_cross_entropy(Z, T, label_smoothing=0.1),
    ),
    "softmax_cross_entropy_with_integer_labels": (
        functools.partial(jxent.softmax_cross_entropy_with_integer_labels, z_loss=1e-2, reduction="mean"),
        (Z, Y),
        ref.softmax_cross_entropy(Z, ref.one_hot(Y, 4), z_loss=1e-2).mean(),
    ),
    "sigmoid_binary_cross_entropy": (
        jxent.sigmoid_binary_cross_entropy,
        (Z, B),
        ref.sigmoid_binary_cross_entropy(Z, B),
    ),
    "sigmoid_focal_loss": (
        functools.partial(jxent.sigmoid_focal_loss, alpha=0.25, gamma=2.0),
        (Z, B),
        ref.sigmoid_focal_loss(Z, B, alpha=0.25, gamma=2.0),
    ),
    "softmax_focal_loss": (
        functools.partial(jxent.softmax_focal_loss, gamma=2.0),
        (Z, Y),
        ref.softmax_focal_loss(Z, ref.one_hot(Y, 4), gamma=2.0),
    ),
    "binary_cross_entropy": (jxent.binary_cross_entropy, (P, B), ref.binary_cross_entropy(P, B)),
    "categorical_cross_entropy": (
        jxent.categorical_cross_entropy,
        (P, Y),
        ref.categorical_cross_entropy(P, ref.one_hot(Y, 4)),
    ),
    "poly_loss_cross_entropy": (jxent.poly_loss_cross_entropy, (Z, T), ref.poly_loss_cross_entropy(Z, T)),
    "generalized_cross_entropy": (
        jxent.generalized_cross_entropy,
        (Z, Y),
        ref.generalized_cross_entropy(Z, ref.one_hot(Y, 4)),
    ),
    "kl_divergence": (jxent.kl_divergence, (LOG_Q, T), ref.kl_divergence(LOG_Q, T)),
    "kl_divergence_with_log_targets": (
        jxent.kl_divergence_with_log_targets,
        (LOG_Q, np.log(T)),
        ref.kl_divergence(LOG_Q, T),
    ),
    "generalized_kl_divergence": (
        jxent.generalized_kl_divergence,
        (LOG_Q - 0.3, T),
        ref.generalized_kl_divergence(LOG_Q - 0.3, T),
    ),
    "entropy": (jxent.entropy, (T,), ref.entropy(T)),
    "js_divergence": (
        jxent.js_divergence,
        (T, P / P.sum(-1, keepdims=True)),
        ref.js_divergence(T, P / P.sum(-1, keepdims=True)),
    ),
    "logsumexp": (jxent.logsumexp, (Z,), ref.logsumexp(Z)),
}


class VariantsTest(chex.TestCase):
    """Each public loss gives the reference value jitted, un-jitted, on device arrays and on NumPy arrays."""

    @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
    @parameterized.named_parameters(*((name, name) for name in LOSSES))
    def test_loss(self, name):
        fn, args, expected = LOSSES[name]
        out = self.variant(fn)(*args)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(out, expected, **ref.tol(jnp.float32))


def test_variants_were_generated():
    """chex.variants must expand into 4 tests per loss that pytest collects (not one silently skipped test)."""
    names = [n for n in dir(VariantsTest) if n.startswith("test_loss")]
    assert len(names) == 4 * len(LOSSES), names
    for suffix in ("with_jit", "without_jit", "with_device", "without_device"):
        assert sum(n.endswith("_" + suffix) for n in names) == len(LOSSES), suffix


# ----------------------------------------------------------------------------------------------------------------
# One trace per shape
# ----------------------------------------------------------------------------------------------------------------

TRACED = {
    "softmax_cross_entropy_with_integer_labels": lambda z, y: jxent.softmax_cross_entropy_with_integer_labels(
        z, y, label_smoothing=0.1, reduction="mean"
    ),
    "softmax_cross_entropy": lambda z, y: jxent.softmax_cross_entropy(z, jax.nn.one_hot(y, z.shape[-1])),
    "sigmoid_focal_loss": lambda z, y: jxent.sigmoid_focal_loss(z, jax.nn.one_hot(y, z.shape[-1]), gamma=0.5),
    "softmax_focal_loss": lambda z, y: jxent.softmax_focal_loss(z, y, ignore_index=-100),
    "kl_divergence": lambda z, y: jxent.kl_divergence(jxent.log_softmax(z), jax.nn.one_hot(y, z.shape[-1])),
}


@pytest.mark.parametrize("name", list(TRACED))
def test_one_trace_per_shape(name):
    chex.clear_trace_counter()
    loss = TRACED[name]

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(z, y):
        return jax.value_and_grad(lambda z: jnp.sum(loss(z, y)))(z)

    step(jnp.asarray(Z), jnp.asarray(Y))
    step(jnp.asarray(Z) + 1.0, jnp.asarray([0, 0, 2]))  # new values, same shapes: no retrace
    with pytest.raises(AssertionError, match="traced"):
        step(jnp.zeros((5, 4)), jnp.zeros((5,), jnp.int32))  # a new shape retraces, beyond n=1


def test_a_new_shape_is_one_more_trace():
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=2)
    def step(z, y):
        return jxent.softmax_cross_entropy_with_integer_labels(z, y)

    for _ in range(2):
        step(jnp.asarray(Z), jnp.asarray(Y))
        step(jnp.zeros((5, 4)), jnp.zeros((5,), jnp.int32))  # two shapes, two traces, however many calls


# ----------------------------------------------------------------------------------------------------------------
# vmap over a batch axis equals the batched call
# ----------------------------------------------------------------------------------------------------------------

GROUPS, ROWS, CLASSES = 2, 3, 4
_Z3 = jnp.asarray(_RNG.normal(size=(GROUPS, ROWS, CLASSES)) * 2, jnp.float32)
_Y3 = jnp.asarray(_RNG.integers(0, CLASSES, size=(GROUPS, ROWS)))
_T3 = jnp.asarray(_RNG.dirichlet(np.ones(CLASSES), size=(GROUPS, ROWS)), jnp.float32)
_B3 = jnp.asarray(_RNG.random((GROUPS, ROWS, CLASSES)), jnp.float32)

VMAPPED = {
    "ce_int": (lambda z, y, t, b: jxent.softmax_cross_entropy_with_integer_labels(z, y, label_smoothing=0.1)),
    "ce": (lambda z, y, t, b: jxent.softmax_cross_entropy(z, t, z_loss=1e-2)),
    "sigmoid_bce": (lambda z, y, t, b: jxent.sigmoid_binary_cross_entropy(z, b)),
    "sigmoid_focal": (lambda z, y, t, b: jxent.sigmoid_focal_loss(z, b, alpha=0.25)),
    "softmax_focal": (lambda z, y, t, b: jxent.softmax_focal_loss(z, y)),
    "poly": (lambda z, y, t, b: jxent.poly_loss_cross_entropy(z, t)),
    "gce": (lambda z, y, t, b: jxent.generalized_cross_entropy(z, y)),
    "kl": (lambda z, y, t, b: jxent.kl_divergence(jxent.log_softmax(z), t)),
    "cce": (lambda z, y, t, b: jxent.categorical_cross_entropy(jxent.softmax(z), y)),
    "bce_probs": (lambda z, y, t, b: jxent.binary_cross_entropy(jax.nn.sigmoid(z), b)),
}


def test_vmap_equals_the_batched_call():
    @jax.jit
    def both(z, y, t, b):
        vmapped = {k: jax.vmap(f)(z, y, t, b) for k, f in VMAPPED.items()}
        batched = {k: f(z, y, t, b) for k, f in VMAPPED.items()}
        # vmap over the second axis (in_axes=1) too, with the output batch axis put back in the same place.
        vmapped_1 = {k: jax.vmap(VMAPPED[k], in_axes=1, out_axes=1)(z, y, t, b) for k in ("ce_int", "softmax_focal")}
        return vmapped, batched, vmapped_1

    vmapped, batched, vmapped_1 = both(_Z3, _Y3, _T3, _B3)
    for key in VMAPPED:
        np.testing.assert_allclose(vmapped[key], batched[key], rtol=1e-6, atol=1e-7, err_msg=key)
    for key in vmapped_1:
        np.testing.assert_allclose(vmapped_1[key], batched[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_vmap_of_a_reduced_loss_and_its_gradient():
    def group_loss(z, y):
        return jxent.softmax_cross_entropy_with_integer_labels(z, y, ignore_index=-100, reduction="mean")

    y = _Y3.at[0, 1].set(-100)
    means, grads = jax.jit(jax.vmap(jax.value_and_grad(group_loss)))(_Z3, y)
    for g in range(GROUPS):
        expected = ref.torch_cross_entropy(_Z3[g], np.asarray(y[g]), ignore_index=-100, reduction="mean")
        np.testing.assert_allclose(means[g], expected, rtol=2e-6)
        counted = np.asarray(y[g]) != -100
        q = ref.one_hot(np.where(counted, y[g], 0), CLASSES) * counted[:, None]
        expected_grad = (ref.softmax(_Z3[g]) * counted[:, None] - q) / counted.sum()
        np.testing.assert_allclose(grads[g], expected_grad, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------------
# check_grads, order 2, forward and reverse mode, float64
# ----------------------------------------------------------------------------------------------------------------


def _grad_cases():
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(3, 4)) * 2)
    t = jnp.asarray(rng.dirichlet(np.ones(4), size=3))
    q = jnp.asarray(rng.dirichlet(np.ones(4), size=3))
    b = jnp.asarray(rng.uniform(0.1, 0.9, size=(3, 4)))
    p = jnp.asarray(rng.uniform(0.1, 0.9, size=(3, 4)))
    y = jnp.array([0, 3, 1])
    w = jnp.asarray(rng.uniform(0.5, 2.0, size=4))
    where = jnp.array([True, False, True])
    ce_int = jxent.softmax_cross_entropy_with_integer_labels
    # name -> (function, arguments it is differentiated in, finite-difference step)
    return {
        "logsumexp/softmax/log_softmax": (
            lambda z: (jxent.logsumexp(z), jxent.softmax(z), jxent.log_softmax(z, axis=(0, 1))),
            (z,),
            None,
        ),
        "softmax_cross_entropy_with_integer_labels (all options)": (
            lambda z: ce_int(z, y, weight=w, label_smoothing=0.1, z_loss=1e-2, soft_cap=5.0, temperature=1.5),
            (z,),
            None,
        ),
        "softmax_cross_entropy (logits and labels)": (
            lambda z, t: jxent.softmax_cross_entropy(z, t, label_smoothing=0.1, where=where, reduction="mean"),
            (z, t),
            None,
        ),
        "sigmoid_binary_cross_entropy (logits, labels, pos_weight)": (
            lambda x, b, pw: jxent.sigmoid_binary_cross_entropy(x, b, pos_weight=pw, label_smoothing=0.1),
            (z, b, jnp.asarray(rng.uniform(0.5, 2, size=4))),
            None,
        ),
        "sigmoid_focal_loss": (lambda x: jxent.sigmoid_focal_loss(x, b, alpha=0.25, gamma=0.5), (z,), None),
        "softmax_focal_loss": (
            lambda z: jxent.softmax_focal_loss(z, y, alpha=jnp.asarray([0.1, 0.2, 0.3, 0.4]), gamma=0.5),
            (z,),
            None,
        ),
        "binary_cross_entropy": (lambda p, b: jxent.binary_cross_entropy(p, b), (p, b), 1e-5),
        "categorical_cross_entropy": (
            lambda p: jxent.categorical_cross_entropy(p, t, label_smoothing=0.1, reduction="sum"),
            (p,),
            1e-5,
        ),
        "poly_loss_cross_entropy": (lambda z: jxent.poly_loss_cross_entropy(z, t, epsilon=2.0), (z,), None),
        "generalized_cross_entropy": (lambda z: jxent.generalized_cross_entropy(z, y, q=0.7), (z,), None),
        "kl_divergence": (lambda lq, t: jxent.kl_divergence(lq, t), (jnp.log(q), t), 1e-5),
        "kl_divergence_with_log_targets": (
            lambda lq, lt: jxent.kl_divergence_with_log_targets(lq, lt),
            (jnp.log(q), jnp.log(t)),
            None,
        ),
        "generalized_kl_divergence": (
            lambda lq, t: jxent.generalized_kl_divergence(lq, t),
            (jnp.log(q) - 0.3, t),
            1e-5,
        ),
        "entropy": (lambda t: jxent.entropy(t), (t,), 1e-5),
        "js_divergence": (lambda t, q: jxent.js_divergence(t, q), (t, q), 1e-5),
    }


def test_check_grads_order_2_every_loss(x64):
    failures = []
    for name, (fn, args, eps) in _grad_cases().items():
        try:
            check_grads(jax.jit(fn), args, order=2, modes=("fwd", "rev"), eps=eps)
        except AssertionError as e:  # report every failing loss, by name
            failures.append(f"{name}: {e}")
    assert not failures, "\n\n".join(failures)


# (name, loss of one hyperparameter value): the README lists these as constants, with no gradient, in every function.
_CONSTANTS = [
    ("ce_int weight", lambda w: jxent.softmax_cross_entropy_with_integer_labels(Z, Y, weight=w * jnp.ones(4))),
    ("ce int labels weight", lambda w: jxent.softmax_cross_entropy(Z, Y, weight=w * jnp.ones(4))),
    ("ce prob labels weight", lambda w: jxent.softmax_cross_entropy(Z, T, weight=w * jnp.ones(4))),
    ("ce label_smoothing", lambda e: jxent.softmax_cross_entropy(Z, T, label_smoothing=e)),
    ("ce_int z_loss", lambda c: jxent.softmax_cross_entropy_with_integer_labels(Z, Y, z_loss=c)),
    ("ce_int soft_cap", lambda c: jxent.softmax_cross_entropy_with_integer_labels(Z, Y, soft_cap=c)),
    ("ce temperature", lambda t: jxent.softmax_cross_entropy(Z, T, temperature=t)),
    ("sigmoid focal gamma", lambda g: jxent.sigmoid_focal_loss(Z, B, gamma=g)),
    ("softmax focal gamma", lambda g: jxent.softmax_focal_loss(Z, Y, gamma=g)),
    ("softmax focal alpha", lambda a: jxent.softmax_focal_loss(Z, Y, alpha=a * jnp.ones(4))),
    ("gce q", lambda q: jxent.generalized_cross_entropy(Z, Y, q=q)),
    ("poly epsilon", lambda e: jxent.poly_loss_cross_entropy(Z, T, epsilon=e)),
    (
        "fused class_weight",
        lambda w: jxent.linear_softmax_cross_entropy(Z, jnp.eye(4), Y, class_weight=w * jnp.ones(4)),
    ),
]


@pytest.mark.parametrize(("name", "loss"), _CONSTANTS, ids=[c[0] for c in _CONSTANTS])
def test_hyperparameters_are_constants(name, loss):
    value, grad = jax.value_and_grad(lambda h: jnp.sum(loss(h)))(jnp.float32(0.5))
    assert np.isfinite(value), name
    assert grad == 0.0, name
