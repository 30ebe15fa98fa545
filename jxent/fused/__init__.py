"""Linear layer + softmax cross-entropy without materialising the ``[tokens, vocab]`` logits.

For hidden states :math:`h \\in \\mathbb{R}^{N \\times D}`, an output matrix :math:`W \\in \\mathbb{R}^{D \\times V}`
and an optional bias, the logits :math:`x = hW + b` are only ever formed one ``[token_chunk, vocab_chunk]`` block at
a time. The package is layered: :mod:`~jxent.fused.config` (checks, schedule, block sizes),
:mod:`~jxent.fused.blocks` (one block's logits, statistics and gradient), :mod:`~jxent.fused.rows` (each row's loss
and coefficients from the row maths of :mod:`jxent._rowmath`), :mod:`~jxent.fused.schedules` (the loops) and
:mod:`~jxent.fused.kernel` (the ``custom_vjp``). None of it knows about meshes: the vocabulary-sharded losses of
:mod:`jxent.parallel` pass a :class:`~jxent.fused.group.VocabGroup` with their collectives.

Reference: Wijmans et al., `Cut Your Losses in Large-Vocabulary Language Models
<https://arxiv.org/abs/2411.09009>`_, 2024.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, TypeVar, overload

import jax
from jax.typing import ArrayLike

from jxent._typing import Reduction, Schedule, WeightLayout
from jxent.fused.distillation import linear_js_divergence, linear_kl_divergence
from jxent.fused.kernel import compute
from jxent.fused.prepare import prepare_arguments
from jxent.fused.sparse_distillation import linear_sparse_kl_divergence
from jxent.fused.token_statistics import TokenStatistics, linear_token_statistics

_F = TypeVar("_F", bound=Callable[..., Any])


def _points_to_class_weight(fn: _F) -> _F:
    """``weight=`` given by keyword besides the positional output matrix (per-class weights, as the dense functions
    call them) raises a ``TypeError`` that names ``class_weight=`` instead of Python's "multiple values"."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "weight" in kwargs and len(args) >= 2:
            raise TypeError(
                f"{fn.__name__}() got `weight=` besides the positional output matrix. Here `weight` is the [D, V] "
                "output matrix (the second positional argument); per-class weights are `class_weight=`."
            )
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


__all__ = [
    "TokenStatistics",
    "linear_js_divergence",
    "linear_kl_divergence",
    "linear_softmax_cross_entropy",
    "linear_sparse_kl_divergence",
    "linear_token_statistics",
]


@overload
def linear_softmax_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    class_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
    token_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
    return_lse: Literal[False] = False,
) -> jax.Array: ...


@overload
def linear_softmax_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    class_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
    token_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
    return_lse: Literal[True],
) -> tuple[jax.Array, jax.Array]: ...


@overload
def linear_softmax_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    class_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
    token_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
    return_lse: bool,
) -> jax.Array | tuple[jax.Array, jax.Array]: ...


