"""reduce_loss and the "mean" denominators of the losses (masked and ignored examples excluded)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jxent

reduce_loss = jxent.reduce_loss


def test_none_sum_mean():
    losses = jnp.array([[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_array_equal(reduce_loss(losses), losses)
    np.testing.assert_allclose(reduce_loss(losses, reduction="sum"), 12.0)
    np.testing.assert_allclose(reduce_loss(losses, reduction="mean"), 3.0)


def test_weighted_mean_divides_by_total_weight():
    losses = jnp.array([2.0, 0.0, 6.0])  # the middle example does not count: its loss is already 0
    weights = jnp.array([1.0, 0.0, 3.0])
    np.testing.assert_allclose(reduce_loss(losses, weights=weights, reduction="mean"), 8.0 / 4.0)
    np.testing.assert_allclose(reduce_loss(losses, weights=weights, reduction="sum"), 8.0)
    # Weights broadcast to the losses' shape.
    np.testing.assert_allclose(reduce_loss(jnp.ones((2, 3)), weights=jnp.array([1.0, 1.0, 0.0]), reduction="mean"), 1.5)


def test_zero_total_weight_gives_zero_with_zero_gradient():
    losses = jnp.array([1.0, 2.0])
    weights = jnp.zeros(2)
    assert reduce_loss(losses * 0, weights=weights, reduction="mean") == 0.0
    g = jax.jit(jax.grad(lambda v: reduce_loss(v, weights=weights, reduction="mean")))(losses)
    np.testing.assert_array_equal(g, [0.0, 0.0])


def test_empty():
    empty = jnp.zeros((0,))
    assert reduce_loss(empty, reduction="mean") == 0.0
    assert reduce_loss(empty, reduction="sum") == 0.0
    assert reduce_loss(empty, weights=empty, reduction="mean") == 0.0


def test_gradient_of_mean():
    g = jax.jit(jax.grad(lambda v: reduce_loss(v, weights=jnp.array([1.0, 3.0]), reduction="mean")))(jnp.ones(2))
    np.testing.assert_allclose(g, [0.25, 0.25])


def test_bad_reduction_raises():
    with pytest.raises(ValueError, match="reduction"):
        reduce_loss(jnp.ones(3), reduction="batchmean")


def test_losses_mean_excludes_masked_and_ignored_examples():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(6, 4)), jnp.float32)
    labels = jnp.array([0, 1, -100, 3, 2, 1])
    where = jnp.array([True, True, True, True, False, True])

    @jax.jit
    def run(z):
        kw = {"where": where, "ignore_index": -100}
        ce = jxent.softmax_cross_entropy_with_integer_labels
        return ce(z, labels, **kw), ce(z, labels, reduction="mean", **kw), ce(z, labels, reduction="sum", **kw)

    per, mean, total = run(logits)
    assert per[2] == 0 and per[4] == 0
    np.testing.assert_allclose(total, per.sum(), rtol=1e-6)
    np.testing.assert_allclose(mean, per.sum() / 4, rtol=1e-6)
