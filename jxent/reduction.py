"""The one place where per-example losses, masks and weights become a number."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jxent import _checks
from jxent._typing import Reduction

__all__ = ["reduce_loss", "safe_divide"]


def safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``numerator / denominator`` with ``0 / 0 = 0`` and a zero gradient there (no NaN)."""
    zero = denominator == 0
    return jnp.where(zero, 0.0, numerator / jnp.where(zero, 1.0, denominator))


def reduce_loss(losses: ArrayLike, *, weights: ArrayLike | None = None, reduction: Reduction = "none") -> jax.Array:
    """Reduces per-example losses.

    Args:
      losses: Per-example losses ``[...]``; examples that do not count must already be 0.
      weights: Per-example weights ``[...]`` that make up the denominator of ``"mean"`` (0 for examples that do
        not count, the class weight of the target for weighted cross-entropy). ``None`` means every example has
        weight 1.
      reduction: ``"none"`` (return ``losses``), ``"sum"`` or ``"mean"``.

    Returns:
      ``losses``, ``sum(losses)`` or ``sum(losses) / sum(weights)``. A batch of total weight 0 gives 0 with a
      zero gradient (``torch`` gives NaN).

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> losses = jnp.array([1.0, 2.0, 0.0])
      >>> float(jxent.reduce_loss(losses, weights=jnp.array([1.0, 1.0, 0.0]), reduction='mean'))
      1.5
    """
    _checks.check_reduction(reduction)
    losses = jnp.asarray(losses)
    if reduction == "none":
        return losses
    total = jnp.sum(losses)
    if reduction == "sum":
        return total
    if weights is None:
        return total / max(losses.size, 1) if losses.size else jnp.zeros((), losses.dtype)
    count = jnp.sum(jnp.broadcast_to(jnp.asarray(weights, losses.dtype), losses.shape))
    return safe_divide(total, count)
