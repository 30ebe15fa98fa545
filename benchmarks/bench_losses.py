"""Dense-loss benchmark: ``jit(value_and_grad)`` of jxent vs optax vs plain XLA vs the bandwidth floor.

One command, one run, ratios::

  python benchmarks/bench_losses.py                 # CPU shapes (N=256, V=10) ... (N=4096, V=32000), f32 and bf16
  python benchmarks/bench_losses.py --quick         # tiny shapes, few repeats (the CI smoke test)
  python benchmarks/bench_losses.py --gpu           # LLM shapes: N=8192, V in {32K, 128K, 256K}, bf16
  python benchmarks/bench_losses.py --plot          # also plot time against the vocabulary size

For each loss, shape and dtype it times ``jax.jit(jax.value_and_grad(lambda x: mean(loss(x, labels))))`` for

* ``jxent``: the jxent function;
* ``optax``: the same-named :mod:`optax.losses` function;
* ``plain``: the fastest plain-XLA version written here (``jnp`` with a hand-derived closed-form gradient through
  ``jax.custom_vjp``, or plain autodiff where that is already minimal); where there are two candidate
  formulations, both are timed and the faster one is reported (the ``plain`` column names it);
* ``floor``: the bandwidth floor, a jitted function that reads every ``[N, V]`` input once and writes one
  ``[N, V]`` array (``-x`` for integer labels, ``x - t`` for dense targets), the least memory traffic a
  ``value_and_grad`` can have. Its compiled HLO is checked to contain the operation (XLA cannot elide it).

Timing: compile first (``lower().compile()``, timed), one warm-up call, then ``--repeats`` calls per
implementation, interleaved across implementations, each on the next of several input sets (rotated so small
shapes are not timed out of cache), with ``block_until_ready``; the median is reported. Every traced function is
wrapped in ``chex.assert_max_traces`` and its traces are counted: one per shape is expected.

The table also reports, from the compiled HLO, how many top-level operations read and write an ``[N, V]`` array
(``passes r/w``): the number of times the implementation streams the logits-sized data through memory.

Results go to stdout and to ``benchmarks/results/dense_<platform>.md`` (``--output`` to change).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import jxent

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is in the bench extra

    def tqdm(iterable=None, **_):  # type: ignore[no-redef]
        return iterable


HERE = os.path.dirname(os.path.abspath(__file__))

CPU_SHAPES = ((256, 10), (256, 1000), (4096, 1000), (1024, 32000), (4096, 32000))
GPU_SHAPES = ((8192, 32768), (8192, 131072), (8192, 262144))
QUICK_SHAPES = ((64, 128),)
GOAL_SHAPE = (4096, 32000)

FOCAL = {"alpha": 0.25, "gamma": 2.0}


# --------------------------------------------------------------------------------------------------------------
# Plain-XLA versions: closed-form gradients, fused by XLA, computed in float32 for 16-bit inputs.
# --------------------------------------------------------------------------------------------------------------


def _f32(x: jax.Array) -> jax.Array:
    return x.astype(jnp.float32) if jnp.dtype(x.dtype).itemsize < 4 else x


def _lse(x: jax.Array) -> jax.Array:
    """Max-shifted log-sum-exp over the last axis, keepdims; exp and sum fuse into one reduction."""
    m = jnp.max(x, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    return m + jnp.log(jnp.sum(jnp.exp(x - m), axis=-1, keepdims=True))


@jax.custom_vjp
def ce_int_recompute(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Integer-label CE; the backward pass recomputes ``exp(x - lse)``: 3 reads and 1 write of ``[N, V]``."""
    return _ce_int_recompute_fwd(logits, labels)[0]


def _ce_int_recompute_fwd(logits, labels):
    x = _f32(logits)
    lse = _lse(x)
    x_y = jnp.take_along_axis(x, labels[:, None], axis=-1)
    return (lse - x_y)[:, 0], (logits, labels, lse)


def _ce_int_recompute_bwd(res, g):
    logits, labels, lse = res
    x = _f32(logits)
    onehot = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1) == labels[:, None]
    grad = g[:, None] * (jnp.exp(x - lse) - onehot)
    return grad.astype(logits.dtype), None


ce_int_recompute.defvjp(_ce_int_recompute_fwd, _ce_int_recompute_bwd)


