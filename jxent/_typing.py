"""Type aliases of the public signatures.

Array inputs are :data:`jax.typing.ArrayLike` (a JAX or NumPy array or a Python/NumPy scalar), and so are the
scalar hyperparameters that may be traced (``label_smoothing``, ``temperature``, ...); array outputs are
:class:`jax.Array`. The string settings are ``Literal`` types, so a type checker catches a misspelt value; the
values are the ones the runtime checks accept (``tests/test_typing.py`` keeps the two in step).
"""

from __future__ import annotations

from typing import Literal, TypeAlias

__all__ = ["MeshAxes", "Reduction", "Schedule", "WeightLayout"]

Reduction: TypeAlias = Literal["none", "mean", "sum"]
"""``reduction=``: per-example losses, their weighted mean, or their sum."""

Schedule: TypeAlias = Literal["auto", "one_pass", "split", "token", "vocab"]
"""``schedule=`` of the fused (linear-layer) losses."""

WeightLayout: TypeAlias = Literal["dv", "vd"]
"""``weight_layout=`` of the fused losses: ``[D, V]`` or ``[V, D]`` output matrices."""

MeshAxes: TypeAlias = str | tuple[str, ...]
"""A mesh axis name, or a tuple of them (the devices of all those axes together)."""
