"""Vocabulary-parallel softmax cross-entropy inside ``jax.shard_map``: each device holds one slice of the classes.

Both functions here take this device's slice and the mesh axis name and run the fused kernels of
:mod:`jxent.fused` with a :class:`jxent.parallel.collectives.VocabShards` group, so the per-row maths is that of
the dense and fused losses (one home, :mod:`jxent._rowmath`), combined across devices with one ``pmax`` and
``psum`` of ``[tokens]`` vectors. The gradient is local: device ``r`` gets
:math:`\\partial \\ell / \\partial z_{c \\in r} = (\\sum_c q_c + 2 \\lambda_z \\mathrm{lse})\\, p_c - q_c`
(``jax.custom_vjp``; no collective in the backward pass of the dense version, a ``psum`` of ``dh`` over the
vocabulary axis in the fused one, and of ``dW``/``db`` over the mesh axes that split the tokens).
"""

from __future__ import annotations

import functools
import math
from typing import Literal, overload

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jxent import _checks
from jxent._options import CrossEntropyOptions, OptionArrays
from jxent._typing import MeshAxes, Reduction, Schedule, WeightLayout
from jxent.fused.config import FusedConfig, make_config, per_class
from jxent.fused.cross_entropy import CrossEntropy
from jxent.fused.kernel import per_row
from jxent.fused.objective import Labels
from jxent.fused.prepare import prepare_arguments
from jxent.parallel.collectives import VocabShards, axis_size, reduce_over

__all__ = ["vocab_parallel_linear_softmax_cross_entropy", "vocab_parallel_softmax_cross_entropy"]


_CE = CrossEntropy()


def _dense_rows(cfg: FusedConfig, x, labels, cw, arrays: OptionArrays):
    """The cross-entropy objective on one block that covers this device's whole slice."""
    ctx = Labels(labels, cfg.group.local_labels(labels, cfg.vocab))
    acc = _CE.block(cfg, arrays, 0, (x.astype(cfg.acc_dtype),), 0, None, ctx, cw)
    return _CE.finish(cfg, arrays, 0, acc, ctx, cw)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _dense(cfg: FusedConfig, x, labels, cw, arrays: OptionArrays):
    done = _dense_rows(cfg, x, labels, cw, arrays)
    return (*_CE.outputs(done), _CE.count(done))


def _dense_fwd(cfg: FusedConfig, x, labels, cw, arrays: OptionArrays):
    done = _dense_rows(cfg, x, labels, cw, arrays)
    return (*_CE.outputs(done), _CE.count(done)), (x, cw, arrays, done)


def _dense_bwd(cfg: FusedConfig, res, cts):
    x, cw, arrays, done = res
    coefs = _CE.cotangents(cfg, done, cts[:2])
    (dx,) = _CE.grad_block(cfg, arrays, (x.astype(cfg.acc_dtype),), 0, None, coefs, cw, None)
    return dx.astype(x.dtype), None, None, OptionArrays(*(jnp.zeros_like(o) for o in arrays))


_dense.defvjp(_dense_fwd, _dense_bwd)


@overload
def vocab_parallel_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: MeshAxes,
    class_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "none",
    batch_axis_name: MeshAxes | None = None,
    return_lse: Literal[False] = False,
) -> jax.Array: ...


@overload
def vocab_parallel_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: MeshAxes,
    class_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "none",
    batch_axis_name: MeshAxes | None = None,
    return_lse: Literal[True],
) -> tuple[jax.Array, jax.Array]: ...


@overload
def vocab_parallel_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: MeshAxes,
    class_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "none",
    batch_axis_name: MeshAxes | None = None,
    return_lse: bool,
) -> jax.Array | tuple[jax.Array, jax.Array]: ...


