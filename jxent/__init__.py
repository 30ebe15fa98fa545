"""jxent: cross-entropy-family losses for JAX.

Pure, jittable functions with closed-form gradients, exact limits at extreme logits and drop-in signatures for
the same-named functions of :mod:`optax.losses`. Everything public is re-exported here, flat.
"""

from jxent import losses
from jxent.binary import sigmoid_binary_cross_entropy
from jxent.cross_entropy import (
    safe_softmax_cross_entropy,
    softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels,
)
from jxent.divergence import (
    convex_kl_divergence,
    entropy,
    generalized_kl_divergence,
    js_divergence,
    kl_divergence,
    kl_divergence_with_log_targets,
)
from jxent.focal import sigmoid_focal_loss, softmax_focal_loss
from jxent.fused import (
    TokenStatistics,
    linear_js_divergence,
    linear_kl_divergence,
    linear_softmax_cross_entropy,
    linear_sparse_kl_divergence,
    linear_token_statistics,
)
from jxent.parallel import (
    sharded_linear_js_divergence,
    sharded_linear_kl_divergence,
    sharded_linear_softmax_cross_entropy,
    sharded_linear_sparse_kl_divergence,
    sharded_linear_token_statistics,
    sharded_softmax_cross_entropy,
    vocab_parallel_linear_js_divergence,
    vocab_parallel_linear_kl_divergence,
    vocab_parallel_linear_softmax_cross_entropy,
    vocab_parallel_linear_sparse_kl_divergence,
    vocab_parallel_linear_token_statistics,
    vocab_parallel_softmax_cross_entropy,
)
from jxent.probabilities import binary_cross_entropy, categorical_cross_entropy
from jxent.reduction import reduce_loss
from jxent.robust import generalized_cross_entropy, poly_loss_cross_entropy
from jxent.smoothing import smooth_binary_labels, smooth_labels
from jxent.softmax import log_softmax, logsumexp, soft_cap, softmax
from jxent.validation import check_labels, validate_labels

__version__ = "0.1.0"

__all__ = [
    "TokenStatistics",
    "binary_cross_entropy",
    "categorical_cross_entropy",
    "check_labels",
    "convex_kl_divergence",
    "entropy",
    "generalized_cross_entropy",
    "generalized_kl_divergence",
    "js_divergence",
    "kl_divergence",
    "kl_divergence_with_log_targets",
    "linear_js_divergence",
    "linear_kl_divergence",
    "linear_softmax_cross_entropy",
    "linear_sparse_kl_divergence",
    "linear_token_statistics",
    "log_softmax",
    "logsumexp",
    "losses",
    "poly_loss_cross_entropy",
    "reduce_loss",
    "safe_softmax_cross_entropy",
    "sharded_linear_js_divergence",
    "sharded_linear_kl_divergence",
    "sharded_linear_softmax_cross_entropy",
    "sharded_linear_sparse_kl_divergence",
    "sharded_linear_token_statistics",
    "sharded_softmax_cross_entropy",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "smooth_binary_labels",
    "smooth_labels",
    "soft_cap",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "softmax_focal_loss",
    "validate_labels",
    "vocab_parallel_linear_js_divergence",
    "vocab_parallel_linear_kl_divergence",
    "vocab_parallel_linear_softmax_cross_entropy",
    "vocab_parallel_linear_sparse_kl_divergence",
    "vocab_parallel_linear_token_statistics",
    "vocab_parallel_softmax_cross_entropy",
]
