"""Loss objects for training steps: configure once, call as ``loss_fn(logits, labels)``.

Each class is a frozen (hashable) dataclass around one jxent function, so it can be a static argument of ``jit``,
a field of a Flax module, or passed where optax-style ``loss_fn(logits, labels)`` callables are expected::

  loss_fn = jxent.losses.CrossEntropy(label_smoothing=0.1, reduction="mean")
  loss = loss_fn(logits, labels)            # integer or probability labels

Settings are keyword-only and are checked when the object is built, with the function's messages:
``CrossEntropy(reduction="avg")`` raises there, not at the first call. Settings that can only be checked against
the inputs (``axis``, class weights) are checked at the call, and traced values (an object built inside ``jit``
from traced settings) are accepted unchecked, as the functions accept them. The objects default to
``reduction="mean"`` (the functions to ``"none"``). The functions are the source of truth; these only store
keyword arguments.
"""

# Every module-level name other than the loss classes is private (underscore aliases), so that ``dir(jxent.losses)``
# lists only the losses. (No ``from __future__ import annotations``: it would add the public name ``annotations``.)
import dataclasses as _dataclasses
import functools as _functools
from collections.abc import Callable as _Callable
from collections.abc import Sequence as _Sequence
from typing import Any as _Any
from typing import ClassVar as _ClassVar

import jax as _jax
import numpy as _np
from jax.typing import ArrayLike as _ArrayLike

from jxent import _checks, _options
from jxent import binary as _binary
from jxent import cross_entropy as _cross_entropy
from jxent import divergence as _divergence
from jxent import focal as _focal
from jxent import probabilities as _probabilities
from jxent import robust as _robust
from jxent._typing import Reduction as _Reduction

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


def _as_tuple(value: _Any) -> _Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value


def _hashable(value: _Any) -> _Any:
    """Concrete arrays, lists and tuples of numbers as nested tuples of Python numbers; anything else (a traced
    value, a ragged list) as it is."""
    if isinstance(value, _jax.core.Tracer) or not isinstance(value, list | tuple | _np.ndarray | _jax.Array):
        return value
    try:
        return _as_tuple(_np.asarray(value).tolist())
    except (_jax.errors.TracerArrayConversionError, _jax.errors.ConcretizationTypeError, TypeError, ValueError):
        return value


def _check_alpha(alpha: _Any) -> None:
    """The focal ``alpha``: a scalar lies in ``[0, 1]``; per-class weights are checked against the logits at the
    call (as :func:`jxent.sigmoid_focal_loss` and :func:`jxent.softmax_focal_loss` do)."""
    if _checks.concrete_value(alpha) is not None:  # a concrete scalar (None for arrays, tracers and None)
        _checks.check_scalar_range(alpha, "alpha", low=0.0, high=1.0)


# The checks of every setting that does not depend on the inputs, by field name, as the wrapped functions make
# them (same messages). ``_Loss`` applies the entry of each field it has; ``CrossEntropy`` builds a
# ``CrossEntropyOptions`` instead. Settings not listed (``axis``, ``weight``, ``pos_weight``, ``epsilon``) are
# checked at the call.
_CHECKS: dict[str, _Callable[[_Any], None]] = {
    "reduction": _checks.check_reduction,
    "ignore_index": _checks.check_ignore_index,
    "label_smoothing": _functools.partial(_checks.check_scalar_range, name="label_smoothing", low=0.0, high=1.0),
    "gamma": _functools.partial(_checks.check_scalar_range, name="gamma", low=0.0),
    "alpha": _check_alpha,
    "q": _functools.partial(_checks.check_scalar_range, name="q", low=0.0, high=1.0, low_open=True),
}


@_dataclasses.dataclass(frozen=True, kw_only=True)
class _Loss:
    """Stores keyword arguments for ``fn``; calling it forwards ``(predictions, labels, **options)``."""

    fn: _ClassVar[_Callable[..., _jax.Array]]

    def __post_init__(self) -> None:
        # Checked as given, so a bad setting gets the message the function would give for the same value.
        self._validate()
        # Concrete arrays and lists (class weights, alpha) are stored as nested tuples, so the object stays hashable
        # and comparable by value (a static ``jit`` argument); traced values are kept as they are.
        for f in _dataclasses.fields(self):
            object.__setattr__(self, f.name, _hashable(getattr(self, f.name)))

    def _validate(self) -> None:
        """Applies the check in ``_CHECKS`` of each setting that has one."""
        for name, value in self.options().items():
            check = _CHECKS.get(name)
            if check is not None:
                check(value)

    def options(self) -> dict[str, _Any]:
        """The settings, as the keyword arguments passed to the function."""
        return {f.name: getattr(self, f.name) for f in _dataclasses.fields(self)}

    def __call__(self, predictions: _ArrayLike, labels: _ArrayLike, *, where: _ArrayLike | None = None) -> _jax.Array:
        extra = {} if where is None else {"where": where}
        return type(self).fn(predictions, labels, **self.options(), **extra)


