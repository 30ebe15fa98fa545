"""Dense, fused and vocabulary-sharded cross-entropy agree, on random combinations of every option.

One semantics everywhere: ``-inf`` logits (or a ``-inf`` bias) are absent classes, label smoothing is spread over
the present classes only, and a row with no class left gives 0 and does not count. Hypothesis draws the options,
the masked classes and the masked rows; each example compares values and gradients of the four paths on 8 fake
CPU devices (tests/conftest.py). Deterministic (``derandomize=True``) and few examples: each one compiles.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax.sharding import Mesh

import jxent

N, D, V = 12, 8, 32  # V = 8 * 4: four classes per device
SETTINGS = settings(
    max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)

options_st = st.fixed_dictionaries(
    {
        "label_smoothing": st.sampled_from([0.0, 0.1, 0.4]),
        "z_loss": st.sampled_from([0.0, 1e-2]),
        "soft_cap": st.sampled_from([None, 4.0]),
        "temperature": st.sampled_from([1.0, 0.7]),
        "ignore_index": st.sampled_from([None, -100]),
    }
)


@pytest.fixture(scope="module")
def mesh():
    devices = jax.devices()
    if len(devices) < 8:
        pytest.skip("needs 8 devices (tests/conftest.py sets XLA_FLAGS for 8 fake CPU devices)")
    return Mesh(np.array(devices[:8]), ("vocab",))


def _inputs(seed: int, masked_classes: int, class_weights: bool, ignore_index):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(N, D)).astype(np.float32)
    w = (rng.normal(size=(D, V)) / np.sqrt(D) * 2).astype(np.float32)
    b = (rng.normal(size=V) * 0.5).astype(np.float32)
    absent = rng.choice(V, size=masked_classes, replace=False)
    b[absent] = -np.inf
    present = np.setdiff1d(np.arange(V), absent)
    y = rng.choice(present, size=N).astype(np.int32)  # labels on present classes: finite losses
    if ignore_index is not None:
        y[::4] = ignore_index
    cw = rng.uniform(0.5, 2.0, size=V).astype(np.float32) if class_weights else None
    ct = rng.normal(size=N).astype(np.float32)
    return h, w, b, y, cw, ct


def _assert_close(actual, desired, what):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), rtol=2e-5, atol=2e-5, err_msg=what)


@SETTINGS
@given(
    options=options_st,
    seed=st.integers(0, 2**16),
    masked_classes=st.sampled_from([0, 1, 9]),
    class_weights=st.booleans(),
    reduction=st.sampled_from(["none", "mean", "sum"]),
)
def test_dense_fused_and_sharded_agree(mesh, options, seed, masked_classes, class_weights, reduction):
    h, w, b, y, cw, ct = _inputs(seed, masked_classes, class_weights, options["ignore_index"])
    opts = dict(options, reduction=reduction)

    def scalar(out):
        return out if reduction != "none" else jnp.sum(out * ct)

    def dense(h, w):
        logits = h @ w + b
        return scalar(jxent.softmax_cross_entropy_with_integer_labels(logits, y, weight=cw, **opts))

    def fused(h, w):
        return scalar(jxent.linear_softmax_cross_entropy(h, w, y, bias=b, class_weight=cw, chunk_size=8, **opts))

    def sharded_logits(h, w):
        logits = h @ w + b
        return scalar(
            jxent.sharded_softmax_cross_entropy(logits, y, mesh=mesh, vocab_axis="vocab", class_weight=cw, **opts)
        )

    def sharded_fused(h, w):
        out = jxent.sharded_linear_softmax_cross_entropy(
            h, w, y, mesh=mesh, vocab_axis="vocab", bias=b, class_weight=cw, chunk_size=2, **opts
        )
        return scalar(out)

    ref_value, ref_grads = jax.value_and_grad(dense, argnums=(0, 1))(h, w)
    assert np.isfinite(ref_value)
    for name, fn in [("fused", fused), ("sharded logits", sharded_logits), ("sharded fused", sharded_fused)]:
        value, grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(h, w)
        _assert_close(value, ref_value, f"{name}: loss")
        _assert_close(grads[0], ref_grads[0], f"{name}: d hidden")
        _assert_close(grads[1], ref_grads[1], f"{name}: d weight")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_rows_with_no_class_left_give_zero_and_do_not_count(mesh, reduction, label_smoothing):
    """Rows whose logits are all ``-inf`` (or all masked): 0, not counted, zero gradient, on every path."""
    h, w, b, y, cw, ct = _inputs(3, 4, True, -100)
    logits = jnp.asarray(h @ w + b).at[1].set(-jnp.inf).at[6].set(-jnp.inf)
    opts = dict(label_smoothing=label_smoothing, z_loss=1e-2, ignore_index=-100, reduction=reduction)

    def scalar(out):
        return out if reduction != "none" else jnp.sum(out * ct)

    def dense(x):
        return scalar(jxent.softmax_cross_entropy_with_integer_labels(x, y, weight=cw, **opts))

    def sharded(x):
        return scalar(jxent.sharded_softmax_cross_entropy(x, y, mesh=mesh, vocab_axis="vocab", class_weight=cw, **opts))

    keep = np.ones(N, bool)
    keep[[1, 6]] = False
    ref_value, ref_grad = jax.value_and_grad(dense)(logits)
    value, grad = jax.jit(jax.value_and_grad(sharded))(logits)
    _assert_close(value, ref_value, "loss")
    _assert_close(grad, ref_grad, "d logits")
    assert np.all(np.asarray(grad)[~keep] == 0)
    # The same as dropping those rows (ct weights the kept rows for "none").
    kept = jxent.softmax_cross_entropy_with_integer_labels(logits[keep], y[keep], weight=cw, **opts)
    expected = jnp.sum(kept * ct[keep]) if reduction == "none" else kept
    _assert_close(value, expected, "loss without the masked rows")


def test_fused_bias_masking_every_class_gives_zero(mesh):
    h, w, _, y, _, _ = _inputs(4, 0, False, None)
    b = jnp.full((V,), -jnp.inf)
    for reduction in ["mean", "sum"]:
        fn = jax.value_and_grad(
            lambda h, w, r=reduction: jxent.linear_softmax_cross_entropy(h, w, y, bias=b, reduction=r), argnums=(0, 1)
        )
        value, (dh, dw) = fn(h, w)
        assert value == 0 and not np.any(np.asarray(dh)) and not np.any(np.asarray(dw))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_positive_infinite_logits_give_the_dense_limit_on_every_path(mesh, label_smoothing):
    """``+inf`` logits: the probability is uniform over them (values may be ``+inf``, gradients stay finite)."""
    h, w, b, y, _, ct = _inputs(5, 0, False, None)
    b[[3, 17]] = np.inf  # two +inf classes in every row, on different devices
    y[:4] = 3  # some labels on a +inf class (finite loss), the rest elsewhere (+inf loss)
    opts = dict(label_smoothing=label_smoothing, reduction="none")

    def dense(h, w):
        return jxent.softmax_cross_entropy_with_integer_labels(h @ w + b, y, **opts)

    def fused(h, w):
        return jxent.linear_softmax_cross_entropy(h, w, y, bias=b, chunk_size=8, **opts)

    def sharded(h, w):
        return jxent.sharded_softmax_cross_entropy(h @ w + b, y, mesh=mesh, vocab_axis="vocab", **opts)

    def sharded_fused(h, w):
        return jxent.sharded_linear_softmax_cross_entropy(
            h, w, y, mesh=mesh, vocab_axis="vocab", bias=b, chunk_size=2, **opts
        )

    ref = dense(h, w)
    # Smoothing puts mass on the finite classes, whose probability is 0: +inf for every row then.
    assert np.all(np.isfinite(ref[:4]) == (label_smoothing == 0)) and np.all(ref[4:] == np.inf)
    ref_grads = jax.grad(lambda h, w: jnp.sum(dense(h, w)[:4] * ct[:4]), argnums=(0, 1))(h, w)
    for name, fn in [("fused", fused), ("sharded", sharded), ("sharded fused", sharded_fused)]:
        _assert_close(jax.jit(fn)(h, w), ref, f"{name}: loss")
        grads = jax.jit(jax.grad(lambda h, w, f=fn: jnp.sum(f(h, w)[:4] * ct[:4]), argnums=(0, 1)))(h, w)
        _assert_close(grads[0], ref_grads[0], f"{name}: d hidden")
        _assert_close(grads[1], ref_grads[1], f"{name}: d weight")


def test_a_traced_soft_cap_of_inf_is_no_capping():
    h, w, b, y, _, _ = _inputs(6, 0, False, None)
    logits = h @ w + b
    dense = jax.jit(lambda c: jxent.softmax_cross_entropy_with_integer_labels(logits, y, soft_cap=c))
    fused = jax.jit(lambda c: jxent.linear_softmax_cross_entropy(h, w, y, bias=b, soft_cap=c, reduction="none"))
    plain = jxent.softmax_cross_entropy_with_integer_labels(logits, y)
    _assert_close(dense(jnp.inf), plain, "dense")
    _assert_close(fused(jnp.inf), plain, "fused")
    _assert_close(jax.jit(jxent.soft_cap)(logits, jnp.inf), logits, "soft_cap")
    _assert_close(dense(3.0), jxent.softmax_cross_entropy_with_integer_labels(logits, y, soft_cap=3.0), "finite cap")
