"""Independent float64 references for the jxent tests, in NumPy and SciPy only.

Nothing here uses jxent's losses or optax: every function is written from the textbook (or torch) formula,
evaluated in float64, so the tests compare two independent implementations. Only the tolerances come from jxent
(:mod:`jxent.testing.tolerances`, plain numbers), so that they are stated once. Inputs are converted with
``np.asarray(x, np.float64)``; a 16-bit array is therefore compared on exactly the values it holds.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from jxent.testing.tolerances import reference_tolerance


def tol(dtype) -> dict[str, float]:
    """``dict(rtol=..., atol=...)`` for a result of ``dtype`` against these references: the row of
    :data:`jxent.testing.tolerances.REFERENCE_TOLERANCES`, keyed by the dtype of the *result* being checked. Losses
    of 16-bit inputs are computed and returned in float32, so they use the float32 row (against the reference
    evaluated on the 16-bit-rounded inputs); ``softmax``/``log_softmax``/``logsumexp`` and gradients return the
    input dtype and use its row."""
    return reference_tolerance(dtype)


def f64(x) -> np.ndarray:
    """``x`` as a float64 NumPy array (16-bit inputs keep exactly the values they hold)."""
    return np.asarray(x).astype(np.float64)


# ----------------------------------------------------------------------------------------------------------------
# Axis handling
# ----------------------------------------------------------------------------------------------------------------


def class_axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        return (axis % ndim,)
    return tuple(a % ndim for a in axis)  # in the order given, as optax flattens them


def to_last(x, axis) -> np.ndarray:
    """Moves the class axes of ``x`` to the end (in the order given) and flattens them into one."""
    x = np.asarray(x)
    axes = class_axes(axis, x.ndim)
    batch = tuple(i for i in range(x.ndim) if i not in axes)
    y = np.transpose(x, batch + axes)
    return y.reshape((*y.shape[: len(batch)], -1))


def batch_mask_to_full(where, shape, axis) -> np.ndarray | None:
    """A ``where`` mask of the batch shape (or full shape) broadcast to ``shape``."""
    if where is None:
        return None
    where = np.asarray(where, bool)
    if where.ndim != len(shape):
        where = np.expand_dims(where, class_axes(axis, len(shape)))
    return np.broadcast_to(where, shape)


# ----------------------------------------------------------------------------------------------------------------
# Softmax family
# ----------------------------------------------------------------------------------------------------------------


def logsumexp(x, axis=-1, where=None):
    x = f64(x)
    if where is not None:
        x = np.where(batch_mask_to_full(where, x.shape, axis), x, -np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        return special.logsumexp(x, axis=axis)


def log_softmax(x, axis=-1):
    return special.log_softmax(f64(x), axis=axis)


def softmax(x, axis=-1):
    return special.softmax(f64(x), axis=axis)


def softmax_masked(x, where, axis=-1):
    """Softmax with ``where=False`` entries left out (probability 0); rows with no entry give 0."""
    x = f64(x)
    mask = batch_mask_to_full(where, x.shape, axis)
    xm = np.where(mask, x, -np.inf)
    m = np.max(xm, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(mask, np.exp(xm - m), 0.0)
    s = np.sum(e, axis=axis, keepdims=True)
    return np.where(s > 0, e / np.where(s > 0, s, 1.0), 0.0)


def soft_cap(x, cap):
    return cap * np.tanh(f64(x) / cap)


# ----------------------------------------------------------------------------------------------------------------
# Softmax cross-entropy
# ----------------------------------------------------------------------------------------------------------------


def _xlog_safe(q, log_p):
    """``q * log_p`` with ``0 * (-inf) = 0``."""
    return np.where(q == 0, 0.0, q * np.where(q == 0, 0.0, log_p))


def softmax_cross_entropy(
    logits,
    targets,
    axis=-1,
    where=None,
    *,
    weight=None,
    label_smoothing=0.0,
    z_loss=0.0,
    soft_cap_value=None,
    temperature=1.0,
):
    """Per-example ``-sum_c q_c log softmax(z)_c + z_loss * lse(z)^2`` with ``q_c = w_c ((1-eps) t_c + eps/K)``.

    ``z = cap * tanh(logits / cap) / T``; ``K`` is the number of present classes (finite logit, ``where=True``).
    Rows with no present class give 0.
    """
    z = f64(logits)
    t = np.broadcast_to(f64(targets), z.shape)
    mask = batch_mask_to_full(where, z.shape, axis)
    if soft_cap_value is not None:
        z = np.where(z == -np.inf, -np.inf, soft_cap(z, soft_cap_value))
    z = z / temperature
    z, t = to_last(z, axis), to_last(t, axis)
    if mask is not None:
        m = to_last(mask, axis)
        z = np.where(m, z, -np.inf)
        t = np.where(m, t, 0.0)
    present = z != -np.inf
    k = np.maximum(present.sum(-1, keepdims=True), 1)
    q = (1 - label_smoothing) * t + np.where(present, label_smoothing / k, 0.0)
    if weight is not None:
        q = q * f64(weight)
    counted = present.any(-1)
    zs = np.where(counted[..., None], z, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = special.logsumexp(zs, axis=-1, keepdims=True)
        log_p = zs - lse
    loss = -np.sum(_xlog_safe(q, log_p), axis=-1) + z_loss * lse[..., 0] ** 2
    return np.where(counted, loss, 0.0)


def one_hot(labels, num_classes):
    labels = np.asarray(labels)
    return (np.arange(num_classes) == labels[..., None]).astype(np.float64)


def integer_to_dense(labels, shape, axis):
    """One-hot targets of ``shape`` for integer labels of the batch shape, class axes at ``axis``.

    A tuple of class axes is flattened in the order given (as optax does), so a label is a flat index into them.
    """
    nd = len(shape)
    axes = class_axes(axis, nd)
    batch = tuple(i for i in range(nd) if i not in axes)
    num_classes = int(np.prod([shape[a] for a in axes]))
    oh = one_hot(labels, num_classes)  # [batch..., V]
    oh = oh.reshape(tuple(shape[b] for b in batch) + tuple(shape[a] for a in axes))
    perm = batch + axes
    inverse = np.argsort(perm)
    return np.transpose(oh, inverse)


def torch_cross_entropy(logits, labels, *, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """``torch.nn.functional.cross_entropy`` for ``[N, C]`` logits and integer labels, written out in NumPy.

    loss_i = (1 - eps) w[y_i] (-log p_{i,y_i}) + eps / C * sum_c w_c (-log p_{i,c}); 0 for ignored rows.
    mean = sum_i loss_i / sum_{i not ignored} w[y_i]; sum = sum_i loss_i.
    """
    z = f64(logits)
    y = np.asarray(labels)
    n, c = z.shape
    w = np.ones(c) if weight is None else f64(weight)
    logp = special.log_softmax(z, axis=-1)
    losses = np.zeros(n)
    denominator = 0.0
    for i in range(n):
        if ignore_index is not None and y[i] == ignore_index:
            continue
        nll = -logp[i, y[i]]
        smooth = -np.sum(w * logp[i]) / c
        losses[i] = (1 - label_smoothing) * w[y[i]] * nll + label_smoothing * smooth
        denominator += w[y[i]]
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / denominator


def torch_cross_entropy_probs(logits, targets, *, weight=None, label_smoothing=0.0, reduction="mean"):
    """``torch.nn.functional.cross_entropy`` with class-probability targets ``[N, C]``.

    loss_i = -sum_c w_c ((1 - eps) t_ic + eps / C) log p_ic; mean divides by N (the weights are not in it).
    """
    z = f64(logits)
    t = f64(targets)
    n, c = z.shape
    w = np.ones(c) if weight is None else f64(weight)
    t = (1 - label_smoothing) * t + label_smoothing / c
    losses = -np.sum(w * t * special.log_softmax(z, axis=-1), axis=-1)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / n


def cross_entropy_grad(logits, q, z_loss=0.0):
    """Closed form ``d CE / d z = (sum q + 2 z_loss lse) softmax(z) - q`` for a trailing class axis."""
    z = f64(logits)
    q = f64(q)
    lse = special.logsumexp(z, axis=-1, keepdims=True)
    return (q.sum(-1, keepdims=True) + 2 * z_loss * lse) * special.softmax(z, axis=-1) - q


# ----------------------------------------------------------------------------------------------------------------
# Sigmoid losses
# ----------------------------------------------------------------------------------------------------------------


def sigmoid_binary_cross_entropy(logits, labels, *, pos_weight=1.0, label_smoothing=0.0):
    x = f64(logits)
    y = f64(labels) * (1 - label_smoothing) + label_smoothing / 2
    pos = np.where(y == 0, 0.0, pos_weight * y * special.log_expit(x))
    neg = np.where(y == 1, 0.0, (1 - y) * special.log_expit(-x))
    return -(pos + neg)


def sigmoid_binary_cross_entropy_grad(logits, labels, *, pos_weight=1.0):
    x = f64(logits)
    y = f64(labels)
    return (1 - y) * special.expit(x) - pos_weight * y * special.expit(-x)


def sigmoid_focal_loss(logits, labels, *, alpha=None, gamma=2.0):
    """``alpha_t (1 - p_t)^gamma BCE`` with ``log(1 - p_t)`` evaluated in log space (stable for large |x|)."""
    x = f64(logits)
    y = np.broadcast_to(f64(labels), x.shape)
    ce = sigmoid_binary_cross_entropy(x, y)
    with np.errstate(divide="ignore"):
        log_y = np.log(y)
        log_1my = np.log1p(-y)
    log_one_minus_pt = np.logaddexp(log_y + special.log_expit(-x), log_1my + special.log_expit(x))
    factor = np.exp(gamma * log_one_minus_pt) if gamma != 0 else 1.0
    loss = ce * factor
    if alpha is not None:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss


def sigmoid_focal_grad_hard(logits, labels, *, alpha=None, gamma=2.0):
    """Closed form for hard labels: ``alpha_t s (1-p_t)^g (g p_t log p_t - (1-p_t))``, ``s = 2y - 1``."""
    x = f64(logits)
    y = f64(labels)
    s = 2 * y - 1
    p_t = special.expit(s * x)
    log_pt = special.log_expit(s * x)
    one_minus = special.expit(-s * x)
    alpha_t = 1.0 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
    return alpha_t * s * one_minus**gamma * (gamma * p_t * log_pt - one_minus)


# ----------------------------------------------------------------------------------------------------------------
# Softmax focal, PolyLoss, generalized cross-entropy
# ----------------------------------------------------------------------------------------------------------------


def softmax_focal_loss(logits, targets, *, alpha=None, gamma=2.0):
    """``-sum_c alpha_c t_c (1 - p_c)^gamma log p_c`` along the last axis (``targets`` dense)."""
    z = f64(logits)
    t = f64(targets)
    c = z.shape[-1]
    a = np.ones(c) if alpha is None else np.broadcast_to(f64(alpha), (c,))
    log_p = special.log_softmax(z, axis=-1)
    p = np.exp(log_p)
    return -np.sum(a * t * (1 - p) ** gamma * log_p, axis=-1)


def softmax_focal_grad_integer(logits, labels, *, alpha=None, gamma=2.0):
    """``alpha_y (1-p_y)^g (1 - g p_y log p_y / (1-p_y)) (p - e_y)``."""
    z = f64(logits)
    c = z.shape[-1]
    a = np.ones(c) if alpha is None else np.broadcast_to(f64(alpha), (c,))
    p = special.softmax(z, axis=-1)
    log_p = special.log_softmax(z, axis=-1)
    e = one_hot(labels, c)
    p_y = np.sum(p * e, -1, keepdims=True)
    log_p_y = np.sum(log_p * e, -1, keepdims=True)
    one_minus = np.sum(p * (1 - e), -1, keepdims=True)  # 1 - p_y without cancellation
    a_y = np.sum(a * e, -1, keepdims=True)
    factor = a_y * one_minus**gamma * (1 - gamma * p_y * log_p_y / one_minus)
    return factor * (p - e)


def poly_loss_cross_entropy(logits, targets, *, epsilon=2.0, axis=-1):
    z = to_last(f64(logits), axis)
    t = to_last(np.broadcast_to(f64(targets), np.shape(logits)), axis)
    log_p = special.log_softmax(z, axis=-1)
    return -np.sum(t * log_p, -1) + epsilon * np.sum(t * (1 - np.exp(log_p)), -1)


def generalized_cross_entropy(logits, targets, *, q=0.7, axis=-1):
    z = to_last(f64(logits), axis)
    t = to_last(np.broadcast_to(f64(targets), np.shape(logits)), axis)
    p = special.softmax(z, axis=-1)
    return np.sum(t * (1 - p**q) / q, -1)


def generalized_cross_entropy_grad_integer(logits, labels, *, q=0.7):
    z = f64(logits)
    p = special.softmax(z, axis=-1)
    e = one_hot(labels, z.shape[-1])
    p_y = np.sum(p * e, -1, keepdims=True)
    return p_y**q * (p - e)


# ----------------------------------------------------------------------------------------------------------------
# Divergences and smoothing
# ----------------------------------------------------------------------------------------------------------------


def kl_divergence(log_predictions, targets, axis=-1):
    """``sum_c rel_entr(t_c, q_c)`` with ``q = exp(log_predictions)`` (SciPy's ``0 log 0 = 0``)."""
    q = np.exp(f64(log_predictions))
    t = np.broadcast_to(f64(targets), q.shape)
    return np.sum(special.rel_entr(t, q), axis=axis)


def kl_divergence_with_log_targets(log_predictions, log_targets, axis=-1):
    return kl_divergence(log_predictions, np.exp(f64(log_targets)), axis=axis)


def entropy(p, axis=-1):
    return np.sum(special.entr(f64(p)), axis=axis)


def js_divergence(p, q, axis=-1):
    p = f64(p)
    q = f64(q)
    m = (p + q) / 2
    return 0.5 * np.sum(special.rel_entr(p, m) + special.rel_entr(q, m), axis=axis)


def smooth_labels(labels, alpha, num_classes):
    return (1 - alpha) * f64(labels) + alpha / num_classes


# ----------------------------------------------------------------------------------------------------------------
# Losses on probabilities (torch's clamped logarithm)
# ----------------------------------------------------------------------------------------------------------------


def clamped_log(p):
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(f64(p)), -100.0)


def binary_cross_entropy(p, y, *, label_smoothing=0.0):
    """``torch.nn.functional.binary_cross_entropy``: ``-(y max(log p, -100) + (1-y) max(log(1-p), -100))``."""
    p = f64(p)
    y = f64(y) * (1 - label_smoothing) + label_smoothing / 2
    return -(y * clamped_log(p) + (1 - y) * clamped_log(1 - p))


def categorical_cross_entropy(p, q, axis=-1):
    """``-sum_c q_c max(log p_c, -100)`` with ``0 log 0 = 0``."""
    log_p = to_last(clamped_log(p), axis)
    q = to_last(np.broadcast_to(f64(q), np.shape(p)), axis)
    return -np.sum(_xlog_safe(q, log_p), axis=-1)


def generalized_kl_divergence(log_predictions, targets):
    """``sum_c t log(t / q) - t + q`` (SciPy's ``kl_div``, elementwise) along the last axis."""
    return np.sum(special.kl_div(f64(targets), np.exp(f64(log_predictions))), axis=-1)