_CROSS_ENTROPY_OPTIONS = tuple(f.name for f in _dataclasses.fields(_options.CrossEntropyOptions))


@_dataclasses.dataclass(frozen=True, kw_only=True)
class CrossEntropy(_Loss):
    """Softmax cross-entropy, :math:`\\sum_c q_c (\\mathrm{lse}(z) - z_c) + \\lambda_z \\mathrm{lse}(z)^2` with
    :math:`q` the (weighted, smoothed) targets of the labels: :func:`jxent.softmax_cross_entropy`.

    Called as ``loss_fn(logits, labels, where=None)`` with integer class indices ``[...]`` or probability labels
    like ``logits``. The settings are validated as one ``CrossEntropyOptions`` when the object
    is built, and stored as it normalises them (Python numbers; ``soft_cap=inf`` as ``None``).

    Attributes:
      axis: Class axis, or a tuple of axes flattened into one (as in optax). Default ``-1``.
      weight: Per-class weights ``[num_classes]``, or ``None`` (default). With ``"mean"`` and integer labels the
        sum is divided by :math:`\\sum w_{y_i}` over the examples that count (torch).
      ignore_index: Label value whose examples give loss 0, gradient 0 and do not count in ``"mean"``, or ``None``
        (default: no value is ignored; torch uses ``-100``). Integer labels only.
      label_smoothing: :math:`\\varepsilon \\in [0, 1]`, spread over the classes present in each row. Default
        ``0.0``.
      z_loss: Coefficient :math:`\\lambda_z \\ge 0` of :math:`\\mathrm{lse}(z)^2` (PaLM). Default ``0.0``.
      soft_cap: Soft-capping value ``cap > 0``, :math:`z = \\mathrm{cap} \\tanh(z / \\mathrm{cap})` (Gemma 2),
        applied before ``temperature``; or ``None`` (default).
      temperature: Finite :math:`T > 0`; logits are divided by it after soft-capping. Default ``1.0``.
      reduction: ``"none"`` (per-example losses), ``"sum"`` or ``"mean"`` (default; over the examples that
        count, 0 when none counts).

    ``weight``, ``label_smoothing``, ``z_loss``, ``soft_cap`` and ``temperature`` are constants (no gradient).

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> loss_fn = jxent.losses.CrossEntropy(label_smoothing=0.1, ignore_index=-100)
      >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
      >>> labels = jnp.array([0, 1, -100])  # the last example is ignored
      >>> per_example = jxent.softmax_cross_entropy(logits, labels, label_smoothing=0.1, ignore_index=-100)
      >>> bool(jnp.isclose(loss_fn(logits, labels), per_example[:2].mean()))
      True
    """

    fn = staticmethod(_cross_entropy.softmax_cross_entropy)
    axis: int | tuple[int, ...] = -1
    weight: _ArrayLike | _Sequence[_ArrayLike] | None = None
    ignore_index: int | None = None
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    soft_cap: float | None = None
    temperature: float = 1.0
    reduction: _Reduction = "mean"

    def _validate(self) -> None:
        checked = _options.CrossEntropyOptions(**{name: getattr(self, name) for name in _CROSS_ENTROPY_OPTIONS})
        for name in _CROSS_ENTROPY_OPTIONS:
            object.__setattr__(self, name, getattr(checked, name))


