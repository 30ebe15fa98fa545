"""smooth_labels (against optax) and smooth_binary_labels (Keras' formula)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jxent
from tests import reference as ref


@pytest.mark.parametrize(("shape", "axis"), [((4, 5), -1), ((5, 4), 0), ((2, 3, 4), (1, 2))])
def test_smooth_labels_matches_optax_and_reference(shape, axis):
    rng = np.random.default_rng(0)
    labels = jnp.asarray(rng.dirichlet(np.ones(int(np.prod(shape)))).reshape(shape), jnp.float32)
    where = jnp.asarray(rng.random(shape) < 0.7)
    out, out_where = jax.jit(
        lambda y: (jxent.smooth_labels(y, 0.1, axis=axis), jxent.smooth_labels(y, 0.3, axis=axis, where=where))
    )(labels)
    num_classes = int(np.prod([shape[a] for a in ref.class_axes(axis, len(shape))]))
    np.testing.assert_allclose(out, ref.smooth_labels(labels, 0.1, num_classes), rtol=1e-6)
    np.testing.assert_allclose(out, optax.smooth_labels(labels, 0.1, axis=axis), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out_where, optax.smooth_labels(labels, 0.3, axis=axis, where=where), rtol=1e-6)


def test_smoothed_one_hot_stays_a_distribution():
    labels = jax.nn.one_hot(jnp.array([0, 3, 2]), 5)
    out = jax.jit(lambda y: jxent.smooth_labels(y, 0.2))(labels)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out[0], [0.8 + 0.04, 0.04, 0.04, 0.04, 0.04], rtol=1e-6)


def test_smooth_binary_labels():
    y = jnp.array([0.0, 1.0, 0.3])
    np.testing.assert_allclose(jax.jit(jxent.smooth_binary_labels)(y, 0.2), [0.1, 0.9, 0.3 * 0.8 + 0.1], rtol=1e-6)
    # The same smoothing as label_smoothing= of the binary losses.
    x = jnp.array([0.5, -1.0, 2.0])
    a, b = jax.jit(
        lambda x, y: (
            jxent.sigmoid_binary_cross_entropy(x, y, label_smoothing=0.2),
            jxent.sigmoid_binary_cross_entropy(x, jxent.smooth_binary_labels(y, 0.2)),
        )
    )(x, y)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_smoothing_matches_cross_entropy_label_smoothing():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(4, 5)), jnp.float32)
    labels = jnp.array([0, 4, 2, 1])
    a, b = jax.jit(
        lambda z: (
            jxent.softmax_cross_entropy_with_integer_labels(z, labels, label_smoothing=0.15),
            jxent.softmax_cross_entropy(z, jxent.smooth_labels(jax.nn.one_hot(labels, 5), 0.15)),
        )
    )(logits)
    np.testing.assert_allclose(a, b, rtol=2e-6)


@pytest.mark.parametrize("alpha", [-0.1, 1.1])
def test_alpha_outside_unit_interval_raises(alpha):
    with pytest.raises(ValueError, match="alpha"):
        jxent.smooth_labels(jnp.ones((2, 3)), alpha)
    with pytest.raises(ValueError, match="alpha"):
        jxent.smooth_binary_labels(jnp.ones((2, 3)), alpha)


def test_integer_labels_rejected():
    with pytest.raises(TypeError, match="labels"):
        jxent.smooth_labels(jnp.ones((2, 3), jnp.int32), 0.1)
