"""Cross-entropy variants for imbalanced or noisy labels: PolyLoss and generalized cross-entropy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jxent import _axes, _checks
from jxent._options import CrossEntropyOptions
from jxent._targets import make_targets, prepare_rows
from jxent._typing import Reduction
from jxent.cross_entropy import probability_row_losses
from jxent.reduction import reduce_loss
from jxent.softmax import log_softmax_last, softmax_last

__all__ = ["generalized_cross_entropy", "poly_loss_cross_entropy"]


def poly_loss_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    epsilon: ArrayLike = 2.0,
    axis: _axes.Axis | None = -1,
    where: ArrayLike | None = None,
    ignore_index: int | None = None,
    reduction: Reduction = "none",
) -> jax.Array:
    """Poly-1 loss: :math:`\\mathrm{CE} + \\epsilon \\sum_c t_c (1 - p_c)`.

    Drop-in for :func:`optax.losses.poly_loss_cross_entropy` (probability labels); integer class indices of the
    batch shape are accepted too. Gradient: :math:`(p - t) - \\epsilon\\, p \\odot (t - \\langle t, p\\rangle)`.

    Args:
      logits: Logits ``[..., num_classes]``.
      labels: Target distributions like ``logits``, or integer class indices ``[...]``.
      epsilon: Coefficient of the first polynomial term (2.0 for ImageNet classification in the paper). A constant
        (no gradient).
      axis: Class axis or axes.
      where: Boolean mask of ``logits``' shape or its batch shape.
      ignore_index: Integer label value to ignore.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over the examples that count).

    References:
      Leng et al., `PolyLoss <https://arxiv.org/abs/2204.12511>`_, 2022.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> logits, labels = jnp.array([[2.0, 0.0]]), jnp.array([[1.0, 0.0]])
      >>> print(np.asarray(jxent.poly_loss_cross_entropy(logits, labels, epsilon=1.0)).round(4))
      [0.2461]
    """
    options = CrossEntropyOptions(reduction=reduction, ignore_index=ignore_index)
    rows = prepare_rows(logits, axis=axis, where=where)
    targets = make_targets(rows, labels, class_weight=None, label_smoothing=0.0, ignore_index=ignore_index)
    z = jnp.where(targets.counted[..., None], rows.z, 0.0)
    p = softmax_last(z)
    eps = lax.stop_gradient(jnp.asarray(epsilon, z.dtype))  # a constant, like every hyperparameter
    losses = probability_row_losses(rows, targets.q, targets.counted, options) + eps * jnp.sum(
        targets.q * (1.0 - p), axis=-1
    )
    return reduce_loss(losses, weights=targets.counted, reduction=reduction)


def generalized_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    q: ArrayLike = 0.7,
    axis: _axes.Axis | None = -1,
    where: ArrayLike | None = None,
    ignore_index: int | None = None,
    reduction: Reduction = "none",
) -> jax.Array:
    """Generalized cross-entropy for noisy labels: :math:`\\sum_c t_c \\frac{1 - p_c^{\\,q}}{q}`.

    Interpolates between cross-entropy (:math:`q \\to 0`) and mean absolute error (:math:`q = 1`); bounded by
    :math:`1/q`, hence robust to mislabelled examples. Computed as :math:`-\\mathrm{expm1}(q \\log p_c)/q` from
    the stable log-softmax. Gradient for an integer label: :math:`p_y^{\\,q}\\,(p - e_y)`.

    Args:
      logits: Logits ``[..., num_classes]``.
      labels: Integer class indices ``[...]`` or target distributions like ``logits``.
      q: :math:`q \\in (0, 1]` (0.7 in the paper). A constant (no gradient).
      axis: Class axis or axes.
      where: Boolean mask of ``logits``' shape or its batch shape.
      ignore_index: Integer label value to ignore.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over the examples that count).

    References:
      Zhang and Sabuncu, `Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels
      <https://arxiv.org/abs/1805.07836>`_, 2018.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> print(np.asarray(jxent.generalized_cross_entropy(jnp.array([[2.0, 0.0]]), jnp.array([0]), q=0.7)).round(4))
      [0.1215]
    """
    _checks.check_scalar_range(q, "q", low=0.0, high=1.0, low_open=True)
    CrossEntropyOptions(reduction=reduction, ignore_index=ignore_index)
    rows = prepare_rows(logits, axis=axis, where=where)
    targets = make_targets(rows, labels, class_weight=None, label_smoothing=0.0, ignore_index=ignore_index)
    z = jnp.where(targets.counted[..., None], rows.z, 0.0)
    log_p = log_softmax_last(z)
    qq = lax.stop_gradient(jnp.asarray(q, z.dtype))
    losses = jnp.sum(targets.q * (-jnp.expm1(qq * log_p) / qq), axis=-1)
    return reduce_loss(losses, weights=targets.counted, reduction=reduction)
