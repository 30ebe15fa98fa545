"""Vocabulary-parallel softmax cross-entropy over a device mesh (Megatron-LM style).

Each device along a mesh axis holds one contiguous slice of the vocabulary: device ``r`` of ``R`` owns classes
``[r V/R, (r+1) V/R)``. The loss needs one ``pmax`` and two or three ``psum`` of ``[tokens]`` vectors (and an
``all_gather`` of the ``[V]`` class weights when given), nothing of size ``tokens x V``:

.. math::
  M = \\mathrm{pmax}_r\\, \\max_c z_c, \\quad
  \\mathrm{lse} = M + \\log \\mathrm{psum}_r \\sum_{c \\in r} e^{z_c - M}, \\quad
  z_y = \\mathrm{psum}_r\\, [y \\in r]\\, z_y, \\quad
  \\textstyle\\sum_c w_c z_c = \\mathrm{psum}_r \\sum_{c \\in r} w_c z_c,

then the per-token loss of :func:`jxent.softmax_cross_entropy_with_integer_labels` (label smoothing and z-loss over
the global vocabulary). The gradient is local: device ``r`` gets
:math:`\\partial \\ell / \\partial z_{c \\in r} = (a + b \\sum_c w_c + 2 \\lambda_z \\mathrm{lse})\\, p_c - q_c`
(``jax.custom_vjp``; no collective in the backward pass of the dense version, a ``psum`` of ``dh`` over the
vocabulary axis in the fused one, and of ``dW``/``db`` over the mesh axes that split the tokens).

Two levels:

* :func:`vocab_parallel_softmax_cross_entropy` and :func:`vocab_parallel_linear_softmax_cross_entropy` run *inside*
  :func:`jax.shard_map` and take the local slices and the axis name.
* :func:`sharded_softmax_cross_entropy` and :func:`sharded_linear_softmax_cross_entropy` take global arrays, a
  :class:`jax.sharding.Mesh` and the axis names, and wrap the above in ``shard_map`` (use them under ``jit``).

A vocabulary that does not divide evenly over the devices is refused at trace time with a ``ValueError`` that
names both sizes (the wrappers check it; inside ``shard_map`` the slices are equal by construction). Padding with
``-inf`` logits is not done: choose a mesh whose vocabulary axis divides ``V``, or size the model's vocabulary to a
multiple of it (as is common, e.g. a multiple of 128).

Masked classes (``-inf`` logits) are handled as in the dense loss as long as no label smoothing is used and every
row keeps at least one finite logit. Label smoothing here is spread over all ``V`` classes (the dense loss spreads
it over the present ones), so a ``-inf`` logit then gives a ``+inf`` loss; a row whose logits are all ``-inf``
gives NaN (the dense loss gives 0 and does not count it). Both results are visible, never a finite wrong number.

Reference: Shoeybi et al., `Megatron-LM: Training Multi-Billion Parameter Language Models Using Model Parallelism
<https://arxiv.org/abs/1909.08053>`_, 2019.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jxent import _checks
from jxent import fused as _fused

__all__ = [
    "sharded_linear_softmax_cross_entropy",
    "sharded_softmax_cross_entropy",
    "vocab_parallel_linear_softmax_cross_entropy",
    "vocab_parallel_softmax_cross_entropy",
]


def _axis_size(axis_name: Any) -> int:
    try:
        return int(lax.axis_size(axis_name))
    except (NameError, ValueError) as e:
        raise ValueError(
            f"`axis_name` {axis_name!r} is not a mesh axis bound here; call this inside `jax.shard_map` over a mesh "
            "with that axis, or use the `sharded_*` wrapper."
        ) from e


# --------------------------------------------------------------------------------------------------------------
# Dense logits: custom_vjp over this device's [N, V_local] slice
# --------------------------------------------------------------------------------------------------------------


def _dense_forward(st: _fused._Static, x, labels, cw, opts: _fused._Options):
    xf = x.astype(st.acc_dtype)
    local = _fused._local_labels(st, labels)
    z_lse, target, wsum = _fused._block_stats(st, opts, xf, 0, None, local, cw)
    m, s, _, _ = _fused._stats_init(st.num_tokens, st.acc_dtype)
    m, s = _fused._online_update(m, s, z_lse)
    lse, target, wsum = _fused._combine(st, m, s, target, wsum)
    a, b, counted, _, weight_sum = _fused._coefficients(st, opts, labels, cw)
    loss = _fused.row_loss(
        a=a,
        b=b,
        counted=counted,
        lse=lse,
        target_logit=target,
        weighted_logit_sum=wsum,
        weight_sum=weight_sum,
        z_loss=opts.z_loss if st.has_z_loss else None,
    )
    return loss, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _dense(st: _fused._Static, x, labels, cw, opts: _fused._Options):
    return _dense_forward(st, x, labels, cw, opts)


def _dense_fwd(st: _fused._Static, x, labels, cw, opts: _fused._Options):
    loss, lse = _dense_forward(st, x, labels, cw, opts)
    return (loss, lse), (x, labels, cw, opts, lse)


def _dense_bwd(st: _fused._Static, res, cts):
    x, labels, cw, opts, lse = res
    ct_loss, ct_lse = cts
    rows = _fused._row_cotangents(st, opts, labels, cw, lse, ct_loss, ct_lse)
    dx = _fused._logit_cotangent(st, opts, x.astype(st.acc_dtype), 0, None, rows, cw, None)
    return dx.astype(x.dtype), None, None, _fused._Options(*(jnp.zeros_like(o) for o in opts))


_dense.defvjp(_dense_fwd, _dense_bwd)


def vocab_parallel_softmax_cross_entropy(
    logits: Any,
    labels: Any,
    *,
    axis_name: Any,
    class_weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: Any = 0.0,
    z_loss: Any = 0.0,
    soft_cap: Any = None,
    temperature: Any = 1.0,
    reduction: str = "none",
    batch_axis_name: Any = None,
    return_lse: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Softmax cross-entropy with integer labels over vocabulary-sharded logits; call inside :func:`jax.shard_map`.

    Equals :func:`jxent.softmax_cross_entropy_with_integer_labels` of the gathered logits (same options, formula and
    gradients; for ``-inf`` logits see the module docstring), computed from this device's slice with
    ``pmax``/``psum`` over ``axis_name``:

    .. math::
      \\ell = (1-\\varepsilon) w_y (\\mathrm{lse} - z_y) + \\frac{\\varepsilon}{V} \\sum_{c<V} w_c (\\mathrm{lse} - z_c)
      + \\lambda_z \\mathrm{lse}^2.

    Memory: the local ``[..., V/R]`` logits and ``O(tokens)`` statistics; the backward pass stores ``lse`` and
    needs no collective.

    Args:
      logits: This device's slice ``[..., V/R]``; device ``r`` (``lax.axis_index(axis_name)``) holds classes
        ``[r V/R, (r+1) V/R)``.
      labels: Global integer labels ``[...]``, the same on every device of ``axis_name``.
      axis_name: Mesh axis (or tuple of axes) the vocabulary is split over.
      class_weight: This device's slice ``[V/R]`` of the per-class weights.
      ignore_index, label_smoothing, z_loss, soft_cap, temperature: As in the dense loss; smoothing is spread over
        the global vocabulary ``V``.
      reduction: ``"none"`` (default), ``"sum"`` or ``"mean"`` over this device's tokens, or over all tokens of
        ``batch_axis_name`` when given (the sums are ``psum``-ed over it).
      batch_axis_name: Mesh axis the tokens are split over, for ``"sum"``/``"mean"``.
      return_lse: Also return the global log-sum-exp per token.

    Returns:
      The loss (float32), identical on every device of ``axis_name``; and ``lse`` when ``return_lse``.

    References:
      Shoeybi et al., `Megatron-LM <https://arxiv.org/abs/1909.08053>`_, 2019.
    """
    _fused.check_options(
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        soft_cap=soft_cap,
        temperature=temperature,
        reduction=reduction,
        ignore_index=ignore_index,
    )
    logits = _checks.as_float_array(logits, "logits")
    labels = _checks.as_int_array(labels, "labels")
    if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"`labels` must have the batch shape of `logits` {tuple(logits.shape[:-1])}; got shape "
            f"{tuple(labels.shape)}."
        )
    size = _axis_size(axis_name)
    v_local = logits.shape[-1]
    n = math.prod(labels.shape)
    cw = None
    if class_weight is not None:
        cw = _checks.as_float_array(class_weight, "class_weight")
        if cw.shape != (v_local,):
            raise ValueError(
                f"`class_weight` must be this device's slice, shape ({v_local},); got shape {tuple(cw.shape)}."
            )
    # The dense case is the fused configuration with one block covering this device's whole slice.
    st, opts = _fused.make_config(
        num_tokens=n,
        vocab=v_local,
        hidden_size=1,
        dtypes=(logits.dtype,),
        weight_dtype=logits.dtype,
        bias_dtype=None,
        has_class_weight=cw is not None,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        soft_cap=soft_cap,
        temperature=temperature,
        chunk_size=v_local,
        token_chunk_size=max(n, 1),
        schedule="token",
        axis_name=axis_name,
        axis_size=size,
    )
    cw = None if cw is None else lax.stop_gradient(cw.astype(st.acc_dtype))
    n = math.prod(labels.shape)
    if n == 0:
        empty = jnp.zeros(labels.shape, jnp.float32)
        out = _fused.reduce_over(empty, empty, reduction, batch_axis_name)
        return (out, empty) if return_lse else out
    x = logits.reshape(n, v_local)
    y = _checks.labels_as_int32(labels.reshape(n), st.global_vocab, ignore_index)
    losses, lse = _dense(st, x, y, cw, opts)
    example_weight = lax.stop_gradient(_fused._coefficients(st, opts, y, cw)[3])
    losses, lse, example_weight = (a.reshape(labels.shape) for a in (losses, lse, example_weight))
    out = _fused.reduce_over(losses, example_weight, reduction, batch_axis_name)
    return (out, lse) if return_lse else out