def vocab_parallel_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: MeshAxes,
    class_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "none",
    batch_axis_name: MeshAxes | None = None,
    return_lse: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    r"""Softmax cross-entropy with integer labels over vocabulary-sharded logits; call inside :func:`jax.shard_map`.

    Equals :func:`jxent.softmax_cross_entropy_with_integer_labels` of the gathered logits (same options, formula and
    gradients, also for ``-inf`` logits and rows with no class left), computed from this device's slice with
    ``pmax``/``psum`` over ``axis_name``:

    .. math::
      \ell = (1-\varepsilon) w_y (\mathrm{lse} - z_y) + \frac{\varepsilon}{K} \sum_{c} w_c (\mathrm{lse} - z_c)
      + \lambda_z \mathrm{lse}^2.

    Memory: the local ``[..., V/R]`` logits and ``O(tokens)`` statistics; the backward pass stores a few per-token
    vectors and needs no collective.

    Args:
      logits: This device's slice ``[..., V/R]``; device ``r`` (``lax.axis_index(axis_name)``) holds classes
        ``[r V/R, (r+1) V/R)``.
      labels: Global integer labels ``[...]``, the same on every device of ``axis_name``.
      axis_name: Mesh axis (or tuple of axes) the vocabulary is split over.
      class_weight: This device's slice ``[V/R]`` of the per-class weights.
      ignore_index, label_smoothing, z_loss, soft_cap, temperature: As in the dense loss; smoothing is spread over
        the present classes of the global vocabulary.
      reduction: ``"none"`` (default), ``"sum"`` or ``"mean"`` over this device's tokens, or over all tokens of
        ``batch_axis_name`` when given (the sums are ``psum``-ed over it).
      batch_axis_name: Mesh axis the tokens are split over, for ``"sum"``/``"mean"``.
      return_lse: Also return the global log-sum-exp per token.

    Returns:
      The loss (float32), identical on every device of ``axis_name``; and ``lse`` when ``return_lse``.

    References:
      Shoeybi et al., `Megatron-LM <https://arxiv.org/abs/1909.08053>`_, 2019.

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> from jax.sharding import NamedSharding, PartitionSpec as P
      >>> mesh = jax.make_mesh((jax.device_count(),), ("vocab",))  # the device count must divide V = 8
      >>> logits = jnp.arange(16.0).reshape(2, 8) % 5 - 2.0  # [N, V]
      >>> labels = jnp.array([0, 6])
      >>> def local(x, y):  # x: this device's [N, V/R] slice
      ...     return jxent.vocab_parallel_softmax_cross_entropy(x, y, axis_name="vocab")
      >>> f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(None, "vocab"), P()), out_specs=P()))
      >>> x = jax.device_put(logits, NamedSharding(mesh, P(None, "vocab")))
      >>> bool(jnp.allclose(f(x, labels), jxent.softmax_cross_entropy_with_integer_labels(logits, labels)))
      True
    """
    options = CrossEntropyOptions.pick(locals())
    logits = _checks.as_float_array(logits, "logits")
    labels = _checks.as_int_array(labels, "labels")
    if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"`labels` must have the batch shape of `logits` {tuple(logits.shape[:-1])}; got shape "
            f"{tuple(labels.shape)}."
        )
    v_local = logits.shape[-1]
    n = math.prod(labels.shape)
    cw = per_class(class_weight, v_local, "class_weight", "be this device's slice of the class weights, and ")
    # The dense case is the fused configuration with one block covering this device's whole slice.
    cfg, arrays = make_config(
        num_tokens=n,
        vocab=v_local,
        hidden_size=1,
        dtypes=(logits.dtype,),
        weight_dtype=logits.dtype,
        has_class_weight=cw is not None,
        options=options,
        chunk_size=v_local,
        token_chunk_size=max(n, 1),
        schedule="token",
        group=VocabShards(axis_name, axis_size(axis_name)),
    )
    if n == 0:
        empty = jnp.zeros(labels.shape, jnp.float32)
        out = reduce_over(empty, empty, reduction, batch_axis_name)
        return (out, empty) if return_lse else out
    cw = None if cw is None else lax.stop_gradient(cw.astype(cfg.acc_dtype))
    y = _checks.labels_as_int32(labels.reshape(n), cfg.global_vocab, ignore_index)
    losses, lse, weight = _dense(cfg, logits.reshape(n, v_local), y, cw, arrays)
    losses, lse, weight = (a.reshape(labels.shape) for a in (losses, lse, lax.stop_gradient(weight)))
    out = reduce_over(losses, weight, reduction, batch_axis_name)
    return (out, lse) if return_lse else out


@overload
def vocab_parallel_linear_softmax_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: MeshAxes,
    bias: ArrayLike | None = None,
    class_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "none",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
    token_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
    batch_axis_name: MeshAxes | None = None,
    return_lse: Literal[False] = False,
) -> jax.Array: ...


