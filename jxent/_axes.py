"""Moving the class axis (or axes) of a loss to the end, and back.

Every kernel in jxent works on the last axis. Public functions accept ``axis`` as an int or a tuple of ints, as in
optax; the tuple form flattens those axes into one class axis in the order given, as optax does: with
``axis=(2, 1)`` an integer label ``y`` means the class ``(y // shape[1], y % shape[1])`` of axes ``(2, 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

Axis = int | Sequence[int]


class ClassLayout(NamedTuple):
    """How the class axes of an array of rank ``ndim`` map to a trailing class axis."""

    ndim: int
    class_axes: tuple[int, ...]
    batch_axes: tuple[int, ...]

    @property
    def is_trailing(self) -> bool:
        return self.class_axes == tuple(range(self.ndim - len(self.class_axes), self.ndim))

    def to_last(self, x: jax.Array) -> jax.Array:
        """Transposes the class axes of ``x`` to the end and flattens them into one."""
        if not self.is_trailing:
            x = jnp.transpose(x, self.batch_axes + self.class_axes)
        batch_shape = x.shape[: len(self.batch_axes)]
        if len(self.class_axes) != 1:
            x = x.reshape((*batch_shape, -1))
        return x

    def batch_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(shape[a] for a in self.batch_axes)

    def from_last(self, x: jax.Array, full_shape: Sequence[int]) -> jax.Array:
        """Inverse of :meth:`to_last` for an array with the class axis last."""
        class_shape = tuple(full_shape[a] for a in self.class_axes)
        x = x.reshape(x.shape[:-1] + class_shape)
        if not self.is_trailing:
            perm = self.batch_axes + self.class_axes
            inverse = [0] * len(perm)
            for i, p in enumerate(perm):
                inverse[p] = i
            x = jnp.transpose(x, inverse)
        return x


def class_layout(axis: Axis | None, ndim: int, name: str = "logits") -> ClassLayout:
    """Normalises ``axis`` for an array of rank ``ndim``, raising on bad values."""
    if ndim == 0:
        raise ValueError(f"`{name}` must have at least one (class) axis; got a scalar.")
    if axis is None:
        axes: tuple[int, ...] = tuple(range(ndim))
    elif isinstance(axis, bool):
        raise TypeError(f"`axis` must be an int or a tuple of ints; got {axis!r}.")
    elif isinstance(axis, int):
        axes = (axis,)
    elif isinstance(axis, Sequence) and all(isinstance(a, int) for a in axis) and axis:
        axes = tuple(axis)
    else:
        raise TypeError(f"`axis` must be an int or a non-empty tuple of ints; got {axis!r}.")
    normalised = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"`axis` {a} is out of range for `{name}` of rank {ndim}.")
        normalised.append(a % ndim)
    if len(set(normalised)) != len(normalised):
        raise ValueError(f"`axis` has repeated entries: {axis!r}.")
    class_axes = tuple(normalised)  # the order given: a flat class index runs over the axes in this order
    batch_axes = tuple(i for i in range(ndim) if i not in class_axes)
    return ClassLayout(ndim, class_axes, batch_axes)


def expand_where(where: ArrayLike | None, layout: ClassLayout, logits_shape: Sequence[int]):
    """A ``where`` mask given over the batch shape is broadcast over the class axes (optax's rule)."""
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(f"`where` must be a boolean mask; got dtype {where.dtype}.")
    if where.ndim != layout.ndim:
        batch_shape = layout.batch_shape(logits_shape)
        if where.shape != batch_shape:
            raise ValueError(
                f"`where` must have the shape of `logits` {tuple(logits_shape)} or its batch shape "
                f"{batch_shape}; got shape {tuple(where.shape)}."
            )
        where = jnp.expand_dims(where, layout.class_axes)
    try:
        return jnp.broadcast_to(where, tuple(logits_shape))
    except ValueError as e:
        raise ValueError(
            f"`where` of shape {tuple(where.shape)} does not broadcast to `logits` {tuple(logits_shape)}."
        ) from e
