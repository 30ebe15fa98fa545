"""KL and generalized Jensen-Shannon divergences between two linear heads over one vocabulary, blockwise.

A student head :math:`z^s = h^s W^s + b^s` and a teacher head :math:`z^t = h^t W^t + b^t` (both soft-capped and
divided by the temperature) are one fused :class:`~jxent.fused.objective.Objective` with two heads and two stages:

1. the softmax statistics of both rows (:class:`jxent._rowmath.RowStats`, merged by the online log-sum-exp);
2. with both normalisers known, :math:`\\log p_c = (z_c - m) - \\log s` exactly per block, and the divergence as a
   sum of elementwise terms. The shifted form keeps :math:`\\log p^t_c - \\log p^s_c` free of cancellation even for
   logits of magnitude :math:`10^4`, and a row whose heads agree gives exactly 0.

Gradients, for a cotangent :math:`g` of the row's divergence and :math:`r_c = \\log p^t_c - \\log p^s_c`:

* forward :math:`\\mathrm{KL}(p^t \\| p^s)`: :math:`\\partial/\\partial z^s = g (p^s - p^t)`,
  :math:`\\partial/\\partial z^t = g\\, p^t (r - \\mathrm{KL})`;
* reverse :math:`\\mathrm{KL}(p^s \\| p^t)`: the same with the heads swapped;
* generalized JS with :math:`m = \\beta p^t + (1-\\beta) p^s`,
  :math:`J = \\beta \\mathrm{KL}(p^t \\| m) + (1 - \\beta) \\mathrm{KL}(p^s \\| m)`:
  :math:`\\partial/\\partial z^s = g (1-\\beta) p^s (\\log p^s - \\log m - \\mathrm{KL}(p^s \\| m))`, and for the
  teacher :math:`g \\beta p^t (\\log p^t - \\log m - \\mathrm{KL}(p^t \\| m))`.

The divergence returned is clamped at 0 (it is non-negative; rounding could leave :math:`-10^{-7}`); the gradient is
that of the unclamped sum.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jxent._options import OptionArrays
from jxent._rowmath import RowStats, empty_stats, exp_offsets, merge, row_stats, shifted_exp, transform_logits
from jxent._typing import Reduction, Schedule, WeightLayout
from jxent.fused.blocks import transformed
from jxent.fused.config import FusedConfig
from jxent.fused.kernel import compute
from jxent.fused.objective import Objective
from jxent.fused.prepare import prepare_pair

__all__ = ["Divergence", "check_beta", "linear_js_divergence", "linear_kl_divergence"]

KINDS = ("kl", "reverse_kl", "js")


class _Stats(NamedTuple):
    student: RowStats
    teacher: RowStats


class _Done(NamedTuple):
    student: RowStats
    teacher: RowStats
    parts: tuple  # per-row sums of stage 2 (one for KL, two for JS)
    value: jax.Array  # the unclamped divergence


class _Coefficients(NamedTuple):
    g: jax.Array
    student: RowStats
    teacher: RowStats
    parts: tuple


def _log_p(z: jax.Array, stats: RowStats) -> jax.Array:
    """Log-probabilities of a block from the row's statistics: ``(z - m) - log s`` (the shifted form)."""
    offset, _ = exp_offsets(stats.max, z.dtype)
    return (z - offset[:, None]) - stats.log_total[:, None]


def _p(z: jax.Array, stats: RowStats) -> jax.Array:
    offset, d = exp_offsets(stats.max, z.dtype)
    return shifted_exp(z, offset[:, None], d[:, None]) / jnp.where(stats.present, stats.total, 1.0)[:, None]


def _xlog_ratio(p: jax.Array, log_a: jax.Array, log_b: jax.Array, shift: Any = 0.0) -> jax.Array:
    """``p (log_a - log_b - shift)`` with 0 where ``p`` is 0. The logs are replaced by 0 there first, so that no
    ``-inf - -inf`` reaches a derivative either (second order differentiates these forward expressions)."""
    absent = p == 0
    log_a, log_b = (jnp.where(absent, 0.0, x) for x in (log_a, log_b))
    return jnp.where(absent, 0.0, p * (log_a - log_b - shift))


