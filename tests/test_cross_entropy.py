"""softmax_cross_entropy and softmax_cross_entropy_with_integer_labels: float64 references, optax, torch semantics.

Calls go through ``jax.jit`` (one compilation per case); the un-jitted path is exercised by the chex variants in
test_transforms.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jxent
from jxent.testing.tolerances import optax_tolerance
from tests import reference as ref

ce_int = jxent.softmax_cross_entropy_with_integer_labels
ce = jxent.softmax_cross_entropy


def jcall(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` under ``jax.jit``, keyword options closed over (static)."""
    return jax.jit(functools.partial(fn, **kwargs))(*args)


def jgrad(fn, *args, argnums=0, **kwargs):
    """Gradient of ``sum(fn(*args, **kwargs))``, jitted."""
    return jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a, **kwargs)), argnums=argnums))(*args)


def _logits(shape, dtype=jnp.float32, seed=0, scale=3.0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, dtype)


def _labels(batch_shape, num_classes, seed=1):
    return jnp.asarray(np.random.default_rng(seed).integers(0, num_classes, size=batch_shape), jnp.int32)


def _layout(shape, axis):
    axes = ref.class_axes(axis, len(shape))
    batch = tuple(s for i, s in enumerate(shape) if i not in axes)
    return batch, int(np.prod([shape[a] for a in axes]))


# (shape, axis, dtype): class axis last, first, in the middle, and a tuple of axes; 16-bit dtypes on one layout.
CASES = [
    ((6, 5), -1, jnp.float32),
    ((5, 6), 0, jnp.float32),
    ((2, 5, 3), 1, jnp.float32),
    ((2, 3, 4), (1, 2), jnp.float32),
    ((2, 3, 4), (2, 1), jnp.float32),  # flattened in the order given, as optax does
    ((6, 5), -1, jnp.bfloat16),
    ((6, 5), -1, jnp.float16),
]


@pytest.mark.parametrize(("shape", "axis", "dtype"), CASES)
def test_integer_labels_match_reference(shape, axis, dtype):
    batch, num_classes = _layout(shape, axis)
    logits = _logits(shape, dtype)
    labels = _labels(batch, num_classes)
    # The probability-label function with integer labels of the batch shape is the same loss.
    out, out_ce = jax.jit(lambda z, y: (ce_int(z, y, axis=axis), ce(z, y, axis=axis)))(logits, labels)
    assert out.dtype == jnp.float32 and out.shape == batch
    expected = ref.softmax_cross_entropy(logits, ref.integer_to_dense(labels, shape, axis), axis=axis)
    np.testing.assert_allclose(out, expected, **ref.tol(jnp.float32))
    np.testing.assert_allclose(out_ce, out, rtol=1e-6)


@pytest.mark.parametrize(("shape", "axis", "dtype"), [*CASES, ((3, 4), None, jnp.float32)])
def test_probability_labels_match_reference(shape, axis, dtype):
    logits = _logits(shape, dtype, seed=3)
    t = np.random.default_rng(4).gamma(0.5, size=shape)
    t = jnp.asarray(t / t.sum(axis=axis, keepdims=True), jnp.float32)
    out = jcall(ce, logits, t, axis=axis)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref.softmax_cross_entropy(logits, t, axis=axis), **ref.tol(jnp.float32))


def test_float64_under_x64(x64):
    logits = jnp.asarray(np.random.default_rng(5).normal(size=(4, 6)) * 4, jnp.float64)
    labels = _labels((4,), 6)
    out = jcall(ce_int, logits, labels, label_smoothing=0.2, z_loss=1e-3)
    assert out.dtype == jnp.float64
    dense = ref.one_hot(labels, 6)
    expected = ref.softmax_cross_entropy(logits, dense, label_smoothing=0.2, z_loss=1e-3)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    g = jgrad(ce_int, logits, labels)
    assert g.dtype == jnp.float64
    np.testing.assert_allclose(g, ref.cross_entropy_grad(logits, dense), **ref.tol(jnp.float64))


