"""The trace-time configuration of the fused loss: argument checks, loop schedule and block sizes.

Everything here runs while JAX traces; the result, :class:`FusedConfig`, is hashable and is the static argument
of the kernels' ``custom_vjp``. The option values themselves travel as constant arrays
(:class:`jxent._options.OptionArrays`), so a traced hyperparameter works too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jxent import _checks
from jxent._options import CrossEntropyOptions, OptionArrays
from jxent.fused.group import LOCAL, VocabGroup

__all__ = ["SCHEDULES", "WEIGHT_LAYOUTS", "FusedConfig", "Prepared", "make_config", "prepare", "prepare_arguments"]

SCHEDULES = ("auto", "one_pass", "split", "token", "vocab")
WEIGHT_LAYOUTS = ("dv", "vd")

# On accelerators, "auto" keeps a full float32 [N, D] dh accumulator ("vocab") up to this size, else "split".
ACCELERATOR_DH_BUDGET = 256 * 2**20


class FusedConfig(NamedTuple):
    """Everything the kernels need to know at trace time (hashable)."""

    num_tokens: int
    vocab: int  # the classes this device holds (all of them unless ``group`` is sharded)
    token_chunk: int
    vocab_chunk: int
    has_bias: bool
    has_class_weight: bool
    has_smoothing: bool
    has_z_loss: bool
    has_cap: bool
    has_temperature: bool
    cap_is_traced: bool
    ignore_index: int | None
    schedule: str
    matmul_dtype: str
    acc_dtype: str  # float32, or float64 for float64 inputs
    weight_dtype: str
    bias_dtype: str
    vocab_axis: int  # 1 for a [D, V] weight, 0 for a [V, D] one
    group: VocabGroup = LOCAL

    @property
    def global_vocab(self) -> int:
        return self.vocab * self.group.size

    @property
    def sharded(self) -> bool:
        return self.group.sharded


def _chunk(value: int | None, default: int, total: int, name: str) -> int:
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
    return int(min(value, total))


def _platform() -> str:
    """The platform computations go to: that of ``jax.default_device`` when set, else the default backend."""
    device = getattr(jax.config, "jax_default_device", None)
    if device is not None:
        return str(getattr(device, "platform", device))
    return jax.default_backend()


def _choose_schedule(schedule: str, w_dtype: Any, sharded: bool, cpu: bool, dh_bytes: int) -> str:
    """``schedule="auto"``: see the table in :func:`jxent.linear_softmax_cross_entropy`."""
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}; got {schedule!r}.")
    if schedule == "one_pass" and sharded:
        return "token"
    if schedule != "auto":
        return schedule
    if not cpu:  # few, large blocks: each loop iteration costs a kernel launch or more
        return "vocab" if dh_bytes <= ACCELERATOR_DH_BUDGET else "split"
    # A float32 weight gradient is its own accumulator, so the token-outer loops need no extra [D, V] buffer.
    if jnp.dtype(w_dtype).itemsize >= 4:
        return "token" if sharded else "one_pass"
    return "split"


def _default_chunks(schedule: str, cpu: bool, hidden_size: int, vocab: int) -> tuple[int, int]:
    """``(token_chunk, vocab_chunk)`` defaults (clipped to the problem afterwards)."""
    if schedule == "one_pass":  # the [Tc, V] float32 row buffer: about 32 MiB
        return int(min(1024, max(16, 2**23 // vocab))), 2048
    if cpu:  # [Tc, D] and [D, Vc] float32 blocks of about 8 MiB each (the CPU computes 16-bit blocks in float32)
        size = int(min(2048, max(128, 2 ** int(np.log2(max(2**21 // max(hidden_size, 1), 1))))))
        return size, size
    return 8192, (2048 if schedule == "vocab" else 8192)


def make_config(
    *,
    num_tokens: int,
    vocab: int,
    hidden_size: int,
    dtypes: tuple[Any, ...],
    weight_dtype: Any,
    bias_dtype: Any,
    has_class_weight: bool,
    options: CrossEntropyOptions,
    chunk_size: int | None,
    token_chunk_size: int | None,
    schedule: str,
    group: VocabGroup = LOCAL,
    vocab_axis: int = 1,
) -> tuple[FusedConfig, OptionArrays]:
    """The trace-time configuration and the scalar options (as constants in the accumulation dtype)."""
    n = max(num_tokens, 1)
    cpu = _platform() == "cpu"
    resolved = _choose_schedule(schedule, weight_dtype, group.sharded, cpu, 4 * n * hidden_size)
    default_tc, default_vc = _default_chunks(resolved, cpu, hidden_size, vocab)
    matmul_dtype = functools.reduce(jnp.promote_types, dtypes)
    acc_dtype = _checks.compute_dtype(matmul_dtype)
    if cpu:
        matmul_dtype = _checks.compute_dtype(matmul_dtype)  # no 16-bit matmul units: cast blocks to float32
    cfg = FusedConfig(
        num_tokens=n,
        vocab=vocab,
        token_chunk=_chunk(token_chunk_size, default_tc, n, "token_chunk_size"),
        vocab_chunk=_chunk(chunk_size, default_vc, vocab, "chunk_size"),
        has_bias=bias_dtype is not None,
        has_class_weight=has_class_weight,
        has_smoothing=options.has_smoothing,
        has_z_loss=options.has_z_loss,
        has_cap=options.has_cap,
        has_temperature=options.has_temperature,
        cap_is_traced=options.cap_is_traced,
        ignore_index=options.ignore_index,
        schedule=resolved,
        matmul_dtype=jnp.dtype(matmul_dtype).name,
        acc_dtype=jnp.dtype(acc_dtype).name,
        weight_dtype=jnp.dtype(weight_dtype).name,
        bias_dtype="" if bias_dtype is None else jnp.dtype(bias_dtype).name,
        vocab_axis=vocab_axis,
        group=group,
    )
    return cfg, options.arrays(acc_dtype)


class Prepared(NamedTuple):
    cfg: FusedConfig
    arrays: OptionArrays
    hidden: jax.Array  # [N, D]
    weight: jax.Array
    bias: jax.Array | None
    labels: jax.Array  # [N] int32
    class_weight: jax.Array | None  # accumulation dtype, no gradient
    batch_shape: tuple[int, ...]


def per_class(x: Any, vocab: int, name: str, what: str = "") -> jax.Array | None:
    """A ``[V]`` per-class array (``bias``, ``class_weight``) checked for its shape, or ``None``; ``what`` says what
    it must be (e.g. this device's slice)."""
    if x is None:
        return None
    x = _checks.as_float_array(x, name)
    if x.shape != (vocab,):
        raise ValueError(f"`{name}` must {what}have shape ({vocab},); got shape {tuple(x.shape)}.")
    return x


def check_linear_inputs(hidden: Any, weight: Any, labels: Any, weight_layout: str) -> tuple[jax.Array, ...]:
    """``hidden [..., D]``, ``weight`` (``[D, V]`` or, with ``weight_layout="vd"``, ``[V, D]``) and integer
    ``labels [...]``, checked against each other; raises ``ValueError``/``TypeError`` naming the argument."""
    hidden = _checks.as_float_array(hidden, "hidden")
    weight = _checks.as_float_array(weight, "weight")
    labels = _checks.as_int_array(labels, "labels")
    if hidden.ndim < 1:
        raise ValueError(f"`hidden` must have shape [..., D]; got shape {tuple(hidden.shape)}.")
    if weight_layout not in WEIGHT_LAYOUTS:
        raise ValueError(f"`weight_layout` must be one of {WEIGHT_LAYOUTS}; got {weight_layout!r}.")
    d_axis = 0 if weight_layout == "dv" else 1
    if weight.ndim != 2 or weight.shape[d_axis] != hidden.shape[-1]:
        expected = "[D, V]" if weight_layout == "dv" else "[V, D]"
        other = "`weight_layout='vd'` for a [V, D] matrix" if weight_layout == "dv" else "the default layout [D, V]"
        raise ValueError(
            f"`weight` must have shape {expected} with D = hidden.shape[-1] = {hidden.shape[-1]}; got shape "
            f"{tuple(weight.shape)}. Use {other}."
        )
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(
            f"`labels` must have shape {tuple(hidden.shape[:-1])} (hidden's shape without D); got shape "
            f"{tuple(labels.shape)}."
        )
    if weight.shape[1 - d_axis] < 1:
        raise ValueError("`weight` must have at least one class (V >= 1).")
    return hidden, weight, labels


def prepare(
    hidden: Any,
    weight: Any,
    labels: Any,
    *,
    bias: Any,
    class_weight: Any,
    options: CrossEntropyOptions,
    chunk_size: int | None,
    token_chunk_size: int | None,
    schedule: str,
    weight_layout: str = "dv",
    group: VocabGroup = LOCAL,
) -> Prepared:
    """Checks the arguments and fixes the trace-time configuration. With a sharded ``group``, ``weight``, ``bias``
    and ``class_weight`` are this device's slice of the vocabulary and ``labels`` are global."""
    hidden, weight, labels = check_linear_inputs(hidden, weight, labels, weight_layout)
    vocab_axis = 1 if weight_layout == "dv" else 0
    d, vocab = weight.shape[1 - vocab_axis], weight.shape[vocab_axis]
    bias = per_class(bias, vocab, "bias")
    cw = per_class(class_weight, vocab, "class_weight")
    batch_shape = tuple(labels.shape)
    cfg, arrays = make_config(
        num_tokens=math.prod(batch_shape),
        vocab=vocab,
        hidden_size=d,
        dtypes=(hidden.dtype, weight.dtype),
        weight_dtype=weight.dtype,
        bias_dtype=None if bias is None else bias.dtype,
        has_class_weight=cw is not None,
        options=options,
        chunk_size=chunk_size,
        token_chunk_size=token_chunk_size,
        schedule=schedule,
        group=group,
        vocab_axis=vocab_axis,
    )
    cw = None if cw is None else jax.lax.stop_gradient(cw.astype(cfg.acc_dtype))
    y = _checks.labels_as_int32(labels.reshape(-1), cfg.global_vocab, options.ignore_index)
    return Prepared(cfg, arrays, hidden.reshape(-1, d), weight, bias, y, cw, batch_shape)


def prepare_arguments(arguments: Mapping[str, Any], group: VocabGroup = LOCAL) -> Prepared:
    """:func:`prepare` from the arguments of a public fused loss (its ``locals()``), with their options."""
    return prepare(
        arguments["hidden"],
        arguments["weight"],
        arguments["labels"],
        bias=arguments["bias"],
        class_weight=arguments["class_weight"],
        options=CrossEntropyOptions.pick(arguments),
        chunk_size=arguments["chunk_size"],
        token_chunk_size=arguments["token_chunk_size"],
        schedule=arguments["schedule"],
        weight_layout=arguments["weight_layout"],
        group=group,
    )