def vocab_parallel_linear_softmax_cross_entropy(
    hidden: Any,
    weight: Any,
    labels: Any,
    *,
    axis_name: Any,
    bias: Any = None,
    class_weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: Any = 0.0,
    z_loss: Any = 0.0,
    soft_cap: Any = None,
    temperature: Any = 1.0,
    reduction: str = "none",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: str = "auto",
    weight_layout: str = "dv",
    batch_axis_name: Any = None,
    return_lse: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """:func:`jxent.linear_softmax_cross_entropy` with a vocabulary-sharded ``weight``; call inside ``shard_map``.

    Each device computes the logits of its vocabulary slice block by block (never ``[tokens, V/R]`` at once),
    combines the running statistics with one ``pmax`` and two or three ``psum`` of ``[tokens]`` vectors, and in the
    backward pass recomputes its blocks, builds its own ``dW``/``db`` slice and ``psum``-s the ``[tokens, D]``
    float32 ``dh``. Memory per device: the fused loss's blocks (see :func:`jxent.linear_softmax_cross_entropy`)
    plus ``dh`` in float32. ``schedule="one_pass"`` is not available here (it becomes ``"token"``).

    Args:
      hidden: ``[..., D]``, the same on every device of ``axis_name``.
      weight: This device's ``[D, V/R]`` slice of the output matrix (``[V/R, D]`` with ``weight_layout="vd"``).
      labels: Global integer labels ``[...]``.
      axis_name: Mesh axis the vocabulary is split over.
      bias, class_weight: This device's ``[V/R]`` slices, or ``None``.
      ignore_index, label_smoothing, z_loss, soft_cap, temperature, chunk_size, token_chunk_size, schedule,
        weight_layout: As in :func:`jxent.linear_softmax_cross_entropy`.
      reduction: ``"none"`` (default), ``"sum"`` or ``"mean"`` (over ``batch_axis_name`` too when given).
      batch_axis_name: Mesh axis the tokens are split over, for ``"sum"``/``"mean"``.
      return_lse: Also return the global log-sum-exp per token.

    References:
      Shoeybi et al., `Megatron-LM <https://arxiv.org/abs/1909.08053>`_, 2019; Wijmans et al., `Cut Your Losses in
      Large-Vocabulary Language Models <https://arxiv.org/abs/2411.09009>`_, 2024.
    """
    p = _fused.prepare(
        hidden,
        weight,
        labels,
        bias=bias,
        class_weight=class_weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        soft_cap=soft_cap,
        temperature=temperature,
        reduction=reduction,
        chunk_size=chunk_size,
        token_chunk_size=token_chunk_size,
        schedule=schedule,
        weight_layout=weight_layout,
        axis_name=axis_name,
        axis_size=_axis_size(axis_name),
    )
    return _fused.compute(p, reduction, return_lse, batch_axis_name)


# --------------------------------------------------------------------------------------------------------------
# Wrappers over global arrays
# --------------------------------------------------------------------------------------------------------------


def _mesh_axis_size(mesh: Mesh, axis: Any, name: str) -> int:
    axes = axis if isinstance(axis, tuple) else (axis,)
    for a in axes:
        if a not in mesh.shape:
            raise ValueError(f"`{name}` {a!r} is not an axis of the mesh (axes {tuple(mesh.axis_names)}).")
    return math.prod(mesh.shape[a] for a in axes)


def _placed(mesh: Mesh, specs: tuple, arrays: tuple) -> tuple:
    """``arrays`` laid out as ``shard_map``'s ``in_specs`` say. On a mesh with ``Explicit`` axes (the default of
    ``jax.make_mesh``) an array's sharding is part of its type and must already match; on ``Auto`` axes XLA
    reshards as needed, and the arrays are passed as they are."""
    if not any(t == AxisType.Explicit for t in getattr(mesh, "axis_types", ())):
        return arrays
    return tuple(
        None if a is None else jax.sharding.reshard(a, NamedSharding(mesh, s))
        for a, s in zip(arrays, specs, strict=True)
    )


def _check_divides(total: int, mesh: Mesh, axis: Any, what: str, name: str) -> None:
    size = _mesh_axis_size(mesh, axis, name)
    if total % size:
        raise ValueError(
            f"The {what} ({total}) must be divisible by the number of devices along `{name}` {axis!r} ({size}); "
            f"pad it to a multiple of {size} (e.g. {-(-total // size) * size}) or choose another mesh."
        )


def _batch_spec(ndim: int, batch_axis: Any) -> tuple:
    if ndim == 0:
        return ()
    return (batch_axis, *([None] * (ndim - 1)))


def sharded_softmax_cross_entropy(
    logits: Any,
    labels: Any,
    *,
    mesh: Mesh,
    vocab_axis: Any,
    batch_axis: Any = None,
    class_weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: Any = 0.0,
    z_loss: Any = 0.0,
    soft_cap: Any = None,
    temperature: Any = 1.0,
    reduction: str = "mean",
) -> jax.Array:
    """Vocabulary-parallel :func:`jxent.softmax_cross_entropy_with_integer_labels` on global arrays.

    Splits the class axis of ``logits [..., V]`` over the mesh axis ``vocab_axis`` (and, optionally, the first
    batch axis over ``batch_axis``) and runs :func:`vocab_parallel_softmax_cross_entropy` in :func:`jax.shard_map`.
    Works under ``jit`` and eagerly, on meshes with ``Auto`` or ``Explicit`` axes (``jax.make_mesh``'s default);
    inputs not already sharded that way are resharded first.

    Args:
      logits: ``[..., V]``; ``V`` must be divisible by the size of ``vocab_axis`` (``ValueError`` otherwise).
      labels: Integer labels ``[...]``.
      mesh: The device mesh.
      vocab_axis: Mesh axis name (or tuple of names) for the vocabulary.
      batch_axis: Optional mesh axis for the first batch axis (data parallelism).
      class_weight: Per-class weights ``[V]``.
      ignore_index, label_smoothing, z_loss, soft_cap, temperature: As in the dense loss.
      reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Returns:
      The loss, equal to the dense loss on the gathered logits (for ``-inf`` logits see the module docstring).
    """
    logits = _checks.as_float_array(logits, "logits")
    labels = _checks.as_int_array(labels, "labels")
    if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"`labels` must have the batch shape of `logits` {tuple(logits.shape[:-1])}; got shape "
            f"{tuple(labels.shape)}."
        )
    _check_divides(logits.shape[-1], mesh, vocab_axis, "vocabulary size V", "vocab_axis")
    if batch_axis is not None and labels.ndim:
        _check_divides(labels.shape[0], mesh, batch_axis, "first batch dimension", "batch_axis")
    _checks.check_reduction(reduction)
    b_spec = _batch_spec(labels.ndim, batch_axis)
    cw = None if class_weight is None else jnp.asarray(class_weight)

    def local(x, y, w):
        return vocab_parallel_softmax_cross_entropy(
            x,
            y,
            axis_name=vocab_axis,
            class_weight=w,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            soft_cap=soft_cap,
            temperature=temperature,
            reduction=reduction,
            batch_axis_name=batch_axis if labels.ndim else None,  # a 0-d batch is not split over it
        )

    out_spec = PartitionSpec(*b_spec) if reduction == "none" else PartitionSpec()
    in_specs = (PartitionSpec(*b_spec, vocab_axis), PartitionSpec(*b_spec), PartitionSpec(vocab_axis))
    fn = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=out_spec)
    return fn(*_placed(mesh, in_specs, (logits, labels, cw)))