# ----------------------------------------------------------------------------------------------------------------
# optax agreement
# ----------------------------------------------------------------------------------------------------------------

OPTAX_TOL = optax_tolerance()


@pytest.mark.parametrize(("shape", "axis"), [((6, 5), -1), ((5, 6), 0), ((2, 3, 4), (1, 2)), ((2, 3, 4), (-1, -2))])
@pytest.mark.parametrize("mask", [None, "batch", "class"])
def test_match_optax(shape, axis, mask):
    batch, num_classes = _layout(shape, axis)
    logits = _logits(shape, seed=6)
    labels = _labels(batch, num_classes, seed=7)
    t = np.random.default_rng(10).gamma(0.5, size=shape)
    t = jnp.asarray(t / t.sum(axis=axis, keepdims=True), jnp.float32)
    rng = np.random.default_rng(8)
    where_int = where_prob = None
    if mask == "batch":
        where_int = where_prob = jnp.asarray(rng.random(batch) < 0.6)
    elif mask == "class":
        # A per-class mask; for integer labels the label's class is kept valid (optax reads its logit unmasked).
        where_prob = rng.random(shape) < 0.6
        where_int = jnp.asarray(where_prob | ref.integer_to_dense(labels, shape, axis).astype(bool))
        where_prob = jnp.asarray(where_prob)
    ours = jax.jit(lambda z, y, t, wi, wp: (ce_int(z, y, axis=axis, where=wi), ce(z, t, axis=axis, where=wp)))(
        logits, labels, t, where_int, where_prob
    )
    theirs_int = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels, axis=axis, where=where_int)
    theirs_prob = optax.losses.softmax_cross_entropy(logits, t, axis=axis, where=where_prob)
    np.testing.assert_allclose(ours[0], theirs_int, **OPTAX_TOL)
    np.testing.assert_allclose(ours[1], theirs_prob, **OPTAX_TOL)


# ----------------------------------------------------------------------------------------------------------------
# torch semantics: weight + ignore_index + label_smoothing + reduction
# ----------------------------------------------------------------------------------------------------------------


REDUCTIONS = ("none", "sum", "mean")


def _all_reductions(fn, *args, **kwargs):
    """``{reduction: fn(*args, reduction=reduction, **kwargs)}`` from one jitted call."""
    return jax.jit(lambda *a: {r: fn(*a, reduction=r, **kwargs) for r in REDUCTIONS})(*args)


@pytest.mark.parametrize(
    ("use_weight", "ignore_index", "label_smoothing"),
    [(True, -100, 0.0), (True, -100, 0.1), (True, None, 0.3), (False, -100, 0.2), (False, 3, 0.0), (True, 3, 1.0)],
)
def test_integer_labels_follow_torch(use_weight, ignore_index, label_smoothing):
    n, c = 8, 5
    logits = _logits((n, c), seed=12)
    labels = np.array(_labels((n,), c, seed=13))
    if ignore_index == -100:
        labels[[1, 4]] = -100
    weight = jnp.asarray(np.random.default_rng(14).uniform(0.2, 2.0, size=c), jnp.float32) if use_weight else None
    opts = {"weight": weight, "ignore_index": ignore_index, "label_smoothing": label_smoothing}
    out = _all_reductions(ce_int, logits, jnp.asarray(labels), **opts)
    for reduction in REDUCTIONS:
        expected = ref.torch_cross_entropy(logits, labels, reduction=reduction, **opts)
        np.testing.assert_allclose(out[reduction], expected, rtol=2e-6, atol=2e-6, err_msg=reduction)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
def test_probability_labels_with_weight_follow_torch(label_smoothing):
    n, c = 6, 4
    logits = _logits((n, c), seed=15)
    t = np.float32(np.random.default_rng(16).dirichlet(np.ones(c), size=n))
    weight = np.float32(np.random.default_rng(17).uniform(0.2, 2.0, size=c))
    out = _all_reductions(ce, logits, jnp.asarray(t), weight=weight, label_smoothing=label_smoothing)
    for reduction in REDUCTIONS:
        expected = ref.torch_cross_entropy_probs(
            logits, t, weight=weight, label_smoothing=label_smoothing, reduction=reduction
        )
        np.testing.assert_allclose(out[reduction], expected, rtol=2e-6, atol=2e-6, err_msg=reduction)