@_dataclasses.dataclass(frozen=True, kw_only=True)
class SigmoidBinaryCrossEntropy(_Loss):
    """Elementwise sigmoid cross-entropy on logits, :math:`-[w_+ y \\log\\sigma(x) + (1-y)\\log(1-\\sigma(x))]`:
    :func:`jxent.sigmoid_binary_cross_entropy`.

    Called as ``loss_fn(logits, labels, where=None)`` with labels in ``[0, 1]`` (hard or soft) broadcastable to
    ``logits``; exact limits at ``logits = ±inf``.

    Attributes:
      pos_weight: Weight :math:`w_+` of the positive term (torch's ``pos_weight``), broadcastable to ``logits``,
        or ``None`` (default: 1).
      weight: Element weights, broadcastable to ``logits``, or ``None`` (default).
      label_smoothing: :math:`\\varepsilon \\in [0, 1]`; labels become :math:`y(1-\\varepsilon) + \\varepsilon/2`
        (Keras). Default ``0.0``.
      reduction: ``"none"`` (elementwise), ``"sum"`` or ``"mean"`` (default; over the unmasked elements).

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> loss_fn = jxent.losses.SigmoidBinaryCrossEntropy(pos_weight=3.0)
      >>> logits, labels = jnp.array([[1.0, -2.0], [0.5, 0.0]]), jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> manual = -(3.0 * labels * jax.nn.log_sigmoid(logits) + (1 - labels) * jax.nn.log_sigmoid(-logits))
      >>> bool(jnp.isclose(loss_fn(logits, labels), manual.mean()))
      True
    """

    fn = staticmethod(_binary.sigmoid_binary_cross_entropy)
    pos_weight: _ArrayLike | _Sequence[_ArrayLike] | None = None
    weight: _ArrayLike | _Sequence[_ArrayLike] | None = None
    label_smoothing: float = 0.0
    reduction: _Reduction = "mean"


@_dataclasses.dataclass(frozen=True, kw_only=True)
class BinaryCrossEntropy(_Loss):
    """Elementwise binary cross-entropy of probabilities, :math:`-[y \\log p + (1-y) \\log(1-p)]`:
    :func:`jxent.binary_cross_entropy`.

    Called as ``loss_fn(probabilities, labels, where=None)`` with probabilities of the positive class and labels
    in ``[0, 1]`` broadcastable to them. torch's ``binary_cross_entropy`` semantics: logs clamped at -100, so
    ``p`` of exactly 0 or 1 gives a finite loss and gradient.

    Attributes:
      weight: Element weights, broadcastable to ``probabilities``, or ``None`` (default).
      label_smoothing: :math:`\\varepsilon \\in [0, 1]`; labels become :math:`y(1-\\varepsilon)+\\varepsilon/2`.
        Default ``0.0``.
      reduction: ``"none"`` (elementwise), ``"sum"`` or ``"mean"`` (default; over the unmasked elements).

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> loss_fn = jxent.losses.BinaryCrossEntropy()
      >>> float(loss_fn(jnp.array([1.0, 0.0]), jnp.array([0.0, 0.0])))  # log 0 is clamped at -100: (100 + 0) / 2
      50.0
    """

    fn = staticmethod(_probabilities.binary_cross_entropy)
    weight: _ArrayLike | _Sequence[_ArrayLike] | None = None
    label_smoothing: float = 0.0
    reduction: _Reduction = "mean"


@_dataclasses.dataclass(frozen=True, kw_only=True)
class CategoricalCrossEntropy(_Loss):
    """Cross-entropy of predicted probabilities, :math:`-\\sum_c q_c \\log p_c`:
    :func:`jxent.categorical_cross_entropy`.

    Called as ``loss_fn(probabilities, labels, where=None)`` with integer class indices ``[...]`` or target
    distributions like ``probabilities``; the targets :math:`q` are built as in :class:`CrossEntropy`. The
    probabilities are used as given (no renormalisation); the log is clamped, so the loss is at most
    ``100 * sum(q)``.

    Attributes:
      axis: Class axis, or a tuple of axes flattened into one. Default ``-1``.
      weight: Per-class weights ``[num_classes]``, or ``None`` (default), as in :class:`CrossEntropy`.
      ignore_index: Label value whose examples give loss 0 and do not count in ``"mean"``, or ``None``
        (default). Integer labels only.
      label_smoothing: :math:`\\varepsilon \\in [0, 1]`, spread over the classes present in each row. Default
        ``0.0``.
      reduction: ``"none"`` (per example), ``"sum"`` or ``"mean"`` (default; over the examples that count).

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> loss_fn = jxent.losses.CategoricalCrossEntropy(reduction="none")
      >>> losses = loss_fn(jnp.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]), jnp.array([0, 2]))
      >>> [round(float(x), 4) for x in losses]  # -log 0.5, -log 0.8
      [0.6931, 0.2231]
    """

    fn = staticmethod(_probabilities.categorical_cross_entropy)
    axis: int | tuple[int, ...] = -1
    weight: _ArrayLike | _Sequence[_ArrayLike] | None = None
    ignore_index: int | None = None
    label_smoothing: float = 0.0
    reduction: _Reduction = "mean"