@jax.custom_vjp
def ce_int_stored(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Integer-label CE storing ``exp(x - max)``: one exp per element, 3 reads and 2 writes of ``[N, V]``."""
    return _ce_int_stored_fwd(logits, labels)[0]


def _ce_int_stored_fwd(logits, labels):
    x = _f32(logits)
    m = jnp.max(x, axis=-1, keepdims=True)
    e = jnp.exp(x - m)
    s = jnp.sum(e, axis=-1, keepdims=True)
    x_y = jnp.take_along_axis(x, labels[:, None], axis=-1)
    return (m + jnp.log(s) - x_y)[:, 0], (e, s, labels, jnp.zeros((0,), logits.dtype))


def _ce_int_stored_bwd(res, g):
    e, s, labels, like = res
    onehot = lax.broadcasted_iota(jnp.int32, e.shape, e.ndim - 1) == labels[:, None]
    grad = e * (g[:, None] / s) - jnp.where(onehot, g[:, None], 0.0)
    return grad.astype(like.dtype), None


ce_int_stored.defvjp(_ce_int_stored_fwd, _ce_int_stored_bwd)


@jax.custom_vjp
def ce_prob_recompute(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Probability-label CE ``sum(t) lse - sum(t x)``; gradient ``sum(t) softmax(x) - t``, recomputed."""
    return _ce_prob_fwd(logits, targets)[0]


def _ce_prob_fwd(logits, targets):
    x, t = _f32(logits), _f32(targets)
    lse = _lse(x)
    ts = jnp.sum(t, axis=-1, keepdims=True)
    loss = ts * lse - jnp.sum(t * x, axis=-1, keepdims=True)
    return loss[:, 0], (logits, targets, lse, ts)


def _ce_prob_bwd(res, g):
    logits, targets, lse, ts = res
    x, t = _f32(logits), _f32(targets)
    grad = g[:, None] * (ts * jnp.exp(x - lse) - t)
    return grad.astype(logits.dtype), None


ce_prob_recompute.defvjp(_ce_prob_fwd, _ce_prob_bwd)


def ce_prob_autodiff(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Probability-label CE ``-sum(t * log_softmax(x))`` through plain autodiff."""
    x, t = _f32(logits), _f32(targets)
    return -jnp.sum(t * (x - _lse(x)), axis=-1)


@jax.custom_vjp
def bce_closed_form(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Sigmoid BCE ``max(x, 0) - x y + log1p(exp(-|x|))``, gradient ``sigmoid(x) - y``."""
    x, y = _f32(logits), _f32(labels)
    return jnp.maximum(x, 0.0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x)))


def _bce_fwd(logits, labels):
    return bce_closed_form(logits, labels), (logits, labels)


def _bce_bwd(res, g):
    logits, labels = res
    grad = g * (jax.nn.sigmoid(_f32(logits)) - _f32(labels))
    return grad.astype(logits.dtype), None


bce_closed_form.defvjp(_bce_fwd, _bce_bwd)


def bce_autodiff(logits: jax.Array, labels: jax.Array) -> jax.Array:
    x, y = _f32(logits), _f32(labels)
    return jnp.maximum(x, 0.0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x)))


def focal_autodiff(logits: jax.Array, labels: jax.Array, alpha: float = 0.25, gamma: float = 2.0) -> jax.Array:
    """Sigmoid focal loss ``alpha_t (1 - p_t)^gamma BCE`` in plain jnp (integer gamma: no log/exp for the power)."""
    x, y = _f32(logits), _f32(labels)
    p = jax.nn.sigmoid(x)
    one_minus_pt = p + y - 2.0 * y * p
    ce = jnp.maximum(x, 0.0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x)))
    alpha_t = alpha * y + (1.0 - alpha) * (1.0 - y)
    return alpha_t * one_minus_pt**gamma * ce


