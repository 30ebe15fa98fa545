"""The fixed, seeded input set of the cross-backend agreement check.

Every public loss and softmax primitive gets one :class:`Case` per input dtype (float32, bfloat16, float16) and
per variant (``"plain"``, and ``"masked"`` with a ``where=`` mask where the function takes one). All cases share
one batch of :data:`NUM_ROWS` rows of :data:`NUM_CLASSES` logits, built from a fixed seed, whose rows are chosen to
be hard:

==========  =====================================================================================================
row         content
==========  =====================================================================================================
0-6         ordinary logits, ``3 * N(0, 1)``
7           ordinary logits; every class masked in the ``"masked"`` variant (a row that does not count)
8           ``-inf`` entries (a masked vocabulary)
9           ``+1e4`` and ``-1e4`` entries
10          ``±0.4 * finfo(dtype).max`` and ``±0.2 * finfo(dtype).max`` entries (near the largest finite value)
11          two ``+inf`` entries and one ``-inf`` entry
12          all zeros
13          wide logits, ``100 * N(0, 1)``
14          all near ``-1e4``
15          ``-inf`` except one ``+1e4`` and one ``-1e4`` entry
==========  =====================================================================================================

Labels are chosen where jxent promises a finite loss (an integer label on a class with a finite logit, or on a
``+inf`` one in row 11; probability targets and sigmoid labels that agree with infinite logits), so every value,
gradient and Hessian-vector product is expected to be finite, except at the entries each case lists in
``nonfinite_ok`` (for example ``log_softmax`` of a ``-inf`` logit, or the gradient of the entropy at a zero
probability), where the exact result is infinite.

Probability inputs (``entropy``, ``js_divergence``, ``binary_cross_entropy``, ...) are the softmax or sigmoid of the
same rows, computed in float64 and rounded to the dtype, so they contain exact zeros and ones.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jxent

__all__ = [
    "DTYPES",
    "NOT_CHECKED",
    "NUM_CLASSES",
    "NUM_ROWS",
    "SEED",
    "VARIANTS",
    "Case",
    "case_losses",
    "make_cases",
]

NUM_ROWS = 16
"""Batch size of every case (a multiple of 8, so the batch shards evenly over 8 devices)."""

NUM_CLASSES = 11
SEED = 20240601
DTYPES = ("float32", "bfloat16", "float16")
VARIANTS = ("plain", "masked")

MASKED_ROW = 7
NEG_INF_ROW = 8
BIG_ROW = 9
MAX_ROW = 10
POS_INF_ROW = 11
ZERO_ROW = 12
WIDE_ROW = 13
NEG_BIG_ROW = 14
SPARSE_ROW = 15
IGNORED_ROW = 5  # label -100 in the case with ``ignore_index=-100``

NOT_CHECKED: dict[str, str] = {
    "check_labels": "label validation through checkify, not a loss",
    "validate_labels": "label validation through checkify, not a loss",
    "losses": "module of loss objects that only forward keyword arguments to the checked functions",
    "reduce_loss": "the reduction helper; runs inside every case with reduction='mean'",
    "smooth_labels": "a label transform (affine, no logits)",
    "smooth_binary_labels": "a label transform (affine, no logits)",
    "sharded_softmax_cross_entropy": "vocabulary-parallel over a Mesh argument whose axis size must divide V: not yet"
    " a per-device case (follow-up)",
    "sharded_linear_softmax_cross_entropy": "vocabulary-parallel over a Mesh argument (as above; follow-up)",
    "vocab_parallel_softmax_cross_entropy": "runs only inside shard_map with a bound axis name (as above; follow-up)",
    "vocab_parallel_linear_softmax_cross_entropy": "runs only inside shard_map with a bound axis name (follow-up)",
    "sharded_linear_token_statistics": "vocabulary-parallel over a Mesh argument (tests/test_lm_head.py compares it"
    " with the single-device function)",
    "sharded_linear_kl_divergence": "vocabulary-parallel over a Mesh argument (as above)",
    "sharded_linear_js_divergence": "vocabulary-parallel over a Mesh argument (as above)",
    "sharded_linear_sparse_kl_divergence": "vocabulary-parallel over a Mesh argument (as above)",
    "vocab_parallel_linear_token_statistics": "runs only inside shard_map with a bound axis name (as above)",
    "vocab_parallel_linear_kl_divergence": "runs only inside shard_map with a bound axis name (as above)",
    "vocab_parallel_linear_js_divergence": "runs only inside shard_map with a bound axis name (as above)",
    "vocab_parallel_linear_sparse_kl_divergence": "runs only inside shard_map with a bound axis name (as above)",
    "TokenStatistics": "the NamedTuple that linear_token_statistics returns, not a function",
    "safe_softmax_cross_entropy": "optax's name for softmax_cross_entropy, which it calls unchanged",
    "convex_kl_divergence": "optax's older name for generalized_kl_divergence, which it calls unchanged",
}
"""Names in ``jxent.__all__`` that are neither losses nor softmax primitives, with the reason. Every other public
name must have a case (the tests check this), so a new public loss cannot be left out silently."""

Masks = Any  # np.ndarray of bool, None (all must be finite), or a tuple of these (one per differentiated argument)


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
    """One function on one fixed input, with everything needed to evaluate its value, gradient and HVP.

    ``fn(*diff_args, *aux_args)`` is the computation; the gradient is that of ``sum(cotangent * fn(...))`` with
    respect to ``diff_args``, and the Hessian-vector product is ``jax.jvp`` of that gradient along ``tangents``.
    """

    loss: str  # the public name, ``jxent.<loss>``
    label: str  # the table's name: ``loss`` plus options in brackets, if any
    dtype: str
    variant: str
    fn: Callable[..., Any]
    diff_args: tuple[np.ndarray, ...]
    aux_args: tuple[np.ndarray, ...]
    tangents: tuple[np.ndarray, ...]
    cotangent: np.ndarray
    batched: tuple[bool, ...]  # per argument (diff_args then aux_args): is the leading axis the batch axis?
    nonfinite_ok: dict[str, Masks]  # "value", "grad", "hvp": where a non-finite result is the exact answer

    @property
    def name(self) -> str:
        return f"{self.label}/{self.dtype}/{self.variant}"

    @property
    def args(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...], tuple[np.ndarray, ...], np.ndarray]:
        """``(diff_args, aux_args, tangents, cotangent)``: the arrays the evaluation takes."""
        return self.diff_args, self.aux_args, self.tangents, self.cotangent


def _rng(*keys: str) -> np.random.Generator:
    return np.random.default_rng([SEED, *(zlib.crc32(k.encode()) for k in keys)])


def _cast(x: np.ndarray, dtype: str) -> np.ndarray:
    return np.asarray(x, np.float64).astype(jnp.dtype(dtype))


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.float64)


class _Data:
    """The float64 base inputs shared by every case of one dtype (values depend on the dtype only in row 10)."""

    def __init__(self, dtype: str):
        self.dtype = dtype
        rng = _rng("data")
        n, v = NUM_ROWS, NUM_CLASSES
        big = float(jnp.finfo(jnp.dtype(dtype)).max)
        z = 3.0 * rng.standard_normal((n, v))
        z[NEG_INF_ROW, [2, 5, 9]] = -np.inf
        z[BIG_ROW, [0, 4]] = 1e4
        z[BIG_ROW, [1, 8]] = -1e4
        z[MAX_ROW, :4] = [0.4 * big, -0.4 * big, 0.2 * big, -0.2 * big]
        z[POS_INF_ROW, [3, 7]] = np.inf
        z[POS_INF_ROW, 0] = -np.inf
        z[ZERO_ROW] = 0.0
        z[WIDE_ROW] *= 100.0 / 3.0
        z[NEG_BIG_ROW] = -1e4 + z[NEG_BIG_ROW]
        z[SPARSE_ROW] = -np.inf
        z[SPARSE_ROW, 4], z[SPARSE_ROW, 6] = 1e4, -1e4
        self.logits = _f64(_cast(z, dtype))  # the values the dtype can hold, in float64

        # Classes that may carry target mass with a finite loss: finite logits, or the +inf ones of a row with +inf.
        has_pos_inf = np.any(self.logits == np.inf, axis=-1, keepdims=True)
        allowed = np.where(has_pos_inf, self.logits == np.inf, np.isfinite(self.logits))
        self.labels = np.array([rng.choice(np.flatnonzero(row)) for row in allowed], np.int32)
        onehot = np.arange(v) == self.labels[:, None]

        keep = (rng.random((n, v)) < 0.7) | onehot
        keep[MASKED_ROW] = False
        self.class_mask = keep

        weights = rng.random((n, v)) * (rng.random((n, v)) < 0.7) * allowed + onehot
        self.targets = weights / weights.sum(-1, keepdims=True)

        # Sigmoid labels: hard in most rows, soft in rows 0-3, and agreeing with every infinite logit.
        b = (rng.random((n, v)) < 0.5).astype(np.float64)
        b[:4] = rng.random((4, v))
        b = np.where(self.logits == np.inf, 1.0, np.where(self.logits == -np.inf, 0.0, b))
        self.binary_labels = b
        self.element_mask = rng.random((n, v)) < 0.7
        self.element_mask[MASKED_ROW] = False

    # float64 transforms of the logits, with the limits jxent uses at infinite entries
    def log_softmax(self) -> np.ndarray:
        z = self.logits
        out = np.empty_like(z)
        for i, row in enumerate(z):
            if np.any(row == np.inf):
                k = np.sum(row == np.inf)
                out[i] = np.where(row == np.inf, -np.log(k), -np.inf)
            else:
                m = np.max(row)
                s = row - m
                out[i] = s - np.log(np.sum(np.exp(s)))
        return out

    def softmax(self) -> np.ndarray:
        return np.exp(self.log_softmax())

    def sigmoid(self) -> np.ndarray:
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-self.logits))


def _overflows(exact: np.ndarray, dtype: str) -> np.ndarray:
    """Where a float64 value may not fit ``dtype`` (a quarter of its largest finite value, or more)."""
    big = float(jnp.finfo(jnp.dtype(dtype)).max)
    with np.errstate(invalid="ignore"):
        return ~(np.abs(exact) < 0.25 * big)


def _probabilities(p: np.ndarray, dtype: str) -> np.ndarray:
    """``p`` rounded to ``dtype``, with values below float32's smallest normal number set to 0.

    CPUs run XLA with subnormals flushed to zero and GPUs may not, so a subnormal probability would give
    ``log(p) = -inf`` on one backend and a finite value on the other; the inputs avoid that platform difference.
    """
    q = _cast(p, dtype)
    q[np.abs(_f64(q)) < float(jnp.finfo(jnp.float32).tiny)] = 0
    return q


def _call(name: str, **options: Any) -> Callable[..., Any]:
    return functools.partial(getattr(jxent, name), **options)


def _with_where(fn: Callable[..., Any], masked: bool) -> Callable[..., Any]:
    """``fn(*args)`` for the plain variant, ``fn(*args[:-1], where=args[-1])`` for the masked one."""
    if not masked:
        return fn

    def masked_fn(*args):
        return fn(*args[:-1], where=args[-1])

    return masked_fn


def _spec(
    d: _Data, loss: str, masked: bool
) -> tuple[str, Callable[..., Any], tuple, tuple, dict[str, Masks], tuple[bool, ...]] | None:
    """``(label, fn, diff_args, aux_args, nonfinite_ok, batched)`` of one case, or ``None`` if it has no variant."""
    dt = d.dtype
    x = _cast(d.logits, dt)
    cmask = d.class_mask if masked else None
    emask = d.element_mask if masked else None
    where_aux: tuple = (cmask,) if masked else ()
    ewhere_aux: tuple = (emask,) if masked else ()
    z = np.where(d.class_mask, d.logits, -np.inf) if masked else d.logits
    label = loss
    none: dict[str, Masks] = {}

    if loss in ("logsumexp", "softmax", "log_softmax"):
        fn = _with_where(_call(loss, axis=-1), masked)
        ok = dict(none)
        row_pos_inf = np.any(z == np.inf, axis=-1, keepdims=True)
        if loss == "logsumexp":
            ok["value"] = row_pos_inf[:, 0] | np.all(z == -np.inf, axis=-1)
        elif loss == "log_softmax":
            ok["value"] = (z == -np.inf) | (row_pos_inf & (z != np.inf))
        return label, fn, (x,), where_aux, ok, (True,) * (1 + masked)

    if loss == "soft_cap":
        if masked:
            return None
        return label, _call(loss, cap=30.0), (x,), (), {"value": d.logits == -np.inf}, (True,)

    if loss in ("softmax_cross_entropy_with_integer_labels", "softmax_focal_loss", "generalized_cross_entropy"):
        options = {"softmax_focal_loss": {"gamma": 2.0}, "generalized_cross_entropy": {"q": 0.7}}.get(loss, {})
        fn = _with_where(_call(loss, **options), masked)
        return label, fn, (x,), (d.labels, *where_aux), none, (True,) * (2 + masked)

    if loss == "softmax_cross_entropy_with_integer_labels[options]":
        class_weight = 0.5 + _rng("class_weight").random(NUM_CLASSES)
        labels = d.labels.copy()
        labels[IGNORED_ROW] = -100
        base = _call(
            "softmax_cross_entropy_with_integer_labels",
            ignore_index=-100,
            label_smoothing=0.1,
            z_loss=1e-3,
            soft_cap=30.0,
            temperature=2.0,
            reduction="mean",
        )

        def options_fn(logits, labels, weight, *where):
            return base(logits, labels, where=where[0] if where else None, weight=weight)

        aux = (labels, class_weight.astype(np.float32), *where_aux)
        return label, options_fn, (x,), aux, none, (True, True, False) + (True,) * masked

    if loss in ("softmax_cross_entropy", "poly_loss_cross_entropy"):
        options = {"poly_loss_cross_entropy": {"epsilon": 2.0}}.get(loss, {})
        fn = _with_where(_call(loss, **options), masked)
        targets = _cast(d.targets, dt)
        return label, fn, (x,), (targets, *where_aux), none, (True,) * (2 + masked)

    if loss in ("sigmoid_binary_cross_entropy", "sigmoid_focal_loss"):
        options = {"sigmoid_focal_loss": {"alpha": 0.25, "gamma": 2.0}}.get(loss, {})
        fn = _with_where(_call(loss, **options), masked)
        return label, fn, (x,), (_cast(d.binary_labels, dt), *ewhere_aux), none, (True,) * (2 + masked)

    if loss in ("binary_cross_entropy", "categorical_cross_entropy"):
        # The clamped log's derivative 1 / max(p, 1e-12) and second derivative 1 / p**2 are finite, but do not fit
        # float16 near p = 0 (or p = 1 for the binary form): there the exact result rounds to inf.
        fn = _with_where(_call(loss), masked)
        if loss == "binary_cross_entropy":
            p = _probabilities(d.sigmoid(), dt)
            y = _cast(d.binary_labels, dt)
            aux = (y, *ewhere_aux)
            pos, neg = _f64(y), 1.0 - _f64(y)
        else:
            p = _probabilities(d.softmax(), dt)
            aux = (d.labels, *where_aux)
            pos, neg = (np.arange(NUM_CLASSES) == d.labels[:, None]).astype(np.float64), np.zeros(())
        (v,) = _tangents(label, dt, (p,))
        p64 = _f64(p)
        lo, hi = np.maximum(p64, 1e-12), np.maximum(1.0 - p64, 1e-12)
        grad = 1.5 * (neg / hi + pos / lo)  # cotangents are at most 1.5
        hvp = 1.5 * np.abs(_f64(v)) * (neg / hi**2 + pos / lo**2)
        ok = {"grad": _overflows(grad, dt), "hvp": _overflows(hvp, dt)}
        return label, fn, (p,), aux, ok, (True,) * (2 + masked)

    if loss in ("kl_divergence", "kl_divergence_with_log_targets", "generalized_kl_divergence"):
        fn = _with_where(_call(loss), masked)
        log_q = _cast(d.log_softmax(), dt)
        with np.errstate(divide="ignore"):
            t = np.log(d.targets) if loss == "kl_divergence_with_log_targets" else d.targets
        return label, fn, (log_q,), (_cast(t, dt), *where_aux), none, (True,) * (2 + masked)

    if loss in ("entropy", "js_divergence"):
        fn = _with_where(_call(loss), masked)
        p = _probabilities(d.softmax(), dt)
        diff: tuple = (p,) if loss == "entropy" else (p, _probabilities(d.targets, dt))
        # d/dp of p log p is log p + 1 (-inf at p = 0) and the Hessian is 1/p: infinite where p is 0 or tiny.
        # jax.scipy.special.xlogy differentiates x/y by the quotient rule (x/y**2), and y**2 underflows for
        # y < 1e-19 in float32 even though x/y**2 * y would be finite: no finite HVP is expected there either.
        tangents = _tangents(label, dt, diff)
        grad_ok = tuple(_f64(a) == 0 for a in diff)
        with np.errstate(divide="ignore", invalid="ignore"):
            hvp_ok = tuple(
                (_f64(a) < 1e-18) | _overflows(2.0 * _f64(t) / _f64(a), dt) for a, t in zip(diff, tangents, strict=True)
            )
        ok = {"grad": grad_ok, "hvp": hvp_ok}
        return label, fn, diff, where_aux, ok, (True,) * (len(diff) + masked)

    if loss in OPTIONAL_LOSSES:
        from jxent.testing.fused_cases import fused_spec

        return fused_spec(loss, d.dtype, masked)

    raise KeyError(f"No case for {loss!r}.")


CASE_LOSSES: tuple[str, ...] = (
    "logsumexp",
    "softmax",
    "log_softmax",
    "soft_cap",
    "softmax_cross_entropy_with_integer_labels",
    "softmax_cross_entropy_with_integer_labels[options]",
    "softmax_cross_entropy",
    "softmax_focal_loss",
    "poly_loss_cross_entropy",
    "generalized_cross_entropy",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "binary_cross_entropy",
    "categorical_cross_entropy",
    "kl_divergence",
    "kl_divergence_with_log_targets",
    "generalized_kl_divergence",
    "entropy",
    "js_divergence",
)
"""Every checked case name, in table order (the fused functions are added when jxent has them)."""

OPTIONAL_LOSSES = (
    "linear_softmax_cross_entropy",
    "linear_token_statistics",
    "linear_kl_divergence",
    "linear_js_divergence",
    "linear_sparse_kl_divergence",
)


def case_losses() -> tuple[str, ...]:
    """The case names of this jxent: :data:`CASE_LOSSES` plus the optional ones that ``jxent`` defines."""
    return CASE_LOSSES + tuple(name for name in OPTIONAL_LOSSES if hasattr(jxent, name))


def _tangents(label: str, dtype: str, diff: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    rng = _rng("tangent", label, dtype)
    return tuple(_cast(rng.standard_normal(a.shape), dtype) for a in diff)


def make_cases(
    dtypes: Sequence[str] = DTYPES,
    variants: Sequence[str] = VARIANTS,
    losses: Sequence[str] | None = None,
) -> list[Case]:
    """The fixed input set: one :class:`Case` per loss, dtype and variant (all of them by default).

    Args:
      dtypes: Input dtype names.
      variants: ``"plain"`` and/or ``"masked"``.
      losses: Case names (see :func:`case_losses`); default all.

    Returns:
      The cases, built from the fixed seed :data:`SEED`: the same arrays on every call and every machine.
    """
    names = case_losses() if losses is None else tuple(losses)
    unknown = sorted(set(names) - set(case_losses()))
    if unknown:
        raise ValueError(f"Unknown case names {unknown}; known: {list(case_losses())}.")
    cases = []
    for dtype in dtypes:
        data = _Data(dtype)
        for loss in names:
            for variant in variants:
                spec = _spec(data, loss, variant == "masked")
                if spec is None:
                    continue
                label, fn, diff, aux, ok, batched = spec
                tangents = _tangents(label, dtype, diff)
                out = jax.eval_shape(fn, *diff, *aux)
                cot = (0.5 + _rng("cotangent", label, dtype, variant).random(out.shape)).astype(np.float32)
                cases.append(
                    Case(
                        loss=loss.split("[")[0],
                        label=label,
                        dtype=dtype,
                        variant=variant,
                        fn=fn,
                        diff_args=tuple(diff),
                        aux_args=tuple(aux),
                        tangents=tangents,
                        cotangent=cot,
                        batched=tuple(batched),
                        nonfinite_ok=ok,
                    )
                )
    return cases
