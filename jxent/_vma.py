"""Loops and cotangents whose types follow their inputs' varying mesh axes, so kernels also run inside
``jax.shard_map``.

Inside ``shard_map`` every array's type records the mesh axes it varies over (``jax.typeof(x).vma``). A
``lax.fori_loop`` needs a carry of the same type before and after its body, and a ``custom_vjp`` must return each
cotangent with its primal's type. These two helpers keep both true for any inputs; outside ``shard_map`` they are
``lax.fori_loop`` and the identity. They know nothing about which axis holds what: the vocabulary collectives of the
sharded losses live in :mod:`jxent.parallel`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax import lax

__all__ = ["fori", "sum_to_type", "varying_axes"]


def varying_axes(x: Any) -> frozenset:
    """The ``shard_map`` mesh axes ``x`` varies over (empty outside ``shard_map``)."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)  # jax 0.10: the varying axes are recorded here
    if manual is not None:
        return frozenset(manual.varying)
    return frozenset(getattr(aval, "vma", frozenset()))


def fori(n: int, body: Callable[[Any, Any], Any], init: Any, refs: Any) -> Any:
    """``lax.fori_loop(0, n, body, init)``, with the initial carry first marked as varying over the mesh axes that
    ``refs`` (the arrays the body reads) vary over."""
    axes: frozenset = frozenset()
    for r in jax.tree.leaves(refs):
        axes = axes | varying_axes(r)
    if axes:

        def vary(x: Any) -> Any:
            missing = tuple(sorted(axes - varying_axes(x)))
            return lax.pcast(x, missing, to="varying") if missing else x

        init = jax.tree.map(vary, init)
    return lax.fori_loop(0, n, body, init)


def sum_to_type(ct: jax.Array, x: Any) -> jax.Array:
    """A cotangent summed over the mesh axes its primal ``x`` is replicated over (each device holds only its own
    part, e.g. its tokens' part of a replicated weight's gradient)."""
    extra = tuple(sorted(varying_axes(ct) - varying_axes(x)))
    return lax.psum(ct, extra) if extra else ct