@overload
def vocab_parallel_linear_softmax_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: MeshAxes,
    bias: ArrayLike | None = None,
    class_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "none",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
    token_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
    batch_axis_name: MeshAxes | None = None,
    return_lse: Literal[True],
) -> tuple[jax.Array, jax.Array]: ...


@overload
def vocab_parallel_linear_softmax_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: MeshAxes,
    bias: ArrayLike | None = None,
    class_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "none",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
    token_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
    batch_axis_name: MeshAxes | None = None,
    return_lse: bool,
) -> jax.Array | tuple[jax.Array, jax.Array]: ...


def vocab_parallel_linear_softmax_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: MeshAxes,
    bias: ArrayLike | None = None,
    class_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "none",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
    token_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
    batch_axis_name: MeshAxes | None = None,
    return_lse: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """:func:`jxent.linear_softmax_cross_entropy` with a vocabulary-sharded ``weight``; call inside ``shard_map``.

    Each device computes the logits of its vocabulary slice block by block (never ``[tokens, V/R]`` at once),
    combines the running statistics with one ``pmax`` and two ``psum`` of ``[tokens]`` vectors, and in the
    backward pass recomputes its blocks, builds its own ``dW``/``db`` slice and ``psum``-s the ``[tokens, D]``
    float32 ``dh``. Memory per device: the fused loss's blocks (see :func:`jxent.linear_softmax_cross_entropy`)
    plus ``dh`` in float32. ``schedule="one_pass"`` is not available here (it becomes ``"token"``).

    Args:
      hidden: ``[..., D]``, the same on every device of ``axis_name``.
      weight: This device's ``[D, V/R]`` slice of the output matrix (``[V/R, D]`` with ``weight_layout="vd"``).
      labels: Global integer labels ``[...]``.
      axis_name: Mesh axis the vocabulary is split over.
      bias, class_weight: This device's ``[V/R]`` slices, or ``None``.
      ignore_index, label_smoothing, z_loss, soft_cap, temperature: As in :func:`jxent.linear_softmax_cross_entropy`.
      chunk_size, token_chunk_size, schedule, weight_layout: As in :func:`jxent.linear_softmax_cross_entropy`.
      token_weight, where: As in :func:`jxent.linear_softmax_cross_entropy`; of the batch shape, the same on every
        device of ``axis_name``.
      reduction: ``"none"`` (default), ``"sum"`` or ``"mean"`` (over ``batch_axis_name`` too when given).
      batch_axis_name: Mesh axis the tokens are split over, for ``"sum"``/``"mean"``.
      return_lse: Also return the global log-sum-exp per token.

    References:
      Shoeybi et al., `Megatron-LM <https://arxiv.org/abs/1909.08053>`_, 2019; Wijmans et al., `Cut Your Losses in
      Large-Vocabulary Language Models <https://arxiv.org/abs/2411.09009>`_, 2024.

    Examples:
      >>> import jax, jax.numpy as jnp, jxent
      >>> from jax.sharding import NamedSharding, PartitionSpec as P
      >>> mesh = jax.make_mesh((jax.device_count(),), ("vocab",))  # the device count must divide V = 8
      >>> h = jnp.array([[1.0, -1.0], [0.5, 2.0]])  # [N, D]
      >>> w = jnp.array([[0.0, 1.0, -1.0, 0.5, 2.0, 0.0, -0.5, 1.5],
      ...                [1.0, 0.0, 0.5, -1.0, 0.0, 2.0, 1.0, -2.0]])  # [D, V]
      >>> w_split = jax.device_put(w, NamedSharding(mesh, P(None, "vocab")))  # [D, V/R] on each device
      >>> labels = jnp.array([0, 6])
      >>> def local(h, w, y):  # w: this device's [D, V/R] slice
      ...     return jxent.vocab_parallel_linear_softmax_cross_entropy(h, w, y, axis_name="vocab", reduction="mean")
      >>> f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(None, "vocab"), P()), out_specs=P()))
      >>> bool(jnp.allclose(f(h, w_split, labels), jxent.linear_softmax_cross_entropy(h, w, labels)))
      True
    """
    p = prepare_arguments(locals(), group=VocabShards(axis_name, axis_size(axis_name)))
    losses, lse, weight = per_row(p)  # type: ignore[misc]
    out = reduce_over(losses, weight, reduction, batch_axis_name)
    return (out, lse) if return_lse else out