def _log_mixture(lpt: jax.Array, lps: jax.Array, pt: jax.Array, ps: jax.Array, beta: float) -> jax.Array:
    """:math:`\\log(\\beta p^t + (1 - \\beta) p^s)` (0 where both are 0, where it is never used)."""
    neither = (pt == 0) & (ps == 0)
    lpt, lps = (jnp.where(neither, 0.0, x) for x in (lpt, lps))
    return jnp.logaddexp(lpt + math.log(beta), lps + math.log1p(-beta))


@dataclasses.dataclass(frozen=True)
class Divergence(Objective):
    """A divergence between heads ``(student, teacher)``: ``kind`` in :data:`KINDS`, ``beta`` for ``"js"``."""

    kind: str = "kl"
    beta: float = 0.5

    num_heads = 2
    num_stages = 2

    def init(self, cfg: FusedConfig, stage: int, rows: int) -> Any:
        if stage == 0:
            return _Stats(empty_stats((rows,), cfg.acc_dtype), empty_stats((rows,), cfg.acc_dtype))
        return tuple(jnp.zeros((rows,), cfg.acc_dtype) for _ in range(2 if self.kind == "js" else 1))

    def _terms(self, zs: jax.Array, zt: jax.Array, ctx: _Stats) -> tuple[tuple, Any]:
        """Elementwise ``(parts, log m)`` of the divergence of a block (``log m`` only for JS)."""
        lps, lpt = _log_p(zs, ctx.student), _log_p(zt, ctx.teacher)
        ps, pt = _p(zs, ctx.student), _p(zt, ctx.teacher)
        if self.kind == "kl":
            return (_xlog_ratio(pt, lpt, lps),), None
        if self.kind == "reverse_kl":
            return (_xlog_ratio(ps, lps, lpt),), None
        log_m = _log_mixture(lpt, lps, pt, ps, self.beta)
        return (_xlog_ratio(pt, lpt, log_m), _xlog_ratio(ps, lps, log_m)), log_m

    def block(self, cfg, arrays: OptionArrays, stage, xs, v0, valid, ctx, cls) -> Any:
        zs, zt = (transform_logits(x, cfg, arrays) for x in xs)
        if valid is not None:
            zs, zt = (jnp.where(valid[None, :], z, -jnp.inf) for z in (zs, zt))
        if stage == 0:
            return _Stats(row_stats(zs, keepdims=False), row_stats(zt, keepdims=False))
        parts, _ = self._terms(zs, zt, ctx)
        return tuple(jnp.sum(p, axis=1) for p in parts)

    def merge(self, stage: int, acc: Any, part: Any) -> Any:
        if stage == 0:
            return _Stats(merge(acc.student, part.student), merge(acc.teacher, part.teacher))
        return tuple(a + b for a, b in zip(acc, part, strict=True))

    def finish(self, cfg, arrays: OptionArrays, stage, acc, ctx, cls) -> Any:
        if stage == 0:
            return _Stats(cfg.group.combine(acc.student, ())[0], cfg.group.combine(acc.teacher, ())[0])
        parts = tuple(cfg.group.sum_slices(p) for p in acc)
        if self.kind == "js":
            value = self.beta * parts[0] + (1.0 - self.beta) * parts[1]
        else:
            value = parts[0]
        return _Done(ctx.student, ctx.teacher, parts, value)

    def outputs(self, ctx: _Done) -> tuple[jax.Array, ...]:
        return (jnp.maximum(ctx.value, 0.0),)

    def count(self, ctx: _Done) -> jax.Array:
        return jnp.ones(ctx.value.shape, ctx.value.dtype)

    def cotangents(self, cfg: FusedConfig, ctx: _Done, cts: tuple) -> _Coefficients:
        return _Coefficients(cts[0].astype(cfg.acc_dtype), ctx.student, ctx.teacher, ctx.parts)

    def grad_block(self, cfg, arrays: OptionArrays, xs, v0, valid, coefs: _Coefficients, cls, token_mask) -> tuple:
        g = coefs.g if token_mask is None else jnp.where(token_mask, coefs.g, 0.0)
        g = g[:, None]
        (zs, pull_s), (zt, pull_t) = (transformed(cfg, arrays, x) for x in xs)
        stats = _Stats(coefs.student, coefs.teacher)
        lps, lpt = _log_p(zs, stats.student), _log_p(zt, stats.teacher)
        ps, pt = _p(zs, stats.student), _p(zt, stats.teacher)
        parts = tuple(p[:, None] for p in coefs.parts)
        if self.kind == "kl":
            ds = g * (ps - pt)
            dt = g * _xlog_ratio(pt, lpt, lps, parts[0])
        elif self.kind == "reverse_kl":
            dt = g * (pt - ps)
            ds = g * _xlog_ratio(ps, lps, lpt, parts[0])
        else:
            log_m = _log_mixture(lpt, lps, pt, ps, self.beta)
            ds = (1.0 - self.beta) * g * _xlog_ratio(ps, lps, log_m, parts[1])
            dt = self.beta * g * _xlog_ratio(pt, lpt, log_m, parts[0])
        if valid is not None:
            ds, dt = (jnp.where(valid[None, :], d, 0.0) for d in (ds, dt))
        return (ds if pull_s is None else pull_s(ds), dt if pull_t is None else pull_t(dt))


