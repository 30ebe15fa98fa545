"""Loss objects in jxent.losses: same numbers as the functions, usable in a jitted step, hashable."""

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jxent
from jxent import losses

RNG = np.random.default_rng(0)
LOGITS = jnp.asarray(RNG.normal(size=(6, 4)) * 2, jnp.float32)
INT_LABELS = jnp.asarray(RNG.integers(0, 4, size=6))
PROBS = jnp.asarray(RNG.dirichlet(np.ones(4), size=6), jnp.float32)
BINARY = jnp.asarray(RNG.random((6, 4)), jnp.float32)

# (object, function, predictions, labels, options): the object is built from the options, and must equal the
# function called with the same options.
CASES = [
    (
        losses.CrossEntropy,
        jxent.softmax_cross_entropy,
        LOGITS,
        INT_LABELS,
        {"label_smoothing": 0.1, "z_loss": 1e-3, "soft_cap": 5.0, "temperature": 0.9, "reduction": "mean"},
    ),
    (losses.CrossEntropy, jxent.softmax_cross_entropy, LOGITS, PROBS, {"reduction": "sum"}),
    (losses.CrossEntropy, jxent.softmax_cross_entropy, LOGITS, INT_LABELS, {"ignore_index": 2, "reduction": "none"}),
    (
        losses.SigmoidBinaryCrossEntropy,
        jxent.sigmoid_binary_cross_entropy,
        LOGITS,
        BINARY,
        {"label_smoothing": 0.1, "reduction": "mean"},
    ),
    (losses.BinaryCrossEntropy, jxent.binary_cross_entropy, jax.nn.sigmoid(LOGITS), BINARY, {"reduction": "sum"}),
    (
        losses.CategoricalCrossEntropy,
        jxent.categorical_cross_entropy,
        PROBS,
        INT_LABELS,
        {"label_smoothing": 0.2, "reduction": "mean"},
    ),
    (losses.SigmoidFocalLoss, jxent.sigmoid_focal_loss, LOGITS, BINARY, {"alpha": 0.25, "gamma": 0.5}),
    (losses.SoftmaxFocalLoss, jxent.softmax_focal_loss, LOGITS, INT_LABELS, {"gamma": 2.0, "reduction": "sum"}),
    (losses.PolyLoss, jxent.poly_loss_cross_entropy, LOGITS, PROBS, {"epsilon": -1.0}),
    (losses.GeneralizedCrossEntropy, jxent.generalized_cross_entropy, LOGITS, INT_LABELS, {"q": 0.5}),
    (losses.KLDivergence, jxent.kl_divergence, jax.nn.log_softmax(LOGITS), PROBS, {"reduction": "sum"}),
]
IDS = [f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)]


@pytest.mark.parametrize(("cls", "fn", "predictions", "labels", "options"), CASES, ids=IDS)
def test_object_equals_function_and_works_in_a_jitted_step(cls, fn, predictions, labels, options):
    loss_fn = cls(**options)
    fn_options = {"reduction": "mean", **options}  # objects default to "mean"

    @jax.jit
    def step(p, y):
        return loss_fn(p, y), jax.grad(lambda p: jnp.sum(loss_fn(p, y)))(p)

    @jax.jit
    def direct(p, y):
        return fn(p, y, **fn_options), jax.grad(lambda p: jnp.sum(fn(p, y, **fn_options)))(p)

    value, grad = step(predictions, labels)
    expected, expected_grad = direct(predictions, labels)
    np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-7)


def test_objects_default_to_mean():
    for cls in (
        losses.CrossEntropy,
        losses.SigmoidBinaryCrossEntropy,
        losses.BinaryCrossEntropy,
        losses.CategoricalCrossEntropy,
        losses.SigmoidFocalLoss,
        losses.SoftmaxFocalLoss,
        losses.PolyLoss,
        losses.GeneralizedCrossEntropy,
        losses.KLDivergence,
    ):
        assert cls().reduction == "mean", cls


