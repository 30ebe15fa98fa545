"""Computes a few jxent losses and their gradients, and compares them with optax."""

import jax
import jax.numpy as jnp
import optax

import jxent

logits = jnp.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [-jnp.inf, 1.0, 3.0]])
labels = jnp.array([0, 1, 2])
ours = jxent.softmax_cross_entropy_with_integer_labels(logits, labels)
theirs = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
print(f"softmax_cross_entropy_with_integer_labels:\n  jxent {ours}\n  optax {theirs}")
grad = jax.grad(lambda z: jxent.softmax_cross_entropy_with_integer_labels(z, labels, reduction="mean"))(logits)
print("gradient (softmax - onehot) / N:\n", grad)
