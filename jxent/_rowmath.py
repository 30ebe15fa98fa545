"""The per-row maths of every softmax loss: one home for the dense, fused and vocabulary-sharded paths.

**Softmax statistics.** A row of logits :math:`z` is summarised by :class:`RowStats`, its maximum :math:`m` and
:math:`s = \\sum_c e^{\\mathrm{shift}(z_c)}`, where :func:`shift` is :math:`z - m` with the limits spelled out
(``+inf`` entries of a row whose maximum is ``+inf`` shift to 0 and the others to ``-inf``; a row with no present
class, all ``-inf``, is left as it is). Then :math:`\\mathrm{lse} = m + \\log s`. Statistics of two parts of a row
combine with :func:`merge`, :math:`M = \\max(m_1, m_2)`, :math:`s = s_1 e^{m_1 - M} + s_2 e^{m_2 - M}`: the blockwise
(online) log-sum-exp of the fused loss and the cross-device combine of the sharded losses are this one merge.

**Targets.** Integer labels give the target vector :math:`q = a\\,\\mathrm{onehot}(y) + b\\,\\sigma` with
:math:`\\sigma_c = w_c [c \\text{ present}]` (:func:`integer_label_coefficients`): :math:`a = (1-\\varepsilon) w_y`,
:math:`b = \\varepsilon / K` over the :math:`K` present classes, as ``torch.nn.functional.cross_entropy``.

**The row loss and its gradient** (:func:`row_loss`, :func:`softmax_coefficient`, :func:`logit_gradient`):

.. math::
  \\ell = -a \\log p_y - b \\sum_c \\sigma_c \\log p_c + \\lambda_z \\mathrm{lse}^2, \\qquad
  \\frac{\\partial \\ell}{\\partial z} = \\Big(\\sum_c q_c + 2\\lambda_z \\mathrm{lse}\\Big)\\, p
  - a\\,\\mathrm{onehot}(y) - b\\,\\sigma,

with :math:`0 \\cdot \\log 0 = 0`. :func:`probabilities`, :func:`log_probabilities` and :func:`logsumexp_of`
carry the closed-form ``custom_jvp`` rules of the softmax, written once here.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax import lax

from jxent import _checks
from jxent._options import CrossEntropyOptions, OptionArrays, is_zero

__all__ = [
    "RowStats",
    "capped",
    "empty_stats",
    "entropy_of",
    "exp_offsets",
    "integer_label_coefficients",
    "integer_target_log_p",
    "log_probabilities",
    "logit_gradient",
    "logsumexp_of",
    "merge",
    "probabilities",
    "rescale",
    "rescale_moment",
    "row_loss",
    "row_stats",
    "shift",
    "shifted_exp",
    "shifted_moment",
    "softmax_coefficient",
    "target_mass",
    "transform_logits",
]

_UNDERFLOW = 1000.0  # exp(-1000) is 0 in float32 and float64


# --------------------------------------------------------------------------------------------------------------
# Softmax statistics
# --------------------------------------------------------------------------------------------------------------


def shift(x: jax.Array, m: jax.Array) -> jax.Array:
    """``x - m`` for entries ``x`` of a row with maximum ``m``, in the limit form.

    Finite ``m``: the usual shift. ``m = +inf``: 0 at the ``+inf`` entries, ``-inf`` elsewhere. ``m = -inf`` (no
    class present) or NaN: ``x`` unchanged, so the row stays ``-inf`` or NaN.
    """
    finite = jnp.isfinite(m)
    limit = jnp.where(x == jnp.inf, 0.0, -jnp.inf).astype(x.dtype)
    return jnp.where(finite, x - jnp.where(finite, m, 0.0), jnp.where(m == jnp.inf, limit, x))


class RowStats(NamedTuple):
    """Softmax statistics of rows: the maximum (no gradient) and ``total = sum exp(shift(z))``.

    ``total`` is 0 for a row with no present class and counts the ``+inf`` entries of a row whose maximum is
    ``+inf``; NaN propagates through it.
    """

    max: jax.Array
    total: jax.Array

    @property
    def present(self) -> jax.Array:
        """Rows with a class of nonzero probability (NaN rows count, so that NaN propagates)."""
        return self.total != 0

    @property
    def log_total(self) -> jax.Array:
        return jnp.log(jnp.where(self.present, self.total, 1.0))

    def shift(self, x: jax.Array) -> jax.Array:
        return shift(x, self.max)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log-probabilities of entries ``x`` of the rows (``-inf`` where nothing is present)."""
        return jnp.where(self.present, self.shift(x) - self.log_total, -jnp.inf)

    @property
    def lse(self) -> jax.Array:
        """The log-sum-exp: ``+inf`` if an entry is ``+inf``, ``-inf`` if none is present."""
        offset = jnp.where(jnp.isfinite(self.max), self.max, 0.0)
        lse = jnp.where(self.present, offset + self.log_total, -jnp.inf)
        return jnp.where(self.max == jnp.inf, jnp.inf, lse)