def test_where_is_forwarded():
    loss_fn = losses.CrossEntropy(reduction="none")
    where = jnp.array([True, False, True, True, False, True])
    out, expected = jax.jit(lambda z, y: (loss_fn(z, y, where=where), jxent.softmax_cross_entropy(z, y, where=where)))(
        LOGITS, INT_LABELS
    )
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out[1] == 0 and out[4] == 0


def test_hashable_and_usable_as_a_static_argument():
    a = losses.CrossEntropy(label_smoothing=0.1, reduction="mean")
    b = losses.CrossEntropy(label_smoothing=0.1, reduction="mean")
    c = losses.CrossEntropy(label_smoothing=0.2, reduction="mean")
    assert a == b and hash(a) == hash(b) and a != c
    assert len({a, b, c}) == 2

    traces = []

    @functools.partial(jax.jit, static_argnums=0)
    def step(loss_fn, logits, labels):
        traces.append(loss_fn)
        return loss_fn(logits, labels)

    step(a, LOGITS, INT_LABELS)
    step(b, LOGITS + 1.0, INT_LABELS)  # equal options: the cached trace is reused
    assert len(traces) == 1
    np.testing.assert_allclose(
        step(c, LOGITS, INT_LABELS),
        jxent.softmax_cross_entropy(LOGITS, INT_LABELS, label_smoothing=0.2, reduction="mean"),
        rtol=1e-6,
    )
    assert len(traces) == 2


def test_array_options_are_stored_as_tuples_and_stay_hashable():
    """Class weights given as a NumPy/JAX array or a list: the object hashes and compares by value."""
    weights = [1.0, 2.0, 0.5]
    objs = [losses.CrossEntropy(weight=w) for w in (jnp.asarray(weights), np.asarray(weights), weights)]
    assert all(o.weight == (1.0, 2.0, 0.5) for o in objs)
    assert len({*objs}) == 1 and hash(objs[0]) == hash(objs[1])
    step = jax.jit(lambda loss_fn, z, y: loss_fn(z, y), static_argnums=0)
    np.testing.assert_allclose(
        step(objs[0], LOGITS[:, :3], INT_LABELS % 3),
        jxent.softmax_cross_entropy(LOGITS[:, :3], INT_LABELS % 3, weight=jnp.asarray(weights), reduction="mean"),
        rtol=1e-6,
    )


def test_array_alpha_in_softmax_focal_loss_object():
    """A per-class ``alpha`` array is stored as a tuple; the loss checks it without NumPy-on-tuple deprecations."""
    loss_fn = losses.SoftmaxFocalLoss(alpha=jnp.array([0.2, 0.3, 0.5]))
    z, y = LOGITS[:, :3], INT_LABELS % 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = loss_fn(z, y)
    expected = jxent.softmax_focal_loss(z, y, alpha=jnp.array([0.2, 0.3, 0.5]), reduction="mean")
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_traced_options_are_kept_as_they_are():
    """Inside ``jit`` an option may hold tracers (e.g. weights being tuned): it is passed on unchanged."""
    z, y = LOGITS[:, :3], INT_LABELS % 3

    def with_list(w0):
        return losses.CrossEntropy(weight=[w0, 1.0, 2.0])(z, y)

    def with_array(w):
        return losses.CrossEntropy(weight=w)(z, y)

    expected = jxent.softmax_cross_entropy(z, y, weight=jnp.array([0.5, 1.0, 2.0]), reduction="mean")
    np.testing.assert_allclose(jax.jit(with_list)(0.5), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(with_array)(jnp.array([0.5, 1.0, 2.0])), expected, rtol=1e-6)


def test_frozen():
    loss_fn = losses.CrossEntropy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        loss_fn.label_smoothing = 0.5  # type: ignore[misc]


def test_bad_options_raise_when_called():
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.CrossEntropy(label_smoothing=2.0)(LOGITS, INT_LABELS)
    with pytest.raises(ValueError, match="reduction"):
        losses.SigmoidFocalLoss(reduction="avg")(LOGITS, BINARY)