@_points_to_class_weight
def linear_softmax_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    class_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    soft_cap: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
    token_chunk_size: int | None = None,
    schedule: Schedule = "auto",
    weight_layout: WeightLayout = "dv",
    token_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
    return_lse: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Softmax cross-entropy of ``hidden @ weight (+ bias)`` with integer labels, blockwise, without the logits.

    Equal in value and gradients to ``softmax_cross_entropy_with_integer_labels(hidden @ weight + bias, labels,
    weight=class_weight, ...)`` with the same options and formula (``K`` present classes: all ``V`` unless
    ``bias`` masks some with ``-inf``; torch's semantics for class weights, ``ignore_index``, label smoothing and
    ``"mean"``):

    .. math::
      \\ell = (1-\\varepsilon) w_y (\\mathrm{lse} - z_y) + \\frac{\\varepsilon}{K} \\sum_c w_c
      (\\mathrm{lse} - z_c) + \\lambda_z \\mathrm{lse}^2, \\qquad
      z = \\frac{\\mathrm{cap} \\tanh(x / \\mathrm{cap})}{T},\\quad x = hW + b.

    Gradients (``jax.custom_vjp``, reverse mode): with :math:`g = \\partial \\ell / \\partial x` per block,
    :math:`dh = g W^\\top`, :math:`dW = h^\\top g`, :math:`db = \\sum_i g_i`, each row scaled by the cotangent of
    its loss, so ``reduction="none"`` is exact for any per-token cotangent. The cotangent of the returned ``lse``
    (``return_lse=True``) is propagated too (:math:`\\partial\\,\\mathrm{lse}/\\partial z = \\mathrm{softmax}(z)`).

    Memory model (``N`` tokens, ``D`` hidden, ``V`` vocabulary, ``Tc = token_chunk_size``, ``Vc = chunk_size``;
    float32 = 4 bytes). Never anything of size ``N x V``. The forward pass holds one logit block ``4 Tc Vc`` (and a
    few elementwise temporaries of that size) plus ``O(Tc)`` running statistics; for the backward it stores a few
    ``[N]`` per-row vectors (the row maximum and normaliser, the target coefficients) besides the inputs, and
    recomputes each logit block from ``(hidden, weight)``. The
    backward pass (or, for ``"one_pass"``, the forward) then works by ``schedule``:

    * ``"one_pass"`` (3 matmuls; ``"mean"``/``"sum"`` only, else ``"token"``): per token block the logits go into
      a ``4 Tc V`` row buffer, and ``dh``, ``dW``, ``db`` for a unit cotangent are built in the forward pass and
      scaled by the scalar cotangent afterwards. Holds a full float32 ``dW`` (``4 D V``: the gradient's own buffer
      for float32 weights) and a float32 ``dh`` (``4 N D``, also for 16-bit hidden states).
    * ``"token"`` (4 matmuls): token-outer; each ``dh`` block ``4 Tc D`` is complete after its vocabulary loop;
      full float32 ``dW`` accumulator ``4 D V``.
    * ``"vocab"`` (4 matmuls): vocabulary-outer; each ``dW`` block ``4 D Vc`` is complete after its token loop and
      written once in ``weight``'s dtype; full float32 ``dh`` accumulator ``4 N D``.
    * ``"split"`` (5 matmuls): a token-outer loop for ``dh`` (``4 Tc D``), then a vocabulary-outer loop for ``dW``
      (``4 D Vc``): no accumulator of full size.

    ``"auto"`` (default) on CPU: ``"one_pass"`` for float32 weights when the result is one reduced loss
    (``Tc = 2**23 / V``, at most 1024, i.e. a 32 MiB row buffer; ``Vc = 2048``) and ``"token"`` with the blocks below
    when it is per token (``"none"`` or ``return_lse``); ``"split"`` for 16-bit weights. The token-outer and split
    blocks are ``Tc = Vc = 2**floor(log2(2**21 / D))`` in ``[128, 2048]``: 8 MiB float32 blocks (512 at
    ``D = 4096``; about 33 MiB of temporaries at ``N = 8192, V = 131072``). On accelerators, where each loop
    iteration costs kernel launches, few large blocks: ``"vocab"`` while its float32 ``dh`` fits in 256 MiB, else
    ``"split"``, with ``Tc = 8192`` and ``Vc = 2048`` (``"vocab"``) or ``8192``. The platform is that of
    ``jax.default_device`` or the default backend.
    16-bit inputs multiply in their dtype with float32 accumulation (on CPU, blocks are cast to float32).

    ``weight`` is sliced along ``V`` with ``dynamic_slice`` and multiplied with ``dot_general`` in its own layout,
    so a tied embedding ``E [V, D]`` is used as it is, without a transposed copy: pass ``E`` with
    ``weight_layout="vd"``. Passing ``E.T`` in the default layout also works, but XLA then materialises the
    transposed ``[D, V]`` matrix (a copy of the embedding, and of its gradient).

    Args:
      hidden: ``[..., D]`` hidden states (float32, 16-bit or, with x64, float64).
      weight: ``[D, V]`` output matrix (a Flax ``Dense`` kernel), or with ``weight_layout="vd"`` a ``[V, D]`` one
        (a tied embedding table, e.g. Flax ``Embed.embedding``).
      labels: Integer labels ``[...]`` (``hidden``'s shape without ``D``).
      bias: Optional ``[V]`` bias. A ``-inf`` entry masks its class, as a ``-inf`` logit does in the dense loss:
        it has probability 0, label smoothing is spread over the other classes, and a token with no class left
        gives 0 and does not count.
      class_weight: Optional per-class weights ``[V]`` (torch's ``weight``).
      ignore_index: Label value whose tokens give loss 0, gradient 0 and do not count in ``"mean"``.
      label_smoothing: :math:`\\varepsilon \\in [0, 1]`, spread over the ``K`` present classes (all ``V`` unless
        the bias masks some).
      z_loss: Coefficient :math:`\\lambda_z` of :math:`\\mathrm{lse}^2`.
      soft_cap: Soft-capping value (Gemma 2) or ``None``.
      temperature: :math:`T > 0`, applied after soft-capping.
      reduction: ``"mean"`` (default: divided by :math:`\\sum w_{y_i}` over counted tokens, 0 with zero gradients
        if none counts), ``"sum"`` or ``"none"``.
      chunk_size: Vocabulary block ``Vc``; need not divide ``V`` (the last block is shifted back and its overlap
        masked).
      token_chunk_size: Token block ``Tc``; need not divide ``N``.
      schedule: ``"auto"``, ``"one_pass"``, ``"token"``, ``"vocab"`` or ``"split"`` (table above).
      weight_layout: ``"dv"`` (default: ``weight`` is ``[D, V]``) or ``"vd"`` (``weight`` is ``[V, D]``; its
        gradient is ``[V, D]`` too).
      token_weight: Optional per-token weights ``[...]`` (no gradient flows to them). Each token's loss is
        multiplied by its weight, and so is its weight in ``"mean"``, which divides by
        :math:`\\sum_i t_i w_{y_i}` over the counted tokens (:math:`t_i` the token weight, :math:`w_{y_i}` the class
        weight). For a per-sequence mean over packed sequences, give each token ``1 / (tokens of its sequence)`` and
        use ``"sum"`` (divided by the number of sequences if wanted): every sequence then counts once, however long.
      where: Optional boolean mask ``[...]``; tokens where it is false give 0, a zero gradient and do not count
        (also when their label is out of range). A token of weight 0 behaves the same.
      return_lse: Also return the per-token log-sum-exp ``[...]`` of the transformed logits.

    Returns:
      The loss (float32, or float64 for float64 inputs; ``[...]`` for ``"none"``, else a scalar), and ``lse`` when
      ``return_lse``. An out-of-range label that is not ``ignore_index`` gives NaN (``-1`` does not wrap).
      ``label_smoothing``, ``z_loss``, ``soft_cap`` and ``temperature`` are constants (no gradient); ``jax.jvp`` of
      the loss itself is not available (``custom_vjp``), but second derivatives are: ``grad`` of ``grad`` and
      ``jax.hessian`` differentiate the blockwise backward pass.

    References:
      Wijmans et al., `Cut Your Losses in Large-Vocabulary Language Models <https://arxiv.org/abs/2411.09009>`_,
      2024.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, jxent
      >>> hidden = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> weight = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
      >>> labels = jnp.array([0, 1])
      >>> fused = jxent.linear_softmax_cross_entropy(hidden, weight, labels)
      >>> logits = hidden @ weight
      >>> dense = jxent.softmax_cross_entropy_with_integer_labels(logits, labels, reduction='mean')
      >>> bool(jnp.allclose(fused, dense))
      True
    """
    loss, rest = compute(prepare_arguments(locals()), reduction, outputs=return_lse)
    return (loss, rest[0]) if return_lse else loss
