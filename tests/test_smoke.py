"""A first end-to-end check that the public API imports and agrees with optax on one case."""

import jax
import numpy as np
import optax

import jxent


def test_public_api_matches_optax_on_random_logits():
    key_z, key_y = jax.random.split(jax.random.PRNGKey(0))
    logits = jax.random.normal(key_z, (8, 11)) * 3.0
    labels = jax.random.randint(key_y, (8,), 0, 11)
    ours = jxent.softmax_cross_entropy_with_integer_labels(logits, labels)
    theirs = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_tutorial_values_in_nats():
    probs = np.array([[0.4, 0.4, 0.2], [0.1, 0.2, 0.7]], np.float32)
    labels = np.array([1, 2])
    np.testing.assert_allclose(jxent.categorical_cross_entropy(probs, labels), [-np.log(0.4), -np.log(0.7)], rtol=1e-6)