@_dataclasses.dataclass(frozen=True, kw_only=True)
class SigmoidFocalLoss(_Loss):
    """Elementwise sigmoid focal loss, :math:`\\alpha_t (1 - p_t)^\\gamma\\, \\mathrm{BCE}(x, y)` with
    :math:`p = \\sigma(x)`: :func:`jxent.sigmoid_focal_loss`.

    Called as ``loss_fn(logits, labels, where=None)`` with labels in ``[0, 1]`` (hard or soft) broadcastable to
    ``logits``; :math:`p_t = y p + (1-y)(1-p)` and :math:`\\alpha_t = \\alpha y + (1-\\alpha)(1-y)`
    (torchvision's semantics).

    Attributes:
      alpha: Weight of the positive class in ``[0, 1]``, or ``None`` (default: no weighting).
      gamma: Focusing parameter :math:`\\gamma \\ge 0`; ``gamma=0`` is binary cross-entropy. Default ``2.0``. A
        constant: no gradient flows to it.
      reduction: ``"none"`` (elementwise), ``"sum"`` or ``"mean"`` (default; over the unmasked elements).

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> per_element = jxent.losses.SigmoidFocalLoss(alpha=0.25, gamma=2.0, reduction="none")
      >>> easy, hard = per_element(jnp.array([3.0, -1.0]), jnp.array([1.0, 1.0]))
      >>> bce = jxent.sigmoid_binary_cross_entropy(jnp.array([3.0, -1.0]), jnp.array([1.0, 1.0]))
      >>> bool(easy / bce[0] < hard / bce[1])  # the well-classified element is down-weighted more
      True
    """

    fn = staticmethod(_focal.sigmoid_focal_loss)
    alpha: float | None = None
    gamma: float = 2.0
    reduction: _Reduction = "mean"


@_dataclasses.dataclass(frozen=True, kw_only=True)
class SoftmaxFocalLoss(_Loss):
    """Multi-class (softmax) focal loss, :math:`-\\sum_c \\alpha_c\\, t_c (1 - p_c)^\\gamma \\log p_c`:
    :func:`jxent.softmax_focal_loss`.

    Called as ``loss_fn(logits, labels, where=None)`` with integer class indices ``[...]`` or target
    distributions like ``logits``; for an integer label this is :math:`-\\alpha_y (1-p_y)^\\gamma \\log p_y`.

    Attributes:
      axis: Class axis. Default ``-1``.
      alpha: Per-class weights ``[num_classes]`` (or a scalar in ``[0, 1]``), or ``None`` (default). A constant
        (no gradient).
      gamma: :math:`\\gamma \\ge 0`; ``gamma=0`` is (weighted) softmax cross-entropy. Default ``2.0``. A constant
        (no gradient).
      ignore_index: Integer label value to ignore (loss 0, not counted in ``"mean"``), or ``None`` (default).
      label_smoothing: :math:`\\varepsilon \\in [0, 1]`, as in :class:`CrossEntropy`. Default ``0.0``.
      reduction: ``"none"`` (per example), ``"sum"`` or ``"mean"`` (default; over the examples that count;
        ``alpha`` is not part of the denominator, as in torchvision).

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
      >>> focal = jxent.losses.SoftmaxFocalLoss(gamma=0.0)  # gamma = 0: the cross-entropy
      >>> bool(jnp.isclose(focal(logits, labels), jxent.losses.CrossEntropy()(logits, labels)))
      True
    """

    fn = staticmethod(_focal.softmax_focal_loss)
    axis: int = -1
    alpha: _ArrayLike | _Sequence[_ArrayLike] | None = None
    gamma: float = 2.0
    ignore_index: int | None = None
    label_smoothing: float = 0.0
    reduction: _Reduction = "mean"