def sharded_linear_softmax_cross_entropy(
    hidden: Any,
    weight: Any,
    labels: Any,
    *,
    mesh: Mesh,
    vocab_axis: Any,
    batch_axis: Any = None,
    bias: Any = None,
    class_weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: Any = 0.0,
    z_loss: Any = 0.0,
    soft_cap: Any = None,
    temperature: Any = 1.0,
    reduction: str = "mean",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: str = "auto",
    weight_layout: str = "dv",
) -> jax.Array:
    """Vocabulary-parallel :func:`jxent.linear_softmax_cross_entropy` on global arrays.

    ``weight [D, V]`` (``[V, D]`` with ``weight_layout="vd"``; and ``bias``/``class_weight``) are split along ``V``
    over ``vocab_axis``; ``hidden`` is replicated over it (and optionally split along its first axis over
    ``batch_axis``). Runs :func:`vocab_parallel_linear_softmax_cross_entropy` in :func:`jax.shard_map`; use under
    ``jit``. Meshes with ``Auto`` or ``Explicit`` axes (``jax.make_mesh``'s default) both work; inputs not already
    sharded that way are resharded first.

    Args:
      hidden: ``[..., D]``.
      weight: ``[D, V]`` (or ``[V, D]``, see ``weight_layout``); ``V`` must be divisible by the size of
        ``vocab_axis`` (``ValueError`` otherwise).
      labels: Integer labels ``[...]``.
      mesh, vocab_axis, batch_axis: As in :func:`sharded_softmax_cross_entropy`.
      bias, class_weight, ignore_index, label_smoothing, z_loss, soft_cap, temperature, reduction, chunk_size,
        token_chunk_size, schedule, weight_layout: As in :func:`jxent.linear_softmax_cross_entropy`
        (``chunk_size`` is the block of each device's slice).

    Returns:
      The loss, equal to :func:`jxent.linear_softmax_cross_entropy` on one device.
    """
    hidden = _checks.as_float_array(hidden, "hidden")
    weight = _checks.as_float_array(weight, "weight")
    labels = _checks.as_int_array(labels, "labels")
    if weight_layout not in _fused.WEIGHT_LAYOUTS:
        raise ValueError(f"`weight_layout` must be one of {_fused.WEIGHT_LAYOUTS}; got {weight_layout!r}.")
    v_axis = 1 if weight_layout == "dv" else 0
    if weight.ndim != 2:
        expected = "[D, V]" if weight_layout == "dv" else "[V, D]"
        raise ValueError(f"`weight` must have shape {expected}; got shape {tuple(weight.shape)}.")
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(
            f"`labels` must have shape {tuple(hidden.shape[:-1])} (hidden's shape without D); got shape "
            f"{tuple(labels.shape)}."
        )
    _check_divides(weight.shape[v_axis], mesh, vocab_axis, "vocabulary size V", "vocab_axis")
    if batch_axis is not None and labels.ndim:
        _check_divides(labels.shape[0], mesh, batch_axis, "first batch dimension", "batch_axis")
    _checks.check_reduction(reduction)
    b_spec = _batch_spec(labels.ndim, batch_axis)
    bias = None if bias is None else jnp.asarray(bias)
    cw = None if class_weight is None else jnp.asarray(class_weight)

    def local(h, w, y, b, c):
        return vocab_parallel_linear_softmax_cross_entropy(
            h,
            w,
            y,
            axis_name=vocab_axis,
            bias=b,
            class_weight=c,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            soft_cap=soft_cap,
            temperature=temperature,
            reduction=reduction,
            chunk_size=chunk_size,
            token_chunk_size=token_chunk_size,
            schedule=schedule,
            weight_layout=weight_layout,
            batch_axis_name=batch_axis if labels.ndim else None,  # a 0-d batch is not split over it
        )

    out_spec = PartitionSpec(*b_spec) if reduction == "none" else PartitionSpec()
    vspec = PartitionSpec(vocab_axis)
    in_specs = (
        PartitionSpec(*b_spec, None),
        PartitionSpec(None, vocab_axis) if weight_layout == "dv" else PartitionSpec(vocab_axis, None),
        PartitionSpec(*b_spec),
        vspec,
        vspec,
    )
    fn = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=out_spec)
    return fn(*_placed(mesh, in_specs, (hidden, weight, labels, bias, cw)))
