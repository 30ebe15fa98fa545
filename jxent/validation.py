"""Reporting out-of-range integer labels with :mod:`jax.experimental.checkify`.

Losses cannot raise on values inside ``jit``; they return NaN for an example whose label is outside
``[0, num_classes)``. To find such a label, run :func:`check_labels` under ``checkify.checkify`` (it composes with
``jit``), or call :func:`validate_labels`, which does that and raises.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import checkify
from jax.typing import ArrayLike

from jxent import _checks

__all__ = ["check_labels", "validate_labels"]


def check_labels(labels: ArrayLike, num_classes: int, *, ignore_index: int | None = None) -> None:
    """Adds a ``checkify`` check that every label is in ``[0, num_classes)`` or equals ``ignore_index``.

    On failure the error names the first bad label in row-major order, its position and its value. Use inside
    a function transformed by ``checkify.checkify``::

      err, loss = checkify.checkify(jax.jit(train_loss))(params, batch)
      err.throw()

    Args:
      labels: Integer labels of any shape.
      num_classes: Number of classes.
      ignore_index: Label value that is allowed besides the valid classes.

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> from jax.experimental import checkify
      >>> def total(labels):
      ...     jxent.check_labels(labels, 3)
      ...     return labels.sum()
      >>> err, _ = checkify.checkify(jax.jit(total))(jnp.array([0, 5]))
      >>> print(err.get())
      label 5 at position [1] of `labels` (shape (2,)) is outside [0, 3) (`check` failed)
    """
    labels = _checks.as_int_array(labels, "labels")
    _checks.check_ignore_index(ignore_index)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive Python int; got {num_classes!r}.")
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad = bad & ~_checks.is_ignored(labels, ignore_index)
    flat_bad = bad.reshape(-1)
    first = jnp.argmax(flat_bad) if flat_bad.size else jnp.zeros((), jnp.int32)
    value = labels.reshape(-1)[first] if flat_bad.size else jnp.zeros((), labels.dtype)
    position = jnp.stack(jnp.unravel_index(first, labels.shape)) if labels.ndim else jnp.zeros((0,), jnp.int32)
    allowed = f"[0, {num_classes})" + ("" if ignore_index is None else f" or ignore_index={ignore_index}")
    checkify.check(
        ~jnp.any(bad),
        f"label {{value}} at position {{position}} of `labels` (shape {tuple(labels.shape)}) is outside {allowed}",
        value=value,
        position=position,
    )


def validate_labels(labels: ArrayLike, num_classes: int, *, ignore_index: int | None = None) -> None:
    """Raises ``checkify.JaxRuntimeError`` naming the first label outside ``[0, num_classes)``.

    Works on concrete arrays and on traced ones inside ``jit`` only through ``checkify``; use :func:`check_labels`
    there. ``-1`` is out of range unless it is ``ignore_index``.

    Examples:
      >>> import jax.numpy as jnp, jxent
      >>> jxent.validate_labels(jnp.array([0, 2, -100]), 3, ignore_index=-100)  # fine: returns None
      >>> try:
      ...     jxent.validate_labels(jnp.array([0, 3, 1]), 3)
      ... except Exception as e:
      ...     print(str(e).splitlines()[0])
      label 3 at position [1] of `labels` (shape (3,)) is outside [0, 3) (`check` failed)
    """
    checked = checkify.checkify(jax.jit(check_labels, static_argnames=("num_classes", "ignore_index")))
    err, _ = checked(labels, num_classes=num_classes, ignore_index=ignore_index)
    err.throw()
