"""Vocabulary-parallel softmax cross-entropy over a device mesh (Megatron-LM style).

Each device along a mesh axis holds one contiguous slice of the vocabulary: device ``r`` of ``R`` owns classes
``[r V/R, (r+1) V/R)``. The loss needs one ``pmax`` and two ``psum`` of ``[tokens]`` vectors (the second sums
all the additive row sums at once; and an ``all_gather`` of the ``[V]`` class weights when given), nothing of size
``tokens x V``:

.. math::
  M = \\mathrm{pmax}_r\\, \\max_c z_c, \\quad
  \\mathrm{lse} = M + \\log \\mathrm{psum}_r \\sum_{c \\in r} e^{z_c - M}, \\quad
  z_y = \\mathrm{psum}_r\\, [y \\in r]\\, z_y, \\quad
  \\textstyle\\sum_c \\sigma_c z_c = \\mathrm{psum}_r \\sum_{c \\in r} \\sigma_c z_c,

and, with label smoothing, :math:`\\sum_c \\sigma_c` and the number :math:`K` of present classes the same way
(:math:`\\sigma_c` is the class weight of a present class, 0 for an absent one); then the per-token loss of
:func:`jxent.softmax_cross_entropy_with_integer_labels`.

Two levels:

* :func:`vocab_parallel_softmax_cross_entropy` and :func:`vocab_parallel_linear_softmax_cross_entropy` run *inside*
  :func:`jax.shard_map` and take the local slices and the axis name.
* :func:`sharded_softmax_cross_entropy` and :func:`sharded_linear_softmax_cross_entropy` take global arrays, a
  :class:`jax.sharding.Mesh` and the axis names, and wrap the above in ``shard_map`` (use them under ``jit``).

A vocabulary that does not divide evenly over the devices is refused at trace time with a ``ValueError`` that
names both sizes (the wrappers check it; inside ``shard_map`` the slices are equal by construction). Padding with
``-inf`` logits is not done: choose a mesh whose vocabulary axis divides ``V``, or size the model's vocabulary to a
multiple of it (as is common, e.g. a multiple of 128).

Masked classes (``-inf`` logits), label smoothing over the present classes and rows with no class left (loss 0,
not counted) behave exactly as in the dense loss: the row maths is the same code.

Reference: Shoeybi et al., `Megatron-LM: Training Multi-Billion Parameter Language Models Using Model Parallelism
<https://arxiv.org/abs/1909.08053>`_, 2019.
"""

from jxent.parallel.collectives import VocabShards
from jxent.parallel.lm_head import (
    vocab_parallel_linear_js_divergence,
    vocab_parallel_linear_kl_divergence,
    vocab_parallel_linear_sparse_kl_divergence,
    vocab_parallel_linear_token_statistics,
)
from jxent.parallel.sharded import sharded_linear_softmax_cross_entropy, sharded_softmax_cross_entropy
from jxent.parallel.sharded_lm_head import (
    sharded_linear_js_divergence,
    sharded_linear_kl_divergence,
    sharded_linear_sparse_kl_divergence,
    sharded_linear_token_statistics,
)
from jxent.parallel.vocab_parallel import (
    vocab_parallel_linear_softmax_cross_entropy,
    vocab_parallel_softmax_cross_entropy,
)

__all__ = [
    "VocabShards",
    "sharded_linear_js_divergence",
    "sharded_linear_kl_divergence",
    "sharded_linear_softmax_cross_entropy",
    "sharded_linear_sparse_kl_divergence",
    "sharded_linear_token_statistics",
    "sharded_softmax_cross_entropy",
    "vocab_parallel_linear_js_divergence",
    "vocab_parallel_linear_kl_divergence",
    "vocab_parallel_linear_softmax_cross_entropy",
    "vocab_parallel_linear_sparse_kl_divergence",
    "vocab_parallel_linear_token_statistics",
    "vocab_parallel_softmax_cross_entropy",
]