def _run(arguments: dict[str, Any], objective: Divergence) -> jax.Array:
    loss, _ = compute(prepare_pair(arguments, objective), arguments["reduction"])
    return loss


def linear_kl_divergence(
    hidden: ArrayLike,
    weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    teacher_bias: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    soft_cap: ArrayLike | None = None,
    reverse: bool = False,
    where: ArrayLike | None = None,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
) -> jax.Array:
    """Per-token KL divergence between a teacher head and a student head over one vocabulary, without the logits.

    .. math::
      \\mathrm{KL}(p^t \\| p^s) = \\sum_c p^t_c (\\log p^t_c - \\log p^s_c), \\qquad
      p^s = \\mathrm{softmax}\\Big(\\frac{h W + b}{T}\\Big),\\quad
      p^t = \\mathrm{softmax}\\Big(\\frac{h^t W^t + b^t}{T}\\Big),

    or :math:`\\mathrm{KL}(p^s \\| p^t)` with ``reverse=True``. Equal to
    ``jxent.kl_divergence(log_softmax(student_logits), softmax(teacher_logits))`` (its arguments swapped for
    ``reverse``), computed blockwise in two passes over the vocabulary (the module ``jxent.fused.distillation``
    explains them), never forming either ``[tokens, V]`` set of logits. Never negative: rounding is clamped at 0.

    Gradients reach the student and the teacher inputs alike (``jax.custom_vjp``, computed blockwise); to freeze the
    teacher, pass it through ``jax.lax.stop_gradient``, and XLA drops its gradient blocks.

    Args:
      hidden: Student hidden states ``[..., D]`` (float32, 16-bit or, with x64, float64; 16-bit inputs are computed
        with float32 accumulation).
      weight: Student output matrix ``[D, V]`` (``[V, D]`` with ``weight_layout="vd"``).
      teacher_hidden: Teacher hidden states ``[..., D_t]`` of the same batch shape (``D_t`` may differ from ``D``).
      teacher_weight: Teacher output matrix ``[D_t, V]`` (``[V, D_t]``), over the same ``V``.
      bias, teacher_bias: Optional ``[V]`` biases; a ``-inf`` entry masks its class in that head.
      temperature: :math:`T > 0`; both sets of logits are divided by it (multiply the loss by :math:`T^2` to keep
        the gradient scale of Hinton et al.).
      soft_cap: Soft-capping of both sets of logits before the temperature, or ``None``.
      where: Optional boolean mask ``[...]``; tokens where it is false give 0, a zero gradient and do not count.
      reduction: ``"mean"`` (default, over the counted tokens), ``"sum"`` or ``"none"``.
      chunk_size, token_chunk_size, schedule, weight_layout: As in :func:`jxent.linear_softmax_cross_entropy` (the
        ``"one_pass"`` row buffer holds both heads' logits).
      reverse: Return :math:`\\mathrm{KL}(p^s \\| p^t)` (mode-seeking) instead.

    Returns:
      The divergence in nats (float32, or float64 for float64 inputs): ``[...]`` for ``"none"``, else a scalar.

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> h = jnp.array([[1.0, -1.0]])
      >>> w = jnp.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
      >>> float(jxent.linear_kl_divergence(h, w, h, w))  # the same head: 0
      0.0
      >>> kl = jxent.linear_kl_divergence(h, w, 2.0 * h, w)
      >>> ref = jxent.kl_divergence(jax.nn.log_softmax(h @ w), jax.nn.softmax(2.0 * h @ w), reduction="mean")
      >>> bool(jnp.allclose(kl, ref))
      True
    """
    return _run(locals(), Divergence("reverse_kl" if reverse else "kl"))


