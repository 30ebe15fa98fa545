"""Extreme inputs and bad arguments, as one table.

Each row is ``(name, call, expected)``: ``call()`` returns a dict of named outputs (usually the loss and its
gradient, computed under ``jax.jit``) and ``expected`` gives the value of each output, from the mathematical limit
or a closed form; or ``expected`` is ``Raises(ExceptionType, regex)`` and ``call()`` must raise it while *tracing*
(every error row calls the function under ``jax.jit``) with a message naming the argument.

NaN must match NaN, ``±inf`` must match ``±inf`` (``numpy.testing.assert_allclose`` semantics); a string expected
value is compared with ``str()`` of the output (dtypes).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jxent
from tests import reference as ref

INF, NAN = np.inf, np.nan
E = np.e


class Raises(NamedTuple):
    exception: type[Exception]
    match: str


class Row(NamedTuple):
    name: str
    call: Callable[[], dict[str, Any]]
    expected: dict[str, Any] | Raises
    atol: float = 1e-6


def vg(fn: Callable, x: Any) -> Callable[[], dict[str, Any]]:
    """A call returning ``{"loss": fn(x), "grad": d sum(fn(x)) / dx}`` (jitted) and their dtypes as strings."""

    def call():
        def run(x):
            return {"loss": fn(x), "grad": jax.grad(lambda x: jnp.sum(fn(x)))(x)}

        out = jax.jit(run)(jnp.asarray(x) if not isinstance(x, jax.Array) else x)
        out["loss_dtype"] = str(out["loss"].dtype)
        out["grad_dtype"] = str(out["grad"].dtype)
        return out

    return call


def traced(fn: Callable, *args: Any) -> Callable[[], dict[str, Any]]:
    """A call that traces ``fn(*args)`` under ``jax.jit`` (argument errors must appear at trace time)."""
    return lambda: {"loss": jax.jit(fn)(*args)}


ce_int = jxent.softmax_cross_entropy_with_integer_labels
ce = jxent.softmax_cross_entropy
bce = jxent.sigmoid_binary_cross_entropy
I = lambda *v: jnp.array(v, jnp.int32)  # noqa: E741 - integer labels
F = lambda *v: jnp.array(v, jnp.float32)

Z34 = jnp.zeros((3, 4))
Y3 = I(0, 1, 2)
P_LOG1PE = 1 / (1 + E)  # softmax([0, 1])[0]


def _focal_rows() -> list[Row]:
    """One row per gamma: sigmoid and softmax focal losses at |logit| = 100, value, gradient and Hessian."""
    rows = []
    x = F(100.0, -100.0, 100.0, -100.0)
    y = F(1.0, 0.0, 0.0, 1.0)  # right, right, wrong, wrong
    z = jnp.array([[100.0, -100.0, 0.0], [100.0, -100.0, 0.0]])
    zy = I(0, 1)  # right, wrong
    for g in (0.0, 0.5, 2.0):

        def both(xz, g=g):
            return {
                "sigmoid": jxent.sigmoid_focal_loss(xz["x"], y, gamma=g),
                "softmax": jxent.softmax_focal_loss(xz["z"], zy, gamma=g),
            }

        def call(both=both):
            total = lambda xz: jnp.sum(both(xz)["sigmoid"]) + jnp.sum(both(xz)["softmax"])
            value, grad, hess = jax.jit(lambda xz: (both(xz), jax.grad(total)(xz), jax.hessian(total)(xz)))(
                {"x": x, "z": z}
            )
            return {
                "sigmoid": value["sigmoid"],
                "softmax": value["softmax"],
                "sigmoid_grad": grad["x"],
                "softmax_grad": grad["z"],
                "sigmoid_hessian": hess["x"]["x"],
                "softmax_hessian": hess["z"]["z"],
            }

        rows.append(
            Row(
                f"focal losses at |logit|=100, gamma={g}: finite value, gradient and Hessian",
                call,
                {
                    "sigmoid": ref.sigmoid_focal_loss(x, y, gamma=g),
                    "softmax": ref.softmax_focal_loss(z, ref.one_hot(zy, 3), gamma=g),
                    "sigmoid_grad": ref.sigmoid_focal_grad_hard(x, y, gamma=g),
                    "softmax_grad": ref.softmax_focal_grad_integer(np.asarray(z), zy, gamma=g),
                    # The true second derivatives are O(100 exp(-100)).
                    "sigmoid_hessian": np.zeros((4, 4)),
                    "softmax_hessian": np.zeros((2, 3, 2, 3)),
                },
            )
        )
    return rows


TABLE: list[Row] = [
    # ---- ±inf logits in softmax cross-entropy ----------------------------------------------------------------
    Row(
        "softmax CE: -inf on a non-target class is an absent class",
        vg(lambda z: ce_int(z, I(0)), jnp.array([[0.0, -INF, 1.0]])),
        {"loss": [np.log1p(E)], "grad": [[P_LOG1PE - 1, 0.0, 1 - P_LOG1PE]]},
    ),
    Row(
        "softmax CE, probability labels: -inf where the target is 0",
        vg(lambda z: ce(z, F(1.0, 0.0, 0.0)[None]), jnp.array([[0.0, -INF, 1.0]])),
        {"loss": [np.log1p(E)], "grad": [[P_LOG1PE - 1, 0.0, 1 - P_LOG1PE]]},
    ),
    Row(
        "softmax CE: -inf on the target class gives +inf",
        vg(lambda z: ce_int(z, I(1)), jnp.array([[0.0, -INF, 1.0]])),
        {"loss": [INF]},
    ),
    Row(
        "softmax CE: +inf on the target class, limit p_y = 1",
        vg(lambda z: ce_int(z, I(0)), jnp.array([[INF, 0.0, 1.0]])),
        {"loss": [0.0], "grad": [[0.0, 0.0, 0.0]]},
    ),
    Row(
        "softmax CE: +inf on another class, limit loss +inf, gradient softmax - onehot",
        vg(lambda z: ce_int(z, I(1)), jnp.array([[INF, 0.0, 1.0]])),
        {"loss": [INF], "grad": [[1.0, -1.0, 0.0]]},
    ),
    Row(
        "softmax CE: two +inf entries share the probability",
        vg(lambda z: ce_int(z, I(0)), jnp.array([[INF, INF, 0.0]])),
        {"loss": [np.log(2)], "grad": [[-0.5, 0.5, 0.0]]},
    ),
    Row(
        "softmax CE: a row with no finite logit does not count",
        vg(lambda z: ce_int(z, I(0, 1)), jnp.full((2, 3), -INF)),
        {"loss": [0.0, 0.0], "grad": np.zeros((2, 3))},
    ),
    # ---- NaN and huge logits -----------------------------------------------------------------------------------
    Row(
        "softmax CE: NaN logit propagates to its row only",
        vg(lambda z: ce_int(z, I(0, 1)), jnp.array([[NAN, 0.0, 1.0], [0.0, 1.0, 2.0]])),
        {
            "loss": [NAN, ref.logsumexp(np.array([0.0, 1, 2])) - 1],
            "grad": [[NAN] * 3, ref.softmax(np.array([0.0, 1, 2])) - [0, 1, 0]],
        },
    ),
    Row(
        "sigmoid BCE: NaN logit gives NaN",
        vg(lambda x: bce(x, F(1.0, 0.0)), F(NAN, 1.0)),
        {"loss": [NAN, np.log1p(E)]},
    ),
    Row(
        "softmax CE: 1e30 logits",
        vg(lambda z: ce_int(z, I(1, 0)), jnp.array([[1e30, 0.0], [1e30, 0.0]])),
        {"loss": [np.float32(1e30), 0.0], "grad": [[1.0, -1.0], [0.0, 0.0]]},
    ),
    Row(
        "softmax CE: float16 near its max (6e4) -> finite float32 loss, float16 gradient",
        vg(lambda z: ce_int(z, I(1)), jnp.array([[6e4, -6e4, 0.0]], jnp.float16)),
        {"loss": [1.2e5], "grad": [[1.0, -1.0, 0.0]], "loss_dtype": "float32", "grad_dtype": "float16"},
    ),
    Row(
        "softmax CE: bfloat16 near its max (3e38) -> finite float32 loss, bfloat16 gradient",
        vg(lambda z: ce_int(z, I(1)), jnp.array([[3e38, 0.0, -1e38]], jnp.bfloat16)),
        {
            "loss": [float(jnp.asarray(3e38, jnp.bfloat16).astype(jnp.float32))],
            "grad": [[1.0, -1.0, 0.0]],
            "loss_dtype": "float32",
            "grad_dtype": "bfloat16",
        },
    ),
    Row(
        "sigmoid BCE: bfloat16 +-3e38 with the wrong label",
        vg(lambda x: bce(x, F(0.0, 1.0)), jnp.array([3e38, -3e38], jnp.bfloat16)),
        {"loss": [float(jnp.asarray(3e38, jnp.bfloat16).astype(jnp.float32))] * 2, "grad": [1.0, -1.0]},
    ),
    Row(
        "sigmoid focal: float16 +-6e4 with the wrong label",
        vg(lambda x: jxent.sigmoid_focal_loss(x, F(0.0, 1.0), gamma=0.5), jnp.array([6e4, -6e4], jnp.float16)),
        {"loss": [6e4, 6e4], "grad": [1.0, -1.0], "grad_dtype": "float16"},
    ),
    # ---- masked rows, empty batches, one class -----------------------------------------------------------------
    Row(
        "softmax CE: all-masked row gives loss 0 and gradient 0",
        vg(
            lambda z: ce_int(z, I(0, 2), where=jnp.array([[False] * 3, [True] * 3])),
            jnp.array([[1.0, 2, 3], [0, 0, 0]]),
        ),
        {"loss": [0.0, np.log(3)], "grad": [[0.0, 0, 0], [1 / 3, 1 / 3, -2 / 3]]},
    ),
    Row(
        "softmax CE: mean over an all-masked batch is 0 with zero gradients",
        vg(lambda z: ce_int(z, Y3, where=jnp.zeros(3, bool), reduction="mean"), jnp.ones((3, 3))),
        {"loss": 0.0, "grad": np.zeros((3, 3))},
    ),
    Row(
        "softmax CE: mean over an all-ignored batch is 0 with zero gradients",
        vg(lambda z: ce_int(z, I(-100, -100), ignore_index=-100, reduction="mean"), jnp.ones((2, 3))),
        {"loss": 0.0, "grad": np.zeros((2, 3))},
    ),
    Row(
        "probability CE: mean over an all-masked batch is 0",
        vg(lambda z: ce(z, jnp.full((2, 3), 1 / 3), where=jnp.zeros(2, bool), reduction="mean"), jnp.ones((2, 3))),
        {"loss": 0.0, "grad": np.zeros((2, 3))},
    ),
    Row(
        "sigmoid BCE: mean with every element masked is 0",
        vg(lambda x: bce(x, jnp.ones(3), where=jnp.zeros(3, bool), reduction="mean"), F(1.0, 2.0, 3.0)),
        {"loss": 0.0, "grad": [0.0, 0.0, 0.0]},
    ),
    Row(
        "softmax CE: empty batch (0, V)",
        vg(lambda z: ce_int(z, jnp.zeros((0,), jnp.int32)), jnp.zeros((0, 5))),
        {"loss": np.zeros((0,)), "grad": np.zeros((0, 5))},
    ),
    Row(
        "softmax CE: empty batch, mean is 0",
        vg(lambda z: ce_int(z, jnp.zeros((0,), jnp.int32), reduction="mean"), jnp.zeros((0, 5))),
        {"loss": 0.0, "grad": np.zeros((0, 5))},
    ),
    Row(
        "probability CE: empty batch, sum is 0",
        vg(lambda z: ce(z, jnp.zeros((0, 5)), reduction="sum"), jnp.zeros((0, 5))),
        {"loss": 0.0, "grad": np.zeros((0, 5))},
    ),
    Row(
        "softmax CE: one class (V=1) gives 0",
        vg(lambda z: ce_int(z, I(0, 0)), F(3.0, -7.0)[:, None]),
        {"loss": [0.0, 0.0], "grad": [[0.0], [0.0]]},
    ),
    # ---- out-of-range labels -----------------------------------------------------------------------------------
    Row(
        "softmax CE: label -1 and label V give NaN (no wrap to class V-1, no clamp to 0)",
        vg(lambda z: ce_int(z, I(-1, 3, 2)), jnp.array([[0.0, 1.0, 2.0]] * 3)),
        {
            "loss": [NAN, NAN, ref.logsumexp(np.array([0.0, 1, 2])) - 2],
            "grad": [[NAN] * 3, [NAN] * 3, ref.softmax(np.array([0.0, 1, 2])) - [0, 0, 1]],
        },
    ),
    Row(
        "softmax CE: label -1 with ignore_index=-1 gives 0; label V is still NaN",
        vg(lambda z: ce_int(z, I(-1, 3), ignore_index=-1), jnp.zeros((2, 3))),
        {"loss": [0.0, NAN], "grad": [[0.0] * 3, [NAN] * 3]},
    ),
    Row(
        "softmax focal: label -1 gives NaN",
        vg(lambda z: jxent.softmax_focal_loss(z, I(-1, 0)), jnp.zeros((2, 3))),
        {"loss": [NAN, (2 / 3) ** 2 * np.log(3)]},
    ),
    # ---- probabilities exactly 0 and 1 -------------------------------------------------------------------------
    Row(
        "binary_cross_entropy: p in {0, 1} is finite (log clamped at -100, 1/p at 1e-12)",
        vg(lambda p: jxent.binary_cross_entropy(p, F(0.0, 1.0, 1.0, 0.0)), F(0.0, 1.0, 0.0, 1.0)),
        {"loss": [0.0, 0.0, 100.0, 100.0], "grad": [1.0, -1.0, -1e12, 1e12]},
        1e-3,
    ),
    Row(
        "binary_cross_entropy: float16 p in {0, 1}, gradient in float16 stays finite (1/p floored at 2/65504)",
        vg(
            lambda p: jxent.binary_cross_entropy(p, jnp.array([1.0, 0.0], jnp.float16)),
            jnp.array([0.0, 1.0], jnp.float16),
        ),
        {"loss": [100.0, 100.0], "grad": [-65504.0 / 2, 65504.0 / 2], "loss_dtype": "float32", "grad_dtype": "float16"},
        16.0,
    ),
    Row(
        "categorical_cross_entropy: probabilities 0 and 1 are finite",
        vg(lambda p: jxent.categorical_cross_entropy(p, I(0, 1)), jnp.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])),
        {"loss": [100.0, 0.0], "grad": [[-1e12, 0.0, 0.0], [0.0, -1.0, 0.0]]},
        1e-3,
    ),
    Row(
        "kl_divergence: zero targets where log_predictions = -inf",
        vg(lambda lq: jxent.kl_divergence(lq, F(0.0, 0.5, 0.5)[None]), jnp.log(F(0.0, 0.5, 0.5))[None]),
        {"loss": [0.0], "grad": [[0.0, -0.5, -0.5]]},
    ),
    Row(
        "kl_divergence: positive target where log_predictions = -inf gives +inf, gradient -t",
        vg(lambda lq: jxent.kl_divergence(lq, F(0.2, 0.4, 0.4)[None]), jnp.log(F(0.0, 0.5, 0.5))[None]),
        {"loss": [INF], "grad": [[-0.2, -0.4, -0.4]]},
    ),
    Row(
        "kl_divergence_with_log_targets: log_targets = -inf and log_predictions = -inf",
        vg(
            lambda lq: jxent.kl_divergence_with_log_targets(lq, jnp.log(F(0.0, 0.5, 0.5))[None]),
            jnp.log(F(0.0, 0.5, 0.5))[None],
        ),
        {"loss": [0.0], "grad": [[0.0, -0.5, -0.5]]},
    ),
    Row(
        "entropy: zero probabilities (0 log 0 = 0)",
        vg(jxent.entropy, F(0.0, 0.5, 0.5)),
        {"loss": np.log(2)},
    ),
    # ---- sigmoid losses at ±inf ------------------------------------------------------------------------------
    Row(
        "sigmoid BCE at +-inf: 0 where the label agrees, +inf where not (optax gives NaN)",
        vg(lambda x: bce(x, F(1.0, 0.0, 0.0, 1.0)), F(INF, -INF, INF, -INF)),
        {"loss": [0.0, 0.0, INF, INF], "grad": [0.0, 0.0, 1.0, -1.0]},
    ),
    Row(
        "sigmoid BCE at +inf with a soft label",
        vg(lambda x: bce(x, F(0.5)), F(INF)),
        {"loss": [INF], "grad": [0.5]},
    ),
    Row(
        "sigmoid focal at +-inf with the wrong label: loss +inf, gradient the limit sigmoid(x) - y (gamma 0.5 and 2)",
        vg(
            lambda x: jxent.sigmoid_focal_loss(x, F(0.0, 1.0), gamma=0.5) + jxent.sigmoid_focal_loss(x, F(0.0, 1.0)),
            F(INF, -INF),
        ),
        {"loss": [INF, INF], "grad": [2.0, -2.0]},
    ),
    Row(
        "sigmoid focal at +-inf with the right label: loss 0, gradient 0",
        vg(lambda x: jxent.sigmoid_focal_loss(x, F(1.0, 0.0), gamma=2.0), F(INF, -INF)),
        {"loss": [0.0, 0.0], "grad": [0.0, 0.0]},
    ),
    Row(
        "sigmoid focal at +inf with the wrong label: loss +inf",
        vg(lambda x: jxent.sigmoid_focal_loss(x, F(0.0), gamma=2.0, alpha=0.25), F(INF)),
        {"loss": [INF]},
    ),
    *_focal_rows(),
    # ---- bad arguments: raised while tracing, the message names the argument ----------------------------------
    Row(
        "label_smoothing > 1",
        traced(lambda z: ce_int(z, Y3, label_smoothing=1.5), Z34),
        Raises(ValueError, "`label_smoothing`"),
    ),
    Row(
        "label_smoothing < 0",
        traced(lambda z: ce(z, Z34, label_smoothing=-0.1), Z34),
        Raises(ValueError, "`label_smoothing`"),
    ),
    Row(
        "binary label_smoothing > 1",
        traced(lambda z: bce(z, Z34, label_smoothing=2.0), Z34),
        Raises(ValueError, "`label_smoothing`"),
    ),
    Row(
        "sigmoid focal alpha > 1",
        traced(lambda z: jxent.sigmoid_focal_loss(z, Z34, alpha=1.5), Z34),
        Raises(ValueError, "`alpha`"),
    ),
    Row(
        "sigmoid focal alpha < 0",
        traced(lambda z: jxent.sigmoid_focal_loss(z, Z34, alpha=-0.25), Z34),
        Raises(ValueError, "`alpha`"),
    ),
    Row(
        "softmax focal alpha > 1",
        traced(lambda z: jxent.softmax_focal_loss(z, Y3, alpha=2.0), Z34),
        Raises(ValueError, "`alpha`"),
    ),
    Row("smooth_labels alpha > 1", traced(lambda y: jxent.smooth_labels(y, 1.2), Z34), Raises(ValueError, "`alpha`")),
    Row(
        "focal gamma < 0",
        traced(lambda z: jxent.sigmoid_focal_loss(z, Z34, gamma=-1.0), Z34),
        Raises(ValueError, "`gamma`"),
    ),
    Row(
        "float labels to the integer-label function",
        traced(lambda z: ce_int(z, jnp.zeros(3)), Z34),
        Raises(TypeError, "`labels`"),
    ),
    Row(
        "float labels of the batch shape to categorical CE",
        traced(lambda p: jxent.categorical_cross_entropy(p, jnp.zeros(3)), Z34),
        Raises(ValueError, "`labels`"),
    ),
    Row(
        "mismatched batch shapes (integer labels)",
        traced(lambda z: ce_int(z, I(0, 1)), Z34),
        Raises(ValueError, "`labels`"),
    ),
    Row(
        "mismatched shapes (probability labels)",
        traced(lambda z: ce(z, jnp.zeros((2, 4))), Z34),
        Raises(ValueError, "`labels`"),
    ),
    Row(
        "mismatched shapes (sigmoid BCE)",
        traced(lambda x: bce(x, jnp.zeros((3, 5))), Z34),
        Raises(ValueError, "`labels`"),
    ),
    Row(
        "mismatched shapes (kl_divergence)",
        traced(lambda a: jxent.kl_divergence(a, jnp.zeros((2, 4))), Z34),
        Raises(ValueError, "`targets`"),
    ),
    Row(
        "integer logits (softmax CE)",
        traced(lambda y: ce_int(jnp.zeros((3, 4), jnp.int32), y), Y3),
        Raises(TypeError, "`logits`"),
    ),
    Row(
        "integer logits (sigmoid BCE)",
        traced(lambda y: bce(jnp.zeros(3, jnp.int32), y), jnp.zeros(3)),
        Raises(TypeError, "`logits`"),
    ),
    Row(
        "integer logits (focal)",
        traced(lambda y: jxent.softmax_focal_loss(jnp.zeros((3, 4), jnp.int32), y), Y3),
        Raises(TypeError, "`logits`"),
    ),
    Row(
        "integer probabilities",
        traced(lambda y: jxent.binary_cross_entropy(jnp.zeros(3, jnp.int32), y), jnp.zeros(3)),
        Raises(TypeError, "`probabilities`"),
    ),
    Row(
        "bad reduction (softmax CE)",
        traced(lambda z: ce_int(z, Y3, reduction="avg"), Z34),
        Raises(ValueError, "`reduction`"),
    ),
    Row(
        "bad reduction (focal)",
        traced(lambda z: jxent.sigmoid_focal_loss(z, Z34, reduction="batchmean"), Z34),
        Raises(ValueError, "`reduction`"),
    ),
    Row(
        "bad reduction (kl)",
        traced(lambda z: jxent.kl_divergence(z, Z34, reduction="batchmean"), Z34),
        Raises(ValueError, "`reduction`"),
    ),
    Row(
        "class weight of the wrong shape",
        traced(lambda z: ce_int(z, Y3, weight=jnp.ones(3)), Z34),
        Raises(ValueError, "`weight`"),
    ),
    Row(
        "element weight that does not broadcast (BCE)",
        traced(lambda x: bce(x, Z34, weight=jnp.ones(3)), Z34),
        Raises(ValueError, "`weight`"),
    ),
    Row(
        "where of the wrong shape",
        traced(lambda z: ce_int(z, Y3, where=jnp.ones(4, bool)), Z34),
        Raises(ValueError, "`where`"),
    ),
    Row(
        "where of the wrong dtype",
        traced(lambda z: ce_int(z, Y3, where=jnp.ones(3)), Z34),
        Raises(TypeError, "`where`"),
    ),
    Row(
        "where of the wrong dtype (BCE)",
        traced(lambda x: bce(x, Z34, where=jnp.ones((3, 4), jnp.int32)), Z34),
        Raises(TypeError, "`where`"),
    ),
    Row(
        "where of the wrong shape (BCE)",
        traced(lambda x: bce(x, Z34, where=jnp.ones((2, 4), bool)), Z34),
        Raises(ValueError, "`where`"),
    ),
    Row(
        "ignore_index that is not an int",
        traced(lambda z: ce_int(z, Y3, ignore_index=-1.0), Z34),
        Raises(TypeError, "`ignore_index`"),
    ),
    Row(
        "ignore_index with probability labels",
        traced(lambda z: ce(z, Z34, ignore_index=-100), Z34),
        Raises(ValueError, "`ignore_index`"),
    ),
    Row("axis out of range", traced(lambda z: ce_int(z, Y3, axis=2), Z34), Raises(ValueError, "`axis`")),
    Row("negative z_loss", traced(lambda z: ce_int(z, Y3, z_loss=-1e-4), Z34), Raises(ValueError, "`z_loss`")),
    Row("temperature 0", traced(lambda z: ce_int(z, Y3, temperature=0.0), Z34), Raises(ValueError, "`temperature`")),
    Row("soft_cap 0", traced(lambda z: ce_int(z, Y3, soft_cap=0.0), Z34), Raises(ValueError, "`soft_cap`")),
    Row(
        "GCE q outside (0, 1]",
        traced(lambda z: jxent.generalized_cross_entropy(z, Y3, q=0.0), Z34),
        Raises(ValueError, "`q`"),
    ),
    Row("scalar logits", traced(lambda z: ce_int(z, jnp.int32(0)), jnp.float32(1.0)), Raises(ValueError, "`logits`")),
]


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_extreme(row: Row):
    if isinstance(row.expected, Raises):
        with pytest.raises(row.expected.exception, match=row.expected.match):
            row.call()
        return
    out = row.call()
    for key, expected in row.expected.items():
        actual = out[key]
        if isinstance(expected, str):
            assert str(actual) == expected, f"{key}: {actual} != {expected}"
            continue
        actual = np.asarray(actual, np.float64)
        expected = np.asarray(expected, np.float64)
        assert actual.shape == expected.shape, f"{key}: shape {actual.shape} != {expected.shape}"
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=row.atol, equal_nan=True, err_msg=key)


def test_table_names_are_unique():
    names = [row.name for row in TABLE]
    assert len(names) == len(set(names))
