"""The trace-time configuration of the fused loss: argument checks, loop schedule and block sizes.

Everything here runs while JAX traces; the result, :class:`FusedConfig`, is hashable and is the static argument
of the kernels' ``custom_vjp``. The option values themselves travel as constant arrays
(:class:`jxent._options.OptionArrays`), so a traced hyperparameter works too.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jxent import _checks
from jxent._options import CrossEntropyOptions, OptionArrays
from jxent.fused.group import LOCAL, VocabGroup

__all__ = [
    "SCHEDULES",
    "WEIGHT_LAYOUTS",
    "FusedConfig",
    "check_batch",
    "check_head",
    "check_linear_inputs",
    "make_config",
    "per_class",
    "row_weights",
]

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


def _choose_schedule(schedule: str, w_dtype: Any, sharded: bool, cpu: bool, dh_bytes: int, scalar: bool) -> str:
    """``schedule="auto"``: see the table in :func:`jxent.linear_softmax_cross_entropy`. ``scalar``: the result is
    one reduced loss, so the one-pass path can build the gradients in the forward pass; per-token outputs need the
    token-outer loops (with their own block sizes)."""
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
        return "token" if sharded or not scalar else "one_pass"
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
    has_class_weight: bool,
    options: CrossEntropyOptions,
    chunk_size: int | None,
    token_chunk_size: int | None,
    schedule: str,
    group: VocabGroup = LOCAL,
    vocab_axis: int = 1,
    num_heads: int = 1,
    scalar: bool = True,
) -> tuple[FusedConfig, OptionArrays]:
    """The trace-time configuration and the scalar options (as constants in the accumulation dtype). ``scalar``:
    the caller reduces to one loss without other outputs (see :func:`_choose_schedule`)."""
    n = max(num_tokens, 1)
    cpu = _platform() == "cpu"
    resolved = _choose_schedule(schedule, weight_dtype, group.sharded, cpu, 4 * n * hidden_size, scalar)
    default_tc, default_vc = _default_chunks(resolved, cpu, hidden_size, vocab * num_heads)
    matmul_dtype = functools.reduce(jnp.promote_types, dtypes)
    acc_dtype = _checks.compute_dtype(matmul_dtype)
    if cpu:
        matmul_dtype = _checks.compute_dtype(matmul_dtype)  # no 16-bit matmul units: cast blocks to float32
    cfg = FusedConfig(
        num_tokens=n,
        vocab=vocab,
        token_chunk=_chunk(token_chunk_size, default_tc, n, "token_chunk_size"),
        vocab_chunk=_chunk(chunk_size, default_vc, vocab, "chunk_size"),
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
        vocab_axis=vocab_axis,
        group=group,
    )
    return cfg, options.arrays(acc_dtype)


def per_class(x: Any, vocab: int, name: str, what: str = "") -> jax.Array | None:
    """A ``[V]`` per-class array (``bias``, ``class_weight``) checked for its shape, or ``None``; ``what`` says what
    it must be (e.g. this device's slice)."""
    if x is None:
        return None
    x = _checks.as_float_array(x, name)
    if x.shape != (vocab,):
        raise ValueError(f"`{name}` must {what}have shape ({vocab},); got shape {tuple(x.shape)}.")
    return x


def check_head(hidden: Any, weight: Any, weight_layout: str, names: tuple[str, str] = ("hidden", "weight")):
    """``hidden [..., D]`` and ``weight`` (``[D, V]``, or ``[V, D]`` with ``weight_layout="vd"``) checked against each
    other; raises ``ValueError``/``TypeError`` naming the argument (``names``)."""
    h_name, w_name = names
    hidden = _checks.as_float_array(hidden, h_name)
    weight = _checks.as_float_array(weight, w_name)
    if hidden.ndim < 1:
        raise ValueError(f"`{h_name}` must have shape [..., D]; got shape {tuple(hidden.shape)}.")
    if weight_layout not in WEIGHT_LAYOUTS:
        raise ValueError(f"`weight_layout` must be one of {WEIGHT_LAYOUTS}; got {weight_layout!r}.")
    d_axis = 0 if weight_layout == "dv" else 1
    if weight.ndim != 2 or weight.shape[d_axis] != hidden.shape[-1]:
        expected = "[D, V]" if weight_layout == "dv" else "[V, D]"
        other = "`weight_layout='vd'` for a [V, D] matrix" if weight_layout == "dv" else "the default layout [D, V]"
        raise ValueError(
            f"`{w_name}` must have shape {expected} with D = {h_name}.shape[-1] = {hidden.shape[-1]}; got shape "
            f"{tuple(weight.shape)}. Use {other}."
        )
    if weight.shape[1 - d_axis] < 1:
        raise ValueError(f"`{w_name}` must have at least one class (V >= 1).")
    return hidden, weight


def check_batch(x: Any, batch_shape: tuple[int, ...], name: str, what: str = "") -> None:
    """``ValueError`` unless ``x`` has the batch shape (``hidden``'s shape without ``D``)."""
    if tuple(x.shape) != tuple(batch_shape):
        raise ValueError(
            f"`{name}` must {what}have shape {tuple(batch_shape)} (hidden's shape without D); got shape "
            f"{tuple(x.shape)}."
        )


def check_linear_inputs(hidden: Any, weight: Any, labels: Any, weight_layout: str) -> tuple[jax.Array, ...]:
    """``hidden [..., D]``, ``weight`` (``[D, V]`` or, with ``weight_layout="vd"``, ``[V, D]``) and integer
    ``labels [...]``, checked against each other; raises ``ValueError``/``TypeError`` naming the argument."""
    hidden, weight = check_head(hidden, weight, weight_layout)
    labels = _checks.as_int_array(labels, "labels")
    check_batch(labels, hidden.shape[:-1], "labels")
    return hidden, weight, labels


def row_weights(token_weight: Any, where: Any, batch_shape: tuple[int, ...], dtype: Any) -> jax.Array | None:
    """Per-token weights ``[N]`` (no gradient), 0 where ``where`` is false; ``None`` when neither is given.

    ``token_weight`` must be real, of the batch shape; ``where`` boolean, of the batch shape.
    """
    if token_weight is None and where is None:
        return None
    n = math.prod(batch_shape)
    rw = jnp.ones((n,), dtype)
    if token_weight is not None:
        token_weight = _checks.as_float_array(token_weight, "token_weight")
        check_batch(token_weight, batch_shape, "token_weight")
        rw = token_weight.reshape(n).astype(dtype)
    if where is not None:
        where = jnp.asarray(where)
        if where.dtype != jnp.bool_:
            raise TypeError(f"`where` must be a boolean mask; got dtype {where.dtype}.")
        check_batch(where, batch_shape, "where")
        rw = jnp.where(where.reshape(n), rw, 0.0)
    return jax.lax.stop_gradient(rw)
