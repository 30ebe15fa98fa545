"""Label smoothing for categorical and binary targets."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jxent import _axes, _checks

__all__ = ["smooth_binary_labels", "smooth_labels"]


def smooth_labels(
    labels: ArrayLike,
    alpha: ArrayLike,
    *,
    axis: _axes.Axis | None = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Categorical label smoothing: :math:`(1 - \\alpha)\\, y + \\alpha / K`.

    Drop-in for :func:`optax.smooth_labels`; :math:`K` is the number of classes, or the number of ``where=True``
    classes of each row when ``where`` is given.

    Args:
      labels: One-hot (or probability) labels ``[..., num_classes]``.
      alpha: Smoothing factor in ``[0, 1]``.
      axis: Class axis or axes.
      where: Boolean mask of the classes that take part.

    References:
      Müller, Kornblith and Hinton, `When does label smoothing help? <https://arxiv.org/abs/1906.02629>`_, 2019.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> print(np.asarray(jxent.smooth_labels(jnp.array([[0.0, 1.0, 0.0, 0.0]]), 0.2)).round(4))
      [[0.05 0.85 0.05 0.05]]
    """
    labels = _checks.as_float_array(labels, "labels")
    _checks.check_scalar_range(alpha, "alpha", low=0.0, high=1.0)
    layout = _axes.class_layout(axis, labels.ndim, "labels")
    if where is None:
        num_classes: Any = 1
        for a in layout.class_axes:
            num_classes *= labels.shape[a]
    else:
        mask = _axes.expand_where(where, layout, labels.shape)
        num_classes = jnp.sum(mask, axis=layout.class_axes, keepdims=True)
    return (1.0 - alpha) * labels + alpha / num_classes


def smooth_binary_labels(labels: ArrayLike, alpha: ArrayLike) -> jax.Array:
    """Binary label smoothing (Keras): :math:`y (1 - \\alpha) + \\alpha / 2`, pulling 0/1 towards 1/2.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> print(np.asarray(jxent.smooth_binary_labels(jnp.array([0.0, 1.0]), 0.2)).round(4))
      [0.1 0.9]
    """
    labels = _checks.as_float_array(labels, "labels")
    _checks.check_scalar_range(alpha, "alpha", low=0.0, high=1.0)
    return labels * (1.0 - alpha) + 0.5 * alpha
