"""Trace-time argument validation shared by every loss.

Every check here runs while JAX traces the function, on shapes, dtypes and Python values, so a bad call fails
before anything is compiled, with a message that names the argument, what was expected and what was given. Values
that are tracers (for example a ``label_smoothing`` passed as a traced array) cannot be checked and are accepted.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

REDUCTIONS = ("none", "mean", "sum")


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is not None and dtype is not None:
        return f"array of shape {tuple(shape)} and dtype {dtype}"
    return f"{type(x).__name__} {x!r}"


def as_float_array(x: Any, name: str) -> jax.Array:
    """Returns ``x`` as a JAX array, raising ``TypeError`` unless its dtype is floating point."""
    arr = jnp.asarray(x)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be a floating-point array; got {_describe(arr)}.")
    return arr


def widen_labels(labels: jax.Array) -> jax.Array:
    """Integer labels narrower than 32 bits as ``int32``.

    Comparisons with ``num_classes`` and ``ignore_index`` are then exact: in ``int16`` a vocabulary of 40000 wraps
    to a negative bound, and in ``uint8`` ``ignore_index=-100`` wraps to the valid class 156. (``uint32`` labels
    stay as they are: :func:`is_ignored` compares them only with an ``ignore_index`` that ``uint32`` can hold.)
    """
    if labels.dtype.itemsize < 4:
        return labels.astype(jnp.int32)
    return labels


def is_ignored(labels: jax.Array, ignore_index: int) -> jax.Array:
    """``labels == ignore_index``, all False when ``ignore_index`` does not fit the labels' dtype (compared in that
    dtype, ``2**32`` would wrap to the class 0)."""
    info = jnp.iinfo(labels.dtype)
    if not info.min <= ignore_index <= info.max:
        return jnp.zeros(labels.shape, bool)
    return labels == np.asarray(ignore_index, labels.dtype)  # typed: a bare 2**31 would be taken as int32


def labels_as_int32(labels: jax.Array, num_classes: int, ignore_index: int | None) -> jax.Array:
    """``labels`` as ``int32`` for the blockwise kernels, keeping every 64-bit label that is neither a class nor
    ``ignore_index`` out of range (``2**32 + 3`` must not become class 3)."""
    info = jnp.iinfo(jnp.int32)
    if ignore_index is not None and not info.min <= ignore_index <= info.max:
        raise ValueError(
            f"`ignore_index` must fit in int32 in the fused and vocabulary-parallel losses; got {ignore_index}."
        )
    if labels.dtype.itemsize > 4 or labels.dtype == jnp.uint32:
        keep = (labels >= 0) & (labels < num_classes)
        if ignore_index is not None:
            keep = keep | is_ignored(labels, ignore_index)
        labels = jnp.where(keep, labels, num_classes if ignore_index != num_classes else -1)
    return labels.astype(jnp.int32)


def as_int_array(x: Any, name: str) -> jax.Array:
    """Returns ``x`` as a JAX integer array (see :func:`widen_labels`), raising ``TypeError`` unless it is one."""
    arr = jnp.asarray(x)
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(
            f"`{name}` must be an integer array of class indices; got {_describe(arr)}. "
            "Use the probability-label form for soft targets."
        )
    return widen_labels(arr)


def concrete_value(x: Any) -> float | None:
    """The Python value of a scalar if it is known at trace time, else ``None``."""
    if x is None or isinstance(x, jax.core.Tracer):
        return None
    try:
        arr = np.asarray(x)
    except Exception:  # pragma: no cover - exotic array types
        return None
    if arr.ndim != 0:
        return None
    return float(arr)


def check_scalar_range(
    x: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raises ``ValueError`` if a concrete scalar ``x`` lies outside the given interval."""
    if x is None:
        return
    shape = np.shape(x)
    if shape != ():
        raise ValueError(f"`{name}` must be a scalar; got {_describe(x)}.")
    value = concrete_value(x)
    if value is None:
        return
    lo_ok = low is None or (value > low if low_open else value >= low)
    hi_ok = high is None or (value < high if high_open else value <= high)
    if not (lo_ok and hi_ok) or np.isnan(value):
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(f"`{name}` must lie in {lb}{lo}, {hi}{hb}; got {value!r}.")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}; got {reduction!r}.")


def check_same_shape(a: jax.Array, b: jax.Array, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"`{name_b}` must have the same shape as `{name_a}` {tuple(a.shape)}; got shape {tuple(b.shape)}."
        )


def check_broadcastable(target_shape: tuple[int, ...], x: Any, name: str) -> None:
    shape = tuple(np.shape(x))
    try:
        out = np.broadcast_shapes(shape, target_shape)
    except ValueError:
        out = None
    if out != tuple(target_shape):
        raise ValueError(f"`{name}` must be broadcastable to shape {tuple(target_shape)}; got shape {shape}.")


def check_ignore_index(ignore_index: Any) -> None:
    if ignore_index is None:
        return
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int | np.integer):
        raise TypeError(f"`ignore_index` must be a Python int or None; got {ignore_index!r}.")


def compute_dtype(dtype: Any) -> Any:
    """The dtype losses are computed in: float32 for 16-bit inputs, the input dtype otherwise."""
    if jnp.dtype(dtype).itemsize < 4:
        return jnp.float32
    return dtype