def linear_js_divergence(
    hidden: ArrayLike,
    weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    *,
    beta: float = 0.5,
    bias: ArrayLike | None = None,
    teacher_bias: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    soft_cap: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
) -> jax.Array:
    """Per-token generalized Jensen-Shannon divergence between a teacher head and a student head, without the logits.

    .. math::
      J_\\beta = \\beta\\, \\mathrm{KL}(p^t \\| m) + (1 - \\beta)\\, \\mathrm{KL}(p^s \\| m), \\qquad
      m = \\beta p^t + (1 - \\beta) p^s,

    with :math:`p^s`, :math:`p^t` as in :func:`jxent.linear_kl_divergence`. At ``beta=0.5`` it equals
    ``jxent.js_divergence(p_teacher, p_student)`` (bounded by :math:`\\log 2`). Computed blockwise in two passes
    over the vocabulary; never negative (rounding is clamped at 0).

    Gradients reach the student and the teacher inputs alike (``jax.custom_vjp``, computed blockwise); to freeze the
    teacher, pass it through ``jax.lax.stop_gradient``, and XLA drops its gradient blocks.

    Args:
      hidden: Student hidden states ``[..., D]`` (float32, 16-bit or, with x64, float64; 16-bit inputs are computed
        with float32 accumulation).
      weight: Student output matrix ``[D, V]`` (``[V, D]`` with ``weight_layout="vd"``).
      teacher_hidden: Teacher hidden states ``[..., D_t]`` of the same batch shape (``D_t`` may differ from ``D``).
      teacher_weight: Teacher output matrix ``[D_t, V]`` (``[V, D_t]``), over the same ``V``.
      bias, teacher_bias: Optional ``[V]`` biases; a ``-inf`` entry masks its class in that head.
      temperature: :math:`T > 0`; both sets of logits are divided by it (multiply the loss by :math:`T^2` to keep
        the gradient scale of Hinton et al.).
      soft_cap: Soft-capping of both sets of logits before the temperature, or ``None``.
      where: Optional boolean mask ``[...]``; tokens where it is false give 0, a zero gradient and do not count.
      reduction: ``"mean"`` (default, over the counted tokens), ``"sum"`` or ``"none"``.
      chunk_size, token_chunk_size, schedule, weight_layout: As in :func:`jxent.linear_softmax_cross_entropy` (the
        ``"one_pass"`` row buffer holds both heads' logits).
      beta: :math:`\\beta \\in (0, 1)`, a Python float: the teacher's weight in the mixture. (At 0 and 1 the
        divergence is identically 0; for the KL limits use :func:`jxent.linear_kl_divergence`.)

    Returns:
      The divergence in nats (float32, or float64 for float64 inputs): ``[...]`` for ``"none"``, else a scalar.

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> h = jnp.array([[1.0, -1.0]])
      >>> w = jnp.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
      >>> js = jxent.linear_js_divergence(h, w, 2.0 * h, w)
      >>> ref = jxent.js_divergence(jax.nn.softmax(2.0 * h @ w), jax.nn.softmax(h @ w), reduction="mean")
      >>> bool(jnp.allclose(js, ref))
      True
    """
    return _run(locals(), Divergence("js", check_beta(beta)))


def check_beta(beta: Any) -> float:
    """``beta`` of the generalized JS as a float in (0, 1), or ``ValueError``."""
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0.0 < beta < 1.0:
        raise ValueError(
            f"`beta` must be a Python float in (0, 1); got {beta!r}. At 0 and 1 the divergence is 0; for the KL "
            "limits use `linear_kl_divergence`."
        )
    return float(beta)