def _weighted_tangent(p: jax.Array, dz: jax.Array) -> jax.Array:
    """``p * dz`` with 0 where ``p`` is 0 (an absent class's tangent may be anything, even ``inf``)."""
    return jnp.where(p == 0, 0.0, p * dz)


def exp_offsets(m: jax.Array, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """Per-row ``(offset, d)`` with ``exp(min(z - offset, d) - d) = exp(shift(z, m))`` for the entries of a row with
    maximum ``m``: ``(m, 0)`` for a finite maximum; for a ``+inf`` one, the largest float and 1000, so the ``+inf``
    entries give 1 and the others 0; ``(0, 0)`` for a row with no class present (all ``-inf``: 0)."""
    finite, pos_inf = jnp.isfinite(m), m == jnp.inf
    offset = jnp.where(pos_inf, jnp.finfo(dtype).max, jnp.where(finite, m, 0.0)).astype(dtype)
    return offset, jnp.where(pos_inf, _UNDERFLOW, 0.0).astype(dtype)


@jax.custom_jvp
def shifted_exp(z: jax.Array, offset: jax.Array, d: jax.Array) -> jax.Array:
    """``exp(shift(z, m))`` without a select, from the row's :func:`exp_offsets` (plain arithmetic, which XLA:CPU
    fuses into reductions and which costs two operations per element more than ``exp(z - m)``, not four).

    ``offset`` and ``d`` are constants (they come from the maximum, which has no gradient): the derivative is
    ``exp(shift(z, m)) dz``, written out because ``min`` would halve it at the maximum.
    """
    return jnp.exp(jnp.minimum(z - offset, d) - d)


@shifted_exp.defjvp
def _shifted_exp_jvp(primals, tangents):
    z, offset, d = primals
    e = shifted_exp(z, offset, d)
    return e, _weighted_tangent(e, tangents[0])


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _exp_sum(z: jax.Array, m: jax.Array, select_free: bool) -> jax.Array:
    """``sum(exp(shift(z, m)))`` over the last axis (kept), in one of two forms that XLA:CPU fuses differently.

    ``select_free``: :func:`shifted_exp`. XLA:CPU fuses a reduction with its producers only when they are plain
    arithmetic, so this sum costs one read of ``z`` and nothing is written; right when the softmax is not needed
    again, or a ``[..., V]`` target is read anyway (the probability-label kernel, the fused blocks).

    Otherwise ``exp(shift(z, m))`` with its selects, the very expression :func:`probabilities` reads: XLA computes
    it once, stores it and reads it back for the gradient, one exponential per element instead of two (the
    integer-label kernel and the softmax functions). The derivative is written out either way (``min`` would halve
    it at the maximum).
    """
    if not select_free:
        return jnp.sum(jnp.exp(shift(z, m)), axis=-1, keepdims=True)
    return jnp.sum(shifted_exp(z, *exp_offsets(m, z.dtype)), axis=-1, keepdims=True)


@_exp_sum.defjvp
def _exp_sum_jvp(select_free, primals, tangents):
    z, m = primals
    e = jnp.exp(shift(z, m))
    return _exp_sum(z, m, select_free), jnp.sum(_weighted_tangent(e, tangents[0]), axis=-1, keepdims=True)


def row_stats(z: jax.Array, *, keepdims: bool = True, select_free: bool = True) -> RowStats:
    """:class:`RowStats` of ``z`` along its last axis (kept with size 1 when ``keepdims``); ``select_free`` picks
    the form of the sum that suits the caller's fusion (see :func:`_exp_sum`), the values are the same."""
    m = lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    total = _exp_sum(z, m, select_free)
    if not keepdims:
        m, total = m[..., 0], total[..., 0]
    return RowStats(m, total)


def rescale(stats: RowStats, new_max: jax.Array) -> jax.Array:
    """``stats.total`` relative to a maximum ``new_max >= stats.max``: ``total * exp(shift(max, new_max))``."""
    return stats.total * jnp.exp(shift(stats.max, new_max))


def merge(a: RowStats, b: RowStats) -> RowStats:
    """The statistics of the union of two parts of the same rows (the online log-sum-exp step)."""
    m = jnp.maximum(a.max, b.max)
    return RowStats(m, rescale(a, m) + rescale(b, m))


def shifted_moment(z: jax.Array, stats: RowStats) -> jax.Array:
    """:math:`\\sum_c e^{z_c - m} (z_c - m)` along the last axis (not kept), with :math:`0 \\cdot \\infty = 0` (absent
    classes) and the limits of :func:`shift`. Every term lies in :math:`[-1/e, 0]`, so the entropy
    :func:`entropy_of` has no cancellation even for logits of magnitude :math:`10^4`."""
    m = stats.max[..., None] if stats.max.ndim == z.ndim - 1 else stats.max
    s = shift(z, m)
    e = jnp.exp(s)
    return jnp.sum(jnp.where(e == 0, 0.0, e * s), axis=-1)


def rescale_moment(moment: jax.Array, stats: RowStats, new_max: jax.Array) -> jax.Array:
    """A :func:`shifted_moment` relative to a maximum ``new_max >= stats.max``:
    :math:`e^{m - M} (\\mu + (m - M) s)`."""
    d = jnp.where(jnp.isfinite(stats.max) & jnp.isfinite(new_max), stats.max - new_max, 0.0)
    return jnp.exp(shift(stats.max, new_max)) * (moment + d * stats.total)


def entropy_of(stats: RowStats, moment: jax.Array) -> jax.Array:
    """:math:`H = -\\sum_c p_c \\log p_c = \\log s - \\mu / s` from the row statistics and :func:`shifted_moment`
    (0 for a row with no class present)."""
    total = jnp.where(stats.present, stats.total, 1.0)
    return jnp.where(stats.present, stats.log_total - moment / total, 0.0)


def empty_stats(shape: tuple[int, ...], dtype: Any) -> RowStats:
    """The statistics of rows with no class yet (the identity of :func:`merge`)."""
    return RowStats(jnp.full(shape, -jnp.inf, dtype), jnp.zeros(shape, dtype))


# Closed-form derivatives. ``stats`` are the statistics of ``z`` (without gradient): each rule is the whole
# derivative in ``z``, so ``grad``, ``jvp``, ``vmap`` and ``jax.hessian`` compose and never differentiate
# ``exp(z - max)`` of a non-finite value.


def _probabilities(z: jax.Array, stats: RowStats) -> jax.Array:
    return jnp.exp(stats.shift(z)) / jnp.where(stats.present, stats.total, 1.0)


@jax.custom_jvp
def probabilities(z: jax.Array, stats: RowStats) -> jax.Array:
    """``softmax(z)`` along the last axis, given ``stats = row_stats(z)``: ``d p = p (dz - p . dz)``."""
    return _probabilities(z, stats)


@probabilities.defjvp
def _probabilities_jvp(primals, tangents):
    z, stats = primals
    p = probabilities(z, stats)
    pdz = _weighted_tangent(p, tangents[0])
    return p, pdz - p * jnp.sum(pdz, axis=-1, keepdims=True)


@jax.custom_jvp
def log_probabilities(z: jax.Array, stats: RowStats) -> jax.Array:
    """``log_softmax(z)`` given its statistics: ``d log p = dz - p . dz``, 0 at ``-inf`` outputs."""
    return stats.log_prob(z)


@log_probabilities.defjvp
def _log_probabilities_jvp(primals, tangents):
    z, stats = primals
    log_p = log_probabilities(z, stats)
    mean_dz = jnp.sum(_weighted_tangent(probabilities(z, stats), tangents[0]), axis=-1, keepdims=True)
    return log_p, jnp.where(log_p == -jnp.inf, 0.0, tangents[0] - mean_dz)


@jax.custom_jvp
def logsumexp_of(z: jax.Array, stats: RowStats) -> jax.Array:
    """``stats.lse`` (class axis kept) with the derivative ``softmax(z) . dz``."""
    return stats.lse


@logsumexp_of.defjvp
def _logsumexp_of_jvp(primals, tangents):
    z, stats = primals
    p = probabilities(z, stats)
    return logsumexp_of(z, stats), jnp.sum(_weighted_tangent(p, tangents[0]), axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------------------------
# Logit transforms and targets
# --------------------------------------------------------------------------------------------------------------


def capped(z: jax.Array, cap: Any, *, may_be_inf: bool = False) -> jax.Array:
    """``cap * tanh(z / cap)``, with ``-inf`` (an absent class) kept ``-inf``.

    ``may_be_inf``: ``cap`` is traced and may be ``inf``, whose limit (no capping) is then taken.
    """
    if may_be_inf:
        no_cap = jnp.isinf(cap)
        safe = jnp.where(no_cap, 1.0, cap)
        out = jnp.where(no_cap, z, safe * jnp.tanh(z / safe))
    else:
        out = cap * jnp.tanh(z / cap)
    return jnp.where(z == -jnp.inf, -jnp.inf, out)


class TransformFlags(Protocol):
    """Which logit transforms apply (:class:`jxent._options.CrossEntropyOptions` or a kernel configuration)."""

    @property
    def has_cap(self) -> bool: ...

    @property
    def has_temperature(self) -> bool: ...

    @property
    def cap_is_traced(self) -> bool: ...


def transform_logits(x: jax.Array, flags: TransformFlags, arrays: OptionArrays | None = None) -> jax.Array:
    """Soft-capping then temperature, in the compute dtype: ``cap * tanh(x / cap) / T``; ``-inf`` stays ``-inf``.

    ``arrays`` holds the options as constants (:meth:`CrossEntropyOptions.arrays`); built here from ``flags``
    when they are the options and ``arrays`` is not given.
    """
    z = x.astype(_checks.compute_dtype(x.dtype))
    if not (flags.has_cap or flags.has_temperature):
        return z
    if arrays is None:
        if not isinstance(flags, CrossEntropyOptions):
            raise TypeError("transform_logits: a kernel configuration must pass its option arrays.")
        arrays = flags.arrays(z.dtype)
    if flags.has_cap:
        z = capped(z, arrays.soft_cap.astype(z.dtype), may_be_inf=flags.cap_is_traced)
    if flags.has_temperature:
        z = z / arrays.temperature.astype(z.dtype)
    return z


def integer_label_coefficients(
    labels: jax.Array,
    num_classes: int,
    *,
    class_weight: jax.Array | None,
    label_smoothing: Any,
    num_present: Any,
    ignore_index: int | None,
    counted: jax.Array,
    dtype: Any,
) -> tuple[jax.Array, jax.Array | None, jax.Array, jax.Array]:
    """Per-row coefficients of the integer-label target vector ``q = a onehot(y) + b sigma``.

    Args:
      labels: Integer labels ``[batch...]``.
      num_classes: ``V``.
      class_weight: ``[V]`` class weights or ``None`` (all 1).
      label_smoothing: ``eps``.
      num_present: ``K``, the number of classes the smoothing mass is spread over (``[batch...]`` or scalar).
      ignore_index: Label value whose rows do not count, or ``None``.
      counted: ``[batch...]`` rows that count before looking at labels.
      dtype: Compute dtype.

    Returns:
      ``(a, b, counted, example_weight)``: ``a = (1 - eps) w_y`` (NaN for an out-of-range label, 0 for rows that
      do not count), ``b = eps / K`` (``None`` when ``eps`` is 0; 0 for rows that do not count), the updated
      ``counted`` mask and the weight of each row in the ``"mean"`` denominator (``w_y``).
    """
    in_range = (labels >= 0) & (labels < num_classes)
    if ignore_index is not None:
        counted = counted & ~_checks.is_ignored(labels, ignore_index)
    safe = jnp.where(in_range, labels, 0)
    w_y = jnp.ones(labels.shape, dtype) if class_weight is None else class_weight[safe].astype(dtype)
    eps = lax.stop_gradient(jnp.asarray(label_smoothing, dtype))
    a = w_y if is_zero(label_smoothing) else (1.0 - eps) * w_y
    a = jnp.where(counted, jnp.where(in_range, a, jnp.nan), 0.0)
    b = None
    if not is_zero(label_smoothing):
        b = jnp.where(counted, eps / jnp.maximum(jnp.asarray(num_present, dtype), 1.0), 0.0)
    example_weight = jnp.where(counted, jnp.where(in_range, w_y, 1.0), 0.0)
    return a, b, counted, example_weight


# --------------------------------------------------------------------------------------------------------------
# The row loss and its gradient
# --------------------------------------------------------------------------------------------------------------


def integer_target_log_p(
    *, a: jax.Array, log_p_y: jax.Array, b: jax.Array | None = None, spread_log_p: jax.Array | None = None
) -> jax.Array:
    """:math:`\\sum_c q_c \\log p_c` for ``q = a onehot(y) + b sigma``, given ``log p_y`` and
    ``spread_log_p`` :math:`= \\sum_c \\sigma_c \\log p_c`. A zero coefficient times an infinite log-probability
    is 0 (a class weight of 0 on an absent target class, say)."""
    q_log_p = jnp.where(a == 0, 0.0, a * log_p_y)
    if b is not None and spread_log_p is not None:
        q_log_p = q_log_p + jnp.where(b == 0, 0.0, b * spread_log_p)
    return q_log_p


def target_mass(*, a: jax.Array, b: jax.Array | None = None, spread_sum: jax.Array | None = None) -> jax.Array:
    """:math:`\\sum_c q_c = a + b \\sum_c \\sigma_c` for the integer-label target (``spread_sum`` goes with ``b``)."""
    if b is None:
        return a
    if spread_sum is None:
        raise ValueError("target_mass: `spread_sum` is needed with `b`.")
    return a + b * spread_sum


def row_loss(*, q_log_p: jax.Array, lse: jax.Array, z_loss: jax.Array | None, counted: jax.Array) -> jax.Array:
    """``-sum_c q_c log p_c + z_loss lse**2`` per row, 0 (whatever the inputs hold) for rows that do not count."""
    loss = 0.0 - q_log_p
    if z_loss is not None:
        loss = loss + z_loss * jnp.square(lse)  # rows that do not count are zeroed below
    return jnp.where(counted, loss, 0.0)


def softmax_coefficient(
    *, target_mass: jax.Array, lse: jax.Array, z_loss: jax.Array | None, counted: jax.Array
) -> jax.Array:
    """``sum(q) + 2 z_loss lse``: the factor of ``softmax(z)`` in ``dloss/dz`` (0 for rows that do not count)."""
    c = target_mass
    if z_loss is not None:
        c = c + 2.0 * z_loss * jnp.where(counted & jnp.isfinite(lse), lse, 0.0)
    return jnp.where(counted, c, 0.0)


def logit_gradient(
    *,
    coef: jax.Array,
    p: jax.Array,
    a: jax.Array,
    is_target: jax.Array,
    b: jax.Array | None = None,
    spread: Any = None,
) -> jax.Array:
    """``dloss/dz = coef p - a onehot(y) - b sigma`` for rows ``[..., V]`` (``coef``, ``a``, ``b``: ``[..., 1]``)."""
    g = coef * p - jnp.where(is_target, a, 0.0)
    if b is not None and spread is not None:
        g = g - b * spread
    return g
