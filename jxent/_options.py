"""The options of the softmax cross-entropy family, as one validated, hashable value.

Every cross-entropy entry point (dense, fused, vocabulary-sharded, and the :mod:`jxent.losses` objects) builds a
:class:`CrossEntropyOptions` from its keyword arguments, so each option is checked in one place, with one message,
and means the same thing everywhere. Concrete scalars are stored as Python numbers, so the object is hashable and
can be part of a ``jit`` static argument; traced values (an option passed as a traced array) are kept as they are
and cannot be range-checked.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jxent import _checks
from jxent._typing import Reduction

__all__ = ["CrossEntropyOptions", "OptionArrays", "is_zero"]


def is_zero(x: Any) -> bool:
    """True when ``x`` is known at trace time to be 0 (so the term it scales can be skipped)."""
    return _checks.concrete_value(x) == 0.0


def _plain(x: Any) -> Any:
    """A concrete scalar as a Python float (hashable); anything else (``None``, a tracer) as it is."""
    value = _checks.concrete_value(x)
    return x if value is None else value


class OptionArrays(NamedTuple):
    """The scalar options as constant arrays of the compute dtype (no gradient flows to them)."""

    label_smoothing: jax.Array
    z_loss: jax.Array
    soft_cap: jax.Array  # 1 when there is no capping (unused then)
    temperature: jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class CrossEntropyOptions:
    """The keyword options every softmax cross-entropy shares, validated once.

    Attributes:
      label_smoothing: :math:`\\varepsilon \\in [0, 1]`, spread over the classes present in each row.
      z_loss: Coefficient :math:`\\lambda_z \\ge 0` of :math:`\\mathrm{lse}(z)^2`.
      soft_cap: ``cap > 0`` for :math:`z = \\mathrm{cap} \\tanh(z / \\mathrm{cap})`, or ``None``. ``inf`` is the
        limit of no capping and is stored as ``None``.
      temperature: Finite :math:`T > 0`; logits are divided by it after soft-capping.
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.
      ignore_index: Integer label whose examples do not count, or ``None``.
    """

    label_smoothing: Any = 0.0
    z_loss: Any = 0.0
    soft_cap: Any = None
    temperature: Any = 1.0
    reduction: Reduction = "none"
    ignore_index: int | None = None

    def __post_init__(self) -> None:
        _checks.check_scalar_range(self.label_smoothing, "label_smoothing", low=0.0, high=1.0)
        _checks.check_scalar_range(self.z_loss, "z_loss", low=0.0)
        _checks.check_scalar_range(self.soft_cap, "soft_cap", low=0.0, low_open=True)
        _checks.check_scalar_range(
            self.temperature, "temperature", low=0.0, high=math.inf, low_open=True, high_open=True
        )
        _checks.check_reduction(self.reduction)
        _checks.check_ignore_index(self.ignore_index)
        cap = _plain(self.soft_cap)
        object.__setattr__(self, "soft_cap", None if _checks.concrete_value(cap) == math.inf else cap)
        for name in ("label_smoothing", "z_loss", "temperature"):
            object.__setattr__(self, name, _plain(getattr(self, name)))
        if self.ignore_index is not None:
            object.__setattr__(self, "ignore_index", int(self.ignore_index))

    @classmethod
    def pick(cls, arguments: Mapping[str, Any]) -> CrossEntropyOptions:
        """The options among a loss function's ``arguments`` (its ``locals()``); those it lacks keep their defaults."""
        return cls(**{f.name: arguments[f.name] for f in dataclasses.fields(cls) if f.name in arguments})

    @property
    def has_smoothing(self) -> bool:
        return not is_zero(self.label_smoothing)

    @property
    def has_z_loss(self) -> bool:
        return not is_zero(self.z_loss)

    @property
    def has_cap(self) -> bool:
        return self.soft_cap is not None

    @property
    def cap_is_traced(self) -> bool:
        """The cap is a traced value, so it may be ``inf`` (no capping) without this being known at trace time."""
        return self.has_cap and _checks.concrete_value(self.soft_cap) is None

    @property
    def has_temperature(self) -> bool:
        return _checks.concrete_value(self.temperature) != 1.0

    def arrays(self, dtype: Any) -> OptionArrays:
        """The scalar options as constants of ``dtype`` (``stop_gradient``: they are hyperparameters)."""

        def const(x: Any) -> jax.Array:
            return lax.stop_gradient(jnp.asarray(x, dtype))

        return OptionArrays(
            label_smoothing=const(self.label_smoothing),
            z_loss=const(self.z_loss),
            soft_cap=const(1.0 if self.soft_cap is None else self.soft_cap),
            temperature=const(self.temperature),
        )