def test_weighted_mean_divides_by_total_target_weight():
    # Two examples, weights 1 and 3 for their classes: mean = (1 * l0 + 3 * l1) / (1 + 3), not / 2.
    logits = jnp.array([[2.0, 0.0], [0.0, 1.0]])
    labels = jnp.array([0, 1])
    weight = jnp.array([1.0, 3.0])
    l0, l1 = -ref.log_softmax(np.array([2.0, 0.0]))[0], -ref.log_softmax(np.array([0.0, 1.0]))[1]
    out = jcall(ce_int, logits, labels, weight=weight, reduction="mean")
    np.testing.assert_allclose(out, (l0 + 3 * l1) / 4, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# z-loss, soft-capping, temperature, masked vocabulary
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels_kind", ["integer", "probability"])
def test_all_logit_options_match_reference(labels_kind):
    shape = (6, 7)
    logits = _logits(shape, seed=18, scale=6.0)
    labels = _labels((6,), 7, seed=19)
    dense = ref.one_hot(labels, 7)
    if labels_kind == "probability":
        dense = np.random.default_rng(20).dirichlet(np.ones(7), size=6)
        labels = jnp.asarray(dense, jnp.float32)
        dense = np.float32(dense)
    weight = np.float32(np.random.default_rng(21).uniform(0.5, 1.5, size=7))
    opts = {"label_smoothing": 0.1, "z_loss": 1e-2, "soft_cap": 4.0, "temperature": 0.7}
    out = jcall(ce, logits, labels, weight=weight, **opts)
    expected = ref.softmax_cross_entropy(
        logits,
        dense,
        weight=weight,
        label_smoothing=0.1,
        z_loss=1e-2,
        soft_cap_value=4.0,
        temperature=0.7,
    )
    np.testing.assert_allclose(out, expected, **ref.tol(jnp.float32))


def test_masked_vocabulary_equals_the_reduced_vocabulary():
    # -inf logits (and where=False classes) are absent: the loss is the loss over the present classes only, and
    # label smoothing spreads over the K present classes.
    logits = np.asarray(_logits((4, 6), seed=22))
    present = np.array([True, False, True, True, False, True])
    labels = jnp.array([0, 2, 3, 5])
    sub_labels = jnp.array([0, 1, 2, 3])
    masked = jnp.asarray(np.where(present, logits, -np.inf))
    expected = ref.softmax_cross_entropy(logits[:, present], ref.one_hot(sub_labels, 4), label_smoothing=0.2)
    np.testing.assert_allclose(jcall(ce_int, masked, labels, label_smoothing=0.2), expected, rtol=2e-6)
    where = jnp.broadcast_to(jnp.asarray(present), (4, 6))
    np.testing.assert_allclose(
        jcall(ce_int, jnp.asarray(logits), labels, where=where, label_smoothing=0.2), expected, rtol=2e-6
    )
    g = jgrad(ce_int, masked, labels, label_smoothing=0.2)
    assert np.all(np.asarray(g)[:, ~present] == 0)
    sub_q = 0.8 * ref.one_hot(sub_labels, 4) + 0.2 / 4
    np.testing.assert_allclose(np.asarray(g)[:, present], ref.cross_entropy_grad(logits[:, present], sub_q), atol=1e-6)


def test_integer_labels_of_full_shape_are_one_hot_vectors():
    logits = _logits((3, 4), seed=23)
    onehot = jnp.asarray(np.eye(4, dtype=np.int32)[[1, 0, 3]])
    np.testing.assert_allclose(
        jcall(ce, logits, onehot), optax.losses.softmax_cross_entropy(logits, onehot), **OPTAX_TOL
    )


def test_ignored_and_masked_rows_give_zero_loss_and_zero_gradient():
    logits = _logits((5, 4), seed=24)
    labels = jnp.array([0, -100, 2, 3, -100])
    out = jcall(ce_int, logits, labels, ignore_index=-100)
    assert out[1] == 0 and out[4] == 0
    g = jgrad(ce_int, logits, labels, ignore_index=-100)
    np.testing.assert_array_equal(np.asarray(g)[[1, 4]], 0)
    where = jnp.array([True, False, True, True, False])
    g2 = jgrad(ce_int, logits, jnp.array([0, 1, 2, 3, 0]), where=where)
    np.testing.assert_array_equal(np.asarray(g2)[[1, 4]], 0)
    np.testing.assert_allclose(g2, g, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------------------------------


def _target_weights(labels, c, weight, label_smoothing):
    w = np.ones(c) if weight is None else ref.f64(weight)
    oh = ref.one_hot(labels, c)
    return (1 - label_smoothing) * oh * w + label_smoothing / c * w


@pytest.mark.parametrize(
    ("use_weight", "label_smoothing", "z_loss"), [(False, 0.0, 0.0), (True, 0.1, 0.0), (True, 0.2, 1e-2)]
)
def test_gradient_closed_form(use_weight, label_smoothing, z_loss):
    c = 6
    logits = _logits((5, c), seed=25)
    labels = _labels((5,), c, seed=26)
    weight = np.float32(np.random.default_rng(27).uniform(0.5, 2, size=c)) if use_weight else None
    g = jgrad(ce_int, logits, labels, weight=weight, label_smoothing=label_smoothing, z_loss=z_loss)
    q = _target_weights(labels, c, weight, label_smoothing)
    np.testing.assert_allclose(g, ref.cross_entropy_grad(logits, q, z_loss=z_loss), **ref.tol(jnp.float32))


def test_gradient_through_soft_cap_and_temperature():
    cap, temperature = 3.0, 2.0
    logits = _logits((4, 5), seed=28, scale=4.0)
    labels = _labels((4,), 5, seed=29)
    g = jgrad(ce_int, logits, labels, soft_cap=cap, temperature=temperature)
    z = ref.soft_cap(logits, cap) / temperature
    chain = (1 - np.tanh(ref.f64(logits) / cap) ** 2) / temperature
    np.testing.assert_allclose(g, ref.cross_entropy_grad(z, ref.one_hot(labels, 5)) * chain, **ref.tol(jnp.float32))


def test_gradient_with_respect_to_probability_labels():
    logits = _logits((3, 4), seed=30)
    t = jnp.full((3, 4), 0.25)
    g = jgrad(ce, logits, t, argnums=1)
    np.testing.assert_allclose(g, -ref.log_softmax(logits), rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_16_bit_inputs_give_float32_losses_and_input_dtype_gradients(dtype):
    logits = _logits((4, 5), dtype, seed=31)
    labels = _labels((4,), 5, seed=32)
    assert jcall(ce_int, logits, labels).dtype == jnp.float32
    assert jcall(ce, logits, jax.nn.one_hot(labels, 5)).dtype == jnp.float32
    g = jgrad(ce_int, logits, labels)
    assert g.dtype == dtype
    np.testing.assert_allclose(ref.f64(g), ref.cross_entropy_grad(logits, ref.one_hot(labels, 5)), **ref.tol(dtype))


# ----------------------------------------------------------------------------------------------------------------
# Argument errors specific to this module (the full table is in test_extreme.py)
# ----------------------------------------------------------------------------------------------------------------


def test_argument_errors():
    logits = jnp.ones((3, 4))
    with pytest.raises(ValueError, match="`labels` must have the batch shape"):
        ce_int(logits, jnp.zeros((4,), jnp.int32))
    with pytest.raises(ValueError, match="ignore_index"):
        ce(logits, jnp.full((3, 4), 0.25), ignore_index=-100)
    with pytest.raises(ValueError, match="axis"):
        ce(logits, jnp.int32(2), axis=None)
    with pytest.raises(ValueError, match="z_loss"):
        ce_int(logits, jnp.zeros((3,), jnp.int32), z_loss=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        ce_int(logits, jnp.zeros((3,), jnp.int32), temperature=0.0)
    with pytest.raises(ValueError, match="soft_cap"):
        ce(logits, jnp.full((3, 4), 0.25), soft_cap=0.0)
    with pytest.raises(TypeError, match="ignore_index"):
        ce_int(logits, jnp.zeros((3,), jnp.int32), ignore_index=1.5)
    with pytest.raises(ValueError, match="labels"):
        ce(logits, jnp.full((2, 4), 0.25))


def test_probability_labels_special_rows_exact():
    """The select-free kernel keeps the guarded values: a subnormal target on an absent class gives +inf, zero
    targets there give the loss over the present classes, a logit equal to the float maximum in a row with a +inf
    entry has probability 0, and a row with no present class gives 0 with a zero gradient."""
    big, tiny = np.finfo(np.float32).max, np.finfo(np.float32).tiny
    z = jnp.array(
        [[0.0, -np.inf, 1.0], [0.0, -np.inf, 1.0], [np.inf, big, 0.0], [np.inf, big, 0.0], [-np.inf] * 3],
        jnp.float32,
    )
    t = jnp.array([[1, 0, 0], [1, tiny, 0], [1, 0, 0], [1 - tiny, tiny, 0], [0.5, 0.5, 0]], jnp.float32)
    loss, grad = jax.jit(jax.value_and_grad(lambda z: ce(z, t)[jnp.array([0, 2, 4])].sum()))(z)
    values = jcall(ce, z, t)
    np.testing.assert_allclose(np.asarray(values)[[0, 2, 4]], [np.log1p(np.e), 0.0, 0.0], rtol=1e-6)
    assert values[1] == np.inf and values[3] == np.inf
    np.testing.assert_allclose(loss, np.log1p(np.e), rtol=1e-6)
    p = 1.0 / (1.0 + np.e)
    np.testing.assert_allclose(grad, [[p - 1, 0, 1 - p], [0] * 3, [0] * 3, [0] * 3, [0] * 3], atol=1e-7)
    assert jcall(ce, z, t, reduction="mean") == np.inf  # row 4 does not count; rows 1 and 3 are +inf


@pytest.mark.parametrize("dtype", [jnp.int8, jnp.uint8, jnp.int16, jnp.uint16, jnp.uint32])
def test_narrow_integer_labels_compare_exactly(dtype):
    """Labels narrower than 32 bits are widened before they meet ``num_classes`` and ``ignore_index``: in int16 a
    vocabulary of 40000 would wrap negative, and in uint8 ``ignore_index=-100`` would wrap to the class 156."""
    info = jnp.iinfo(dtype)
    num_classes = 40000 if info.max > 40000 else 300
    valid = [0, min(int(info.max), num_classes - 1), 5]
    logits = _logits((3, num_classes), seed=11)
    expected = ref.softmax_cross_entropy(np.asarray(logits, np.float64), ref.one_hot(np.array(valid), num_classes))
    for fn in (ce_int, ce):
        got = jcall(fn, logits, jnp.asarray(valid, dtype), ignore_index=-100)
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    fused = jxent.linear_softmax_cross_entropy(
        jnp.eye(3, 3), jnp.zeros((3, num_classes)), jnp.asarray(valid, dtype), ignore_index=-100, reduction="none"
    )
    np.testing.assert_allclose(fused, np.log(num_classes), rtol=1e-6)
    if info.max >= num_classes:  # a label just past the vocabulary is out of range, not wrapped into it
        assert np.isnan(jcall(ce_int, logits[:1], jnp.asarray([num_classes], dtype)))[0]


def test_boolean_one_hot_labels_as_in_optax():
    logits = _logits((4, 5), seed=12)
    labels = jnp.asarray(np.eye(5)[[0, 2, 4, 1]] > 0)  # bool one-hot rows
    got = jcall(ce, logits, labels)
    np.testing.assert_allclose(got, optax.losses.softmax_cross_entropy(logits, labels), **OPTAX_TOL)
    np.testing.assert_allclose(
        got, ref.softmax_cross_entropy(logits, ref.one_hot(np.array([0, 2, 4, 1]), 5)), rtol=1e-5
    )


def test_ignore_index_outside_the_label_dtype_ignores_nothing():
    """Compared in int32, ``ignore_index=2**32`` would wrap to 0 and silently ignore the class 0."""
    logits = _logits((2, 5), seed=13)
    labels = jnp.array([0, 1])
    expected = ref.softmax_cross_entropy(logits, ref.one_hot(np.array([0, 1]), 5))
    np.testing.assert_allclose(jcall(ce_int, logits, labels, ignore_index=2**32), expected, rtol=1e-5)
    jxent.validate_labels(labels, 5, ignore_index=2**32)  # both labels are valid classes
    with pytest.raises(ValueError, match="must fit in int32 in the fused"):
        jxent.linear_softmax_cross_entropy(jnp.ones((2, 3)), jnp.ones((3, 5)), labels, ignore_index=2**32)


def test_soft_cap_inf_is_no_capping_and_infinite_temperature_is_refused():
    logits = jnp.array([[2.0, -jnp.inf, 0.5, 30.0], [1.0, 0.0, -1.0, 0.25]])
    labels = jnp.array([3, 1])
    for fn in (jxent.softmax_cross_entropy_with_integer_labels, jxent.softmax_cross_entropy):
        value, grad = jax.value_and_grad(lambda x, f=fn: jnp.sum(f(x, labels, soft_cap=jnp.inf)))(logits)
        ref_value, ref_grad = jax.value_and_grad(lambda x, f=fn: jnp.sum(f(x, labels)))(logits)
        np.testing.assert_array_equal(value, ref_value)
        np.testing.assert_array_equal(grad, ref_grad)
        with pytest.raises(ValueError, match=r"`temperature` must lie in \(0, inf\); got inf"):
            fn(logits, labels, temperature=jnp.inf)
    np.testing.assert_array_equal(jxent.soft_cap(logits, jnp.inf), logits)
    h, w = jnp.ones((2, 3)), jnp.ones((3, 4))
    with pytest.raises(ValueError, match="`temperature` must lie in"):
        jxent.linear_softmax_cross_entropy(h, w, labels, temperature=float("inf"))
    np.testing.assert_array_equal(
        jxent.linear_softmax_cross_entropy(h, w, labels, soft_cap=float("inf")),
        jxent.linear_softmax_cross_entropy(h, w, labels),
    )


def test_probability_labels_nan_class_weight_on_a_masked_class_gives_finite_gradients():
    logits = jnp.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    labels = jnp.array([[0.2, 0.0, 0.8], [0.5, 0.0, 0.5]])
    where = jnp.array([[True, False, True], [True, False, True]])
    weight = jnp.array([1.5, jnp.nan, 0.5])

    def loss(x, t):
        return jnp.sum(jxent.softmax_cross_entropy(x, t, where=where, weight=weight))

    value, (dx, dt) = jax.value_and_grad(loss, argnums=(0, 1))(logits, labels)
    ref_value, (rx, rt) = jax.value_and_grad(
        lambda x, t: jnp.sum(jxent.softmax_cross_entropy(x, t, where=where, weight=jnp.where(where[0], weight, 0.0))),
        argnums=(0, 1),
    )(logits, labels)
    assert np.isfinite(value) and np.all(np.isfinite(dx)) and np.all(np.isfinite(dt))
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(dx, rx, rtol=1e-6)
    np.testing.assert_allclose(dt, rt, rtol=1e-6)


def test_float_labels_of_the_batch_shape_get_a_message_about_integer_labels():
    logits = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match=r"class indices and must be integers \(got dtype float32\)"):
        jxent.softmax_cross_entropy(logits, jnp.array([0.0, 1.0, 2.0, 1.0]))
    # A float column that broadcasts (shape [4, 1]) is a distribution, as in optax.
    np.testing.assert_allclose(
        jxent.softmax_cross_entropy(logits, jnp.ones((4, 1))),
        optax.losses.softmax_cross_entropy(logits, jnp.ones((4, 1))),
    )