@_dataclasses.dataclass(frozen=True, kw_only=True)
class PolyLoss(_Loss):
    """Poly-1 loss, :math:`\\mathrm{CE} + \\epsilon \\sum_c t_c (1 - p_c)`: :func:`jxent.poly_loss_cross_entropy`.

    Called as ``loss_fn(logits, labels, where=None)`` with target distributions like ``logits`` or integer class
    indices ``[...]``.

    Attributes:
      epsilon: Coefficient :math:`\\epsilon` of the first polynomial term (2.0 for ImageNet classification in the
        paper). Default ``2.0``. A constant (no gradient).
      axis: Class axis, or a tuple of axes flattened into one. Default ``-1``.
      ignore_index: Integer label value to ignore (loss 0, not counted in ``"mean"``), or ``None`` (default).
      reduction: ``"none"`` (per example), ``"sum"`` or ``"mean"`` (default; over the examples that count).

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
      >>> p_y = jax.nn.softmax(logits)[jnp.arange(2), labels]
      >>> ce = jxent.losses.CrossEntropy()(logits, labels)
      >>> bool(jnp.isclose(jxent.losses.PolyLoss(epsilon=1.0)(logits, labels), ce + jnp.mean(1 - p_y)))
      True
    """

    fn = staticmethod(_robust.poly_loss_cross_entropy)
    epsilon: float = 2.0
    axis: int | tuple[int, ...] = -1
    ignore_index: int | None = None
    reduction: _Reduction = "mean"


@_dataclasses.dataclass(frozen=True, kw_only=True)
class GeneralizedCrossEntropy(_Loss):
    """Generalized cross-entropy for noisy labels, :math:`\\sum_c t_c (1 - p_c^{\\,q}) / q`:
    :func:`jxent.generalized_cross_entropy`.

    Called as ``loss_fn(logits, labels, where=None)`` with integer class indices ``[...]`` or target
    distributions like ``logits``. Interpolates between cross-entropy (:math:`q \\to 0`) and mean absolute error
    (:math:`q = 1`); bounded by :math:`1/q`.

    Attributes:
      q: :math:`q \\in (0, 1]` (0.7 in the paper). Default ``0.7``. A constant (no gradient).
      axis: Class axis, or a tuple of axes flattened into one. Default ``-1``.
      ignore_index: Integer label value to ignore (loss 0, not counted in ``"mean"``), or ``None`` (default).
      reduction: ``"none"`` (per example), ``"sum"`` or ``"mean"`` (default; over the examples that count).

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
      >>> p_y = jax.nn.softmax(logits)[jnp.arange(2), labels]
      >>> mae = jxent.losses.GeneralizedCrossEntropy(q=1.0, reduction="none")  # q = 1: 1 - p_y
      >>> bool(jnp.allclose(mae(logits, labels), 1 - p_y))
      True
    """

    fn = staticmethod(_robust.generalized_cross_entropy)
    q: float = 0.7
    axis: int | tuple[int, ...] = -1
    ignore_index: int | None = None
    reduction: _Reduction = "mean"


@_dataclasses.dataclass(frozen=True, kw_only=True)
class KLDivergence(_Loss):
    """Kullback-Leibler divergence, :math:`\\mathrm{KL}(t \\,\\|\\, q) = \\sum_c t_c (\\log t_c - \\log q_c)` in
    nats: :func:`jxent.kl_divergence`.

    Called as ``loss_fn(log_predictions, targets, where=None)``: predicted log-probabilities :math:`\\log q`
    first (``-inf`` allowed), then target probabilities :math:`t` (zeros allowed, :math:`0 \\log 0 = 0`).

    Attributes:
      axis: Class axis, or a tuple of axes flattened into one. Default ``-1``.
      reduction: ``"none"`` (per example), ``"sum"`` or ``"mean"`` (default; over examples).

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> loss_fn = jxent.losses.KLDivergence()
      >>> t = jnp.array([[0.5, 0.5, 0.0]])
      >>> float(loss_fn(jnp.log(t), t))  # KL(t || t) = 0, with 0 log 0 = 0
      0.0
      >>> round(float(loss_fn(jnp.log(jnp.array([[0.25, 0.75, 0.0]])), t)), 4)  # 0.5 log 2 + 0.5 log(2/3)
      0.1438
    """

    fn = staticmethod(_divergence.kl_divergence)
    axis: int | tuple[int, ...] = -1
    reduction: _Reduction = "mean"