def kl_autodiff(log_predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """``sum(t (log t - log q))`` with ``0 log 0 = 0``; the gradient is ``-t``."""
    lq, t = _f32(log_predictions), _f32(targets)
    safe_t = jnp.where(t > 0, t, 1.0)
    return jnp.sum(jnp.where(t > 0, t * (jnp.log(safe_t) - lq), 0.0), axis=-1)


# --------------------------------------------------------------------------------------------------------------
# The benchmark table
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Loss:
    name: str
    jxent: Callable[..., jax.Array]
    optax: Callable[..., jax.Array]
    plain: dict[str, Callable[..., jax.Array]]  # candidate plain formulations; the fastest is reported
    labels: str  # "int" ([N] class indices), "prob" (rows of a distribution), "binary" ({0, 1}), "logprob"

    def floor(self) -> Callable[..., jax.Array]:
        if self.labels == "int":
            return lambda x, labels: -x
        return lambda x, t: x - t


LOSSES = (
    Loss(
        "softmax_cross_entropy_with_integer_labels",
        jxent.softmax_cross_entropy_with_integer_labels,
        optax.losses.softmax_cross_entropy_with_integer_labels,
        {"recompute": ce_int_recompute, "stored": ce_int_stored},
        "int",
    ),
    Loss(
        "softmax_cross_entropy",
        jxent.softmax_cross_entropy,
        optax.losses.softmax_cross_entropy,
        {"recompute": ce_prob_recompute, "autodiff": ce_prob_autodiff},
        "prob",
    ),
    Loss(
        "sigmoid_binary_cross_entropy",
        jxent.sigmoid_binary_cross_entropy,
        optax.losses.sigmoid_binary_cross_entropy,
        {"closed-form": bce_closed_form, "autodiff": bce_autodiff},
        "binary",
    ),
    Loss(
        "sigmoid_focal_loss",
        functools.partial(jxent.sigmoid_focal_loss, **FOCAL),
        functools.partial(optax.losses.sigmoid_focal_loss, **FOCAL),
        {"autodiff": functools.partial(focal_autodiff, **FOCAL)},
        "binary",
    ),
    Loss(
        "kl_divergence",
        jxent.kl_divergence,
        optax.losses.kl_divergence,
        {"autodiff": kl_autodiff},
        "logprob",
    ),
)


def make_inputs(loss: Loss, n: int, v: int, dtype: Any, key: jax.Array, device: jax.Device) -> tuple:
    """One input set ``(x, labels)`` for ``loss``, generated on ``device``."""
    kx, ky = jax.random.split(key)
    with jax.default_device(device):
        logits = 3.0 * jax.random.normal(kx, (n, v), jnp.float32)
        if loss.labels == "int":
            return logits.astype(dtype), jax.random.randint(ky, (n,), 0, v, jnp.int32)
        if loss.labels == "binary":
            return logits.astype(dtype), jax.random.bernoulli(ky, 0.3, (n, v)).astype(dtype)
        targets = jax.nn.softmax(3.0 * jax.random.normal(ky, (n, v), jnp.float32), axis=-1)
        if loss.labels == "logprob":
            return jax.nn.log_softmax(logits, axis=-1).astype(dtype), targets.astype(dtype)
        return logits.astype(dtype), targets.astype(dtype)


def objective(loss_fn: Callable[..., jax.Array]) -> Callable[..., Any]:
    """``value_and_grad`` of the mean loss with respect to the first argument."""
    return jax.value_and_grad(lambda x, labels: jnp.mean(loss_fn(x, labels)))


def step_bytes(loss: Loss, n: int, v: int, dtype: Any) -> int:
    """Bytes a ``value_and_grad`` step must move: logits and labels read, gradient written."""
    item = jnp.dtype(dtype).itemsize
    labels = 4 * n if loss.labels == "int" else item * n * v
    return 2 * item * n * v + labels


# ---- compiled-HLO inspection ---------------------------------------------------------------------------------

_SHAPE = re.compile(r"\b(pred|s8|u8|s16|u16|s32|u32|s64|u64|f16|bf16|f32|f64)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4}
_SKIP = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "call", "copy-start", "copy-done"}


def _matching(text: str, start: int) -> int:
    """Index just past the parenthesis that closes the one at ``text[start]``."""
    depth = 0
    for i in range(start, len(text)):
        depth += text[i] == "("
        depth -= text[i] == ")"
        if depth == 0:
            return i + 1
    return len(text)


def hlo_passes(compiled_text: str, n: int, v: int) -> tuple[int, int, int]:
    """``(reads, writes, bytes)`` of ``[N, V]``-sized arrays by the top-level operations of a compiled module.

    Top-level operations are those of the computations that are not the body of a fusion (the ENTRY computation,
    and on GPU the command-buffer computations it calls): each one that takes an operand with ``N * V`` elements
    counts as one read pass, each one whose result has ``N * V`` elements as one write. Backends run these one
    after another, so this is the memory traffic over logits-sized data. An upper bound: a fusion that only
    gathers ``N`` elements of an ``[N, V]`` operand counts as a read.
    """
    inner = set(re.findall(r"calls=(%[\w.\-]+)", compiled_text))
    shapes: dict[str, list[tuple[str, int]]] = {}
    reads = writes = moved = 0
    counting = False
    for raw in compiled_text.splitlines():
        line = raw.strip()
        header = re.match(r"^(ENTRY\s+)?(%[\w.\-]+)\s.*\{$", line)
        if header and not raw.startswith(" "):
            counting = header.group(2) not in inner
            continue
        if line.startswith("ROOT "):
            line = line[5:]
        if not line.startswith("%") or " = " not in line:
            continue
        name, rest = line.split(" = ", 1)
        if rest.startswith("("):
            end = _matching(rest, 0)
            out_type, rest = rest[:end], rest[end:].lstrip()
        else:
            out_type, _, rest = rest.partition(" ")
        op = rest[: rest.index("(")] if "(" in rest else rest
        args = rest[len(op) : _matching(rest, len(op))] if "(" in rest else ""
        out = [(t, int(np.prod([int(d) for d in dims.split(",") if d] or [1]))) for t, dims in _SHAPE.findall(out_type)]
        shapes[name] = out
        if not counting or op in _SKIP:
            continue
        operands = re.findall(r"%[\w.\-]+", args)
        big_in = [(t, size) for o in operands for t, size in shapes.get(o, []) if size == n * v]
        big_out = [(t, size) for t, size in out if size == n * v]
        reads += len(big_in)
        writes += len(big_out)
        moved += sum(_BYTES.get(t, 8) * size for t, size in big_in + big_out)
    return reads, writes, moved


def _check_floor_is_real(compiled_text: str) -> None:
    entry = compiled_text[compiled_text.index("\nENTRY") :]
    if not re.search(r"\b(fusion|negate|subtract|multiply)\(", entry):
        raise RuntimeError("The bandwidth-floor function compiled to no operation: XLA elided it.\n" + entry)


# ---- timing ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    compile_s: float = 0.0
    times: list[float] = dataclasses.field(default_factory=list)
    traces: int = 0
    passes: tuple[int, int, int] = (0, 0, 0)
    error: str = ""  # why this implementation did not run (out of memory, ...): reported, not raised
    warmup_s: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")


@dataclasses.dataclass
class Row:
    loss: str
    dtype: str
    n: int
    v: int
    timings: dict[str, Timing]
    plain_variant: str
    step_bytes: int
    calls: int = 0

    def t(self, impl: str) -> float:
        return self.timings[impl].median


class TraceCounter:
    """Counts the traces of each function per input shape; each is also wrapped in ``chex.assert_max_traces``."""

    def __init__(self) -> None:
        self.counts: dict[Any, int] = {}

    def wrap(self, key: tuple[str, str], fn: Callable[..., Any], max_traces: int) -> Callable[..., Any]:
        def counted(*args):
            signature = tuple((tuple(a.shape), jnp.dtype(a.dtype).name) for a in args)
            full = (*key, signature[0])
            self.counts[full] = self.counts.get(full, 0) + 1
            return fn(*args)

        counted.__name__ = ":".join(key)  # chex tells functions apart by definition site, source and name
        return chex.assert_max_traces(counted, n=max_traces)

    def traces(self, loss: str, impl: str, shape: tuple[int, int], dtype: str) -> int:
        return self.counts.get((loss, impl, (shape, dtype)), 0)


def _input_sets(loss: Loss, n: int, v: int, dtype: Any, device: jax.Device, budget: int, seed: int) -> list[tuple]:
    per_set = step_bytes(loss, n, v, dtype)
    count = int(max(2, min(8, budget // max(per_set, 1))))  # small shapes: enough sets to fall out of cache
    if per_set * 2 > budget:
        count = 1 if per_set > budget else 2
    keys = jax.random.split(jax.random.PRNGKey(seed), count)
    return [jax.block_until_ready(make_inputs(loss, n, v, dtype, k, device)) for k in keys]


def bench_shape(
    loss: Loss,
    n: int,
    v: int,
    dtype: Any,
    *,
    device: jax.Device,
    repeats: int,
    warmup: int,
    budget: int,
    counter: TraceCounter,
    jitted: dict[str, Callable[..., Any]],
    max_seconds: float = 0.0,
) -> Row:
    """Times every implementation of ``loss`` at one shape and dtype (interleaved, median of ``repeats``)."""
    sets = _input_sets(loss, n, v, dtype, device, budget, seed=n * 131 + v)
    timings: dict[str, Timing] = {}
    impls = {"jxent": "jxent", "optax": "optax", "floor": "floor", **{f"plain:{k}": k for k in loss.plain}}
    for impl in impls:
        fn = jitted[impl]
        timing = timings[impl] = Timing()
        try:
            t0 = time.perf_counter()
            compiled = fn.lower(*sets[0]).compile()
            timing.compile_s = time.perf_counter() - t0
            text = compiled.as_text()
            if impl == "floor":
                _check_floor_is_real(text)
            timing.passes = hlo_passes(text, n, v)
            del compiled
            t0 = time.perf_counter()
            for i in range(warmup):
                jax.block_until_ready(fn(*sets[i % len(sets)]))
            timing.warmup_s = (time.perf_counter() - t0) / max(warmup, 1)
        except Exception as e:  # e.g. out of device memory at the largest shapes: report it and go on
            if "elided" in str(e):
                raise
            timing.error = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    live = [impl for impl in impls if not timings[impl].error]
    if max_seconds and live:  # slow rows (large shapes on a CPU): fewer calls, but at least 3
        per_round = sum(timings[impl].warmup_s for impl in live)
        repeats = min(repeats, max(3, int(max_seconds / max(per_round, 1e-9))))
    for r in range(repeats):
        for k, impl in enumerate(live):
            args = sets[(r * len(live) + k) % len(sets)]
            t0 = time.perf_counter()
            jax.block_until_ready(jitted[impl](*args))
            timings[impl].times.append(time.perf_counter() - t0)
    for impl in impls:  # counted after the timed calls, so a re-trace on fresh inputs would show
        timings[impl].traces = counter.traces(loss.name, impl, (n, v), jnp.dtype(dtype).name)
    candidates = [k for k in impls if k.startswith("plain:")]
    plain = min(candidates, key=lambda k: (math.isnan(timings[k].median), timings[k].median))
    timings["plain"] = timings[plain]
    del sets
    name = jnp.dtype(dtype).name
    return Row(loss.name, name, n, v, timings, plain.split(":", 1)[1], step_bytes(loss, n, v, dtype), repeats)


def measure_copy_bandwidth(device: jax.Device, nbytes: int, repeats: int) -> float:
    """Device-to-device copy bandwidth, bytes read + bytes written per second: the best of a ``-x`` over
    ``nbytes`` of float32 and of bfloat16 (median of ``repeats`` each)."""
    best = 0.0
    copy = jax.jit(lambda x: -x)
    for dtype in (jnp.float32, jnp.bfloat16):
        size = nbytes // jnp.dtype(dtype).itemsize
        with jax.default_device(device):
            xs = [jnp.full((size,), float(i + 1), dtype) for i in range(2)]
        jax.block_until_ready(copy(xs[0]))
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(copy(xs[r % 2]))
            times.append(time.perf_counter() - t0)
        best = max(best, 2 * nbytes / statistics.median(times))
        del xs
    return best


# ---- output ---------------------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def format_table(rows: Sequence[Row], copy_bandwidth: float | None) -> str:
    header = [
        "loss",
        "dtype",
        "N",
        "V",
        "jxent ms",
        "optax ms",
        "plain ms",
        "floor ms",
        "jxent/optax",
        "jxent/plain",
        "jxent/floor",
        "plain variant",
        "passes r/w (jxent, optax, plain)",
        "compile ms (jxent, optax, plain)",
        "traces",
        "calls",
    ]
    if copy_bandwidth:
        header.insert(12, "jxent GB/s (of copy)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        tj, to, tp, tf = (r.t(k) for k in ("jxent", "optax", "plain", "floor"))
        passes = ", ".join(f"{r.timings[k].passes[0]}/{r.timings[k].passes[1]}" for k in ("jxent", "optax", "plain"))
        compile_ms = ", ".join(f"{r.timings[k].compile_s * 1e3:.0f}" for k in ("jxent", "optax", "plain"))
        traces = max(r.timings[k].traces for k in ("jxent", "optax", "plain", "floor"))
        cells = [
            r.loss,
            r.dtype,
            str(r.n),
            str(r.v),
            _ms(tj),
            _ms(to),
            _ms(tp),
            _ms(tf),
            f"{tj / to:.2f}",
            f"{tj / tp:.2f}",
            f"{tj / tf:.2f}",
            r.plain_variant,
            passes,
            compile_ms,
            str(traces),
            str(r.calls),
        ]
        if copy_bandwidth:
            achieved = r.step_bytes / tj
            cells.insert(12, f"{achieved / 1e9:.0f} ({achieved / copy_bandwidth:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: Sequence[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = list(dict.fromkeys(r.loss for r in rows))
    dtypes = list(dict.fromkeys(r.dtype for r in rows))
    fig, axes = plt.subplots(len(dtypes), len(losses), figsize=(4 * len(losses), 3.2 * len(dtypes)), squeeze=False)
    for i, dtype in enumerate(dtypes):
        for j, loss in enumerate(losses):
            ax = axes[i][j]
            sel = [r for r in rows if r.loss == loss and r.dtype == dtype]
            n_max = max(r.n for r in sel)
            sel = sorted((r for r in sel if r.n == n_max), key=lambda r: r.v)
            for impl, style in (("jxent", "o-"), ("optax", "s--"), ("plain", "^-."), ("floor", "k:")):
                ax.plot([r.v for r in sel], [r.t(impl) * 1e3 for r in sel], style, label=impl)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{loss}\n{dtype}, N={n_max}", fontsize=8)
            ax.set_xlabel("V")
            ax.set_ylabel("ms")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---- main -----------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny shapes, few repeats (CI smoke test)")
    p.add_argument("--gpu", action="store_true", help="LLM shapes in bf16 (default when the first device is a GPU)")
    p.add_argument("--shapes", default="", help="override shapes, e.g. '256x10,4096x32000'")
    p.add_argument("--dtypes", default="", help="override dtypes, e.g. 'float32,bfloat16'")
    p.add_argument("--losses", default="", help="comma-separated loss names (default: all)")
    p.add_argument("--repeats", type=int, default=0, help="timed calls per implementation (default 7; quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up calls after compiling")
    p.add_argument(
        "--max-seconds-per-row",
        type=float,
        default=20.0,
        help="fewer timed calls (at least 3) for rows slower than this (default %(default)s s)",
    )
    p.add_argument("--output", default="", help="Markdown output (default benchmarks/results/dense_<platform>.md)")
    p.add_argument("--plot", action="store_true", help="also plot time against V (PNG next to the table)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = jax.devices()[0]
    gpu = args.gpu or (device.platform == "gpu" and not args.quick)
    if args.gpu and device.platform != "gpu":
        print(f"--gpu: no GPU found (first device: {device}); running the GPU shapes on {device.platform}")
    shapes = QUICK_SHAPES if args.quick else GPU_SHAPES if gpu else CPU_SHAPES
    if args.shapes:
        shapes = tuple(tuple(int(d) for d in s.split("x")) for s in args.shapes.split(","))  # type: ignore[misc]
    dtypes = ("bfloat16",) if gpu else ("float32", "bfloat16")
    if args.dtypes:
        dtypes = tuple(args.dtypes.split(","))
    losses = [loss for loss in LOSSES if not args.losses or loss.name in args.losses.split(",")]
    repeats = args.repeats or (2 if args.quick else 10 if device.platform == "gpu" else 7)
    budget = (16 << 30) if device.platform == "gpu" else (2 << 30)

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"jax {jax.__version__}, jaxlib backend {device.platform}; device: {device.device_kind} ({device})")
    print(f"jxent {jxent.__version__}, optax {optax.__version__}; {os.cpu_count()} CPUs; load average {load}")
    copy_bandwidth = None
    if device.platform == "gpu":
        copy_bandwidth = measure_copy_bandwidth(device, 4 << 30, repeats=20)
        print(f"device-to-device copy bandwidth: {copy_bandwidth / 1e9:.0f} GB/s (read + write)")

    counter = TraceCounter()
    n_keys = len(shapes) * len(dtypes)
    work = [(loss, shape, dtype) for dtype in dtypes for shape in shapes for loss in losses]  # small shapes first
    jitted: dict[str, dict[str, Callable[..., Any]]] = {}
    for loss in losses:
        impls = {"jxent": loss.jxent, "optax": loss.optax, **{f"plain:{k}": f for k, f in loss.plain.items()}}
        jitted[loss.name] = {
            name: jax.jit(counter.wrap((loss.name, name), objective(fn), n_keys)) for name, fn in impls.items()
        }
        jitted[loss.name]["floor"] = jax.jit(counter.wrap((loss.name, "floor"), loss.floor(), n_keys))

    output = args.output or os.path.join(HERE, "results", f"dense_{device.platform}{'_quick' if args.quick else ''}.md")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    header = (
        f"`jit(value_and_grad(mean(loss)))`, median of up to {repeats} calls (column `calls`; fewer for slow rows) "
        f"after compile and {args.warmup} warm-up call(s), interleaved, inputs rotated; jax {jax.__version__}, "
        f"optax {optax.__version__}, {os.cpu_count()} CPUs, load average at start {load}."
    )
    rows: list[Row] = []
    bar = tqdm(work, desc="dense losses", unit="case", disable=args.no_progress, file=sys.stderr)
    for loss, (n, v), dtype in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"{loss.name} {dtype} {n}x{v}")
        row = bench_shape(
            loss,
            n,
            v,
            jnp.dtype(dtype),
            device=device,
            repeats=repeats,
            warmup=args.warmup,
            budget=budget,
            counter=counter,
            jitted=jitted[loss.name],
            max_seconds=args.max_seconds_per_row,
        )
        rows.append(row)
        if args.no_progress:  # a line per row instead of the bar
            print(
                f"  {row.loss} {row.dtype} {n}x{v}: jxent {_ms(row.t('jxent'))} ms, optax {_ms(row.t('optax'))} ms, "
                f"plain {_ms(row.t('plain'))} ms, floor {_ms(row.t('floor'))} ms",
                flush=True,
            )
        with open(output, "w") as f:  # partial results survive an interrupted run
            f.write(render(rows, device, header, copy_bandwidth, partial=len(rows) < len(work)))
    retraced = {key: count for key, count in counter.counts.items() if count > 1}
    if retraced:  # one trace per shape and dtype, no more
        raise AssertionError(f"re-traced: {retraced}")

    text = render(rows, device, header, copy_bandwidth)
    print()
    print(text)
    with open(output, "w") as f:
        f.write(text)
    print(f"wrote {output}")
    if args.plot:
        png = os.path.splitext(output)[0] + ".png"
        plot(rows, png)
        print(f"wrote {png}")
    return 0


def render(
    rows: Sequence[Row], device: jax.Device, header: str, copy_bandwidth: float | None, partial: bool = False
) -> str:
    """The Markdown report: title, method, table, errors, and the goals."""
    lines = [
        f"# Dense losses on {device.platform}: {device.device_kind}" + (" (partial: still running)" if partial else ""),
        "",
        header,
        "",
        format_table(rows, copy_bandwidth),
        "",
    ]
    if copy_bandwidth:
        lines.insert(3, f"\nDevice-to-device copy bandwidth: {copy_bandwidth / 1e9:.0f} GB/s (bytes read + written).")
    errors = [
        f"- {r.loss} {r.dtype} {r.n}x{r.v} {impl}: {t.error}"
        for r in rows
        for impl, t in r.timings.items()
        if t.error and impl != "plain"
    ]
    if errors:
        lines += ["Implementations that did not run (nan in the table):", *errors, ""]
    goal = [r for r in rows if (r.n, r.v) == GOAL_SHAPE and r.dtype == "float32"]
    if goal and device.platform == "cpu":
        n, v = GOAL_SHAPE
        lines.append(f"Goal at N={n}, V={v}, float32 on CPU: jxent <= 1.0x optax and <= 1.5x floor.")
        for r in goal:
            ok = r.t("jxent") <= r.t("optax") and r.t("jxent") <= 1.5 * r.t("floor")
            lines.append(
                f"- {r.loss}: {r.t('jxent') / r.t('optax'):.2f}x optax, {r.t('jxent') / r.t('floor'):.2f}x floor: "
                + ("met" if ok else "NOT met")
            )
        lines.append("")
    if copy_bandwidth:
        lines.append("Goal on GPU: achieved bandwidth (logits + labels read, gradient written) >= 0.6 of the copy:")
        for r in rows:
            fraction = r.step_bytes / r.t("jxent") / copy_bandwidth
            lines.append(
                f"- {r.loss} {r.dtype} {r.n}x{r.v}: {fraction:.2f}: " + ("met" if fraction >= 0.6 else "NOT met")
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
