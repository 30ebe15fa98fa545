"""Loss objects for training steps: configure once, call as ``loss_fn(logits, labels)``.

Each class is a frozen (hashable) dataclass around one jxent function, so it can be a static argument of ``jit``,
a field of a Flax module, or passed where optax-style ``loss_fn(logits, labels)`` callables are expected::

  loss_fn = jxent.losses.CrossEntropy(label_smoothing=0.1, reduction="mean")
  loss = loss_fn(logits, labels)            # integer or probability labels

The functions are the source of truth; these only store keyword arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import numpy as np

from jxent import binary, cross_entropy, divergence, focal, probabilities, robust

__all__ = [
    "BinaryCrossEntropy",
    "CategoricalCrossEntropy",
    "CrossEntropy",
    "GeneralizedCrossEntropy",
    "KLDivergence",
    "PolyLoss",
    "SigmoidBinaryCrossEntropy",
    "SigmoidFocalLoss",
    "SoftmaxFocalLoss",
]


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value


def _hashable(value: Any) -> Any:
    """Concrete arrays, lists and tuples of numbers as nested tuples of Python numbers; anything else (a traced
    value, a ragged list) as it is."""
    if isinstance(value, jax.core.Tracer) or not isinstance(value, list | tuple | np.ndarray | jax.Array):
        return value
    try:
        return _as_tuple(np.asarray(value).tolist())
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError, ValueError):
        return value


@dataclasses.dataclass(frozen=True)
class _Loss:
    """Stores keyword arguments for ``fn``; calling it forwards ``(logits, labels, **options)``."""

    fn: ClassVar[Callable[..., jax.Array]]

    def __post_init__(self) -> None:
        # Concrete arrays and lists (class weights, alpha) are stored as nested tuples, so the object stays hashable
        # and comparable by value (a static ``jit`` argument); traced values are kept as they are.
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _hashable(getattr(self, f.name)))

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __call__(self, predictions: Any, labels: Any, *, where: Any = None) -> jax.Array:
        extra = {} if where is None else {"where": where}
        return type(self).fn(predictions, labels, **self.options(), **extra)


@dataclasses.dataclass(frozen=True)
class CrossEntropy(_Loss):
    """:func:`jxent.softmax_cross_entropy` (integer or probability labels)."""

    fn = staticmethod(cross_entropy.softmax_cross_entropy)
    axis: int = -1
    weight: Any = None
    ignore_index: int | None = None
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    soft_cap: float | None = None
    temperature: float = 1.0
    reduction: str = "mean"


@dataclasses.dataclass(frozen=True)
class SigmoidBinaryCrossEntropy(_Loss):
    """:func:`jxent.sigmoid_binary_cross_entropy`."""

    fn = staticmethod(binary.sigmoid_binary_cross_entropy)
    pos_weight: Any = None
    weight: Any = None
    label_smoothing: float = 0.0
    reduction: str = "mean"


@dataclasses.dataclass(frozen=True)
class BinaryCrossEntropy(_Loss):
    """:func:`jxent.binary_cross_entropy` (on probabilities)."""

    fn = staticmethod(probabilities.binary_cross_entropy)
    weight: Any = None
    label_smoothing: float = 0.0
    reduction: str = "mean"


@dataclasses.dataclass(frozen=True)
class CategoricalCrossEntropy(_Loss):
    """:func:`jxent.categorical_cross_entropy` (on probabilities)."""

    fn = staticmethod(probabilities.categorical_cross_entropy)
    axis: int = -1
    weight: Any = None
    ignore_index: int | None = None
    label_smoothing: float = 0.0
    reduction: str = "mean"


@dataclasses.dataclass(frozen=True)
class SigmoidFocalLoss(_Loss):
    """:func:`jxent.sigmoid_focal_loss`."""

    fn = staticmethod(focal.sigmoid_focal_loss)
    alpha: float | None = None
    gamma: float = 2.0
    reduction: str = "mean"


@dataclasses.dataclass(frozen=True)
class SoftmaxFocalLoss(_Loss):
    """:func:`jxent.softmax_focal_loss`."""

    fn = staticmethod(focal.softmax_focal_loss)
    axis: int = -1
    alpha: Any = None
    gamma: float = 2.0
    ignore_index: int | None = None
    label_smoothing: float = 0.0
    reduction: str = "mean"


@dataclasses.dataclass(frozen=True)
class PolyLoss(_Loss):
    """:func:`jxent.poly_loss_cross_entropy`."""

    fn = staticmethod(robust.poly_loss_cross_entropy)
    epsilon: float = 2.0
    axis: int = -1
    ignore_index: int | None = None
    reduction: str = "mean"


@dataclasses.dataclass(frozen=True)
class GeneralizedCrossEntropy(_Loss):
    """:func:`jxent.generalized_cross_entropy`."""

    fn = staticmethod(robust.generalized_cross_entropy)
    q: float = 0.7
    axis: int = -1
    ignore_index: int | None = None
    reduction: str = "mean"


@dataclasses.dataclass(frozen=True)
class KLDivergence(_Loss):
    """:func:`jxent.kl_divergence`, called as ``loss_fn(log_predictions, targets)``."""

    fn = staticmethod(divergence.kl_divergence)
    axis: int = -1
    reduction: str = "mean"
