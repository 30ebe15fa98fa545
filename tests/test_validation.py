"""check_labels (under checkify, also inside jit) and validate_labels report the first bad label."""

import jax
import jax.numpy as jnp
import pytest
from jax.experimental import checkify

import jxent


def _train_loss(logits, labels, ignore_index=None):
    jxent.check_labels(labels, logits.shape[-1], ignore_index=ignore_index)
    return jxent.softmax_cross_entropy_with_integer_labels(logits, labels, ignore_index=ignore_index, reduction="mean")


def test_check_labels_reports_first_bad_label_with_position_and_value():
    labels = jnp.array([[0, 1, 2], [3, 7, -1]])  # 7 comes first in row-major order
    err, loss = checkify.checkify(jax.jit(_train_loss))(jnp.zeros((2, 3, 5)), labels)
    message = err.get()
    assert message is not None
    assert "label 7" in message and "position [1 1]" in message and "[0, 5)" in message
    with pytest.raises(checkify.JaxRuntimeError, match="label 7 at position"):
        err.throw()
    assert jnp.isnan(loss)  # the loss itself never raises: the bad example gives NaN


def test_check_labels_under_checkify_without_jit():
    def count(labels):
        jxent.check_labels(labels, 3)
        return labels.sum()

    err, _ = checkify.checkify(count)(jnp.array([2, 0, 3, 5]))
    assert "label 3 at position [2]" in err.get()
    err, _ = checkify.checkify(count)(jnp.array([2, 0, 1, 1]))
    assert err.get() is None


def test_valid_labels_pass():
    err, loss = checkify.checkify(jax.jit(_train_loss))(jnp.zeros((2, 3)), jnp.array([0, 2]))
    assert err.get() is None
    assert jnp.isfinite(loss)


def test_ignore_index_is_allowed_but_minus_one_is_flagged():
    logits = jnp.zeros((4, 3))
    labels = jnp.array([0, -100, 2, -100])
    err, _ = checkify.checkify(jax.jit(lambda z, y: _train_loss(z, y, ignore_index=-100)))(logits, labels)
    assert err.get() is None
    err, _ = checkify.checkify(jax.jit(_train_loss))(logits, jnp.array([0, 1, -1, 2]))
    assert "label -1 at position [2]" in err.get()


def test_validate_labels_raises_with_position_and_value():
    with pytest.raises(checkify.JaxRuntimeError, match=r"label -1 at position \[1\]"):
        jxent.validate_labels(jnp.array([0, -1, 9]), 4)
    with pytest.raises(checkify.JaxRuntimeError, match=r"label 4 at position \[0 2\]"):
        jxent.validate_labels(jnp.array([[0, 1, 4], [9, 0, 0]]), 4)
    with pytest.raises(checkify.JaxRuntimeError, match=r"label 9 at position \[2\]"):
        jxent.validate_labels(jnp.array([0, -1, 9]), 4, ignore_index=-1)
    jxent.validate_labels(jnp.array([0, -1, 3]), 4, ignore_index=-1)  # nothing to report
    jxent.validate_labels(jnp.zeros((0,), jnp.int32), 4)  # an empty batch is valid


def test_argument_errors():
    with pytest.raises(TypeError, match="labels"):
        jxent.validate_labels(jnp.array([0.0, 1.0]), 4)
    with pytest.raises(ValueError, match="num_classes"):
        jxent.validate_labels(jnp.array([0, 1]), 0)
    with pytest.raises(TypeError, match="ignore_index"):
        jxent.validate_labels(jnp.array([0, 1]), 4, ignore_index=0.5)


def test_narrow_label_dtypes_are_checked_exactly():
    jxent.validate_labels(jnp.array([5, 127], jnp.int8), 200)  # 200 does not fit in int8: no false alarm
    jxent.validate_labels(jnp.array([156], jnp.uint8), 300, ignore_index=-100)
    with pytest.raises(checkify.JaxRuntimeError, match="label 250 at position"):
        jxent.validate_labels(jnp.array([3, 250], jnp.uint8), 200)


def test_uint32_labels_above_int32_are_reported_and_never_ignored():
    labels = jnp.array([3, 2**31 + 3, 2**32 - 100], jnp.uint32)  # 2**32 - 100 is not -100
    with pytest.raises(checkify.JaxRuntimeError, match="label 2147483651 at position"):
        jxent.validate_labels(labels, 5, ignore_index=-100)
    dense = jxent.softmax_cross_entropy_with_integer_labels(jnp.zeros((3, 5)), labels, ignore_index=-100)
    fused = jxent.linear_softmax_cross_entropy(
        jnp.ones((3, 2)), jnp.zeros((2, 5)), labels, ignore_index=-100, reduction="none"
    )
    for out in (dense, fused):
        assert out[0] == pytest.approx(jnp.log(5.0)) and jnp.isnan(out[1]) and jnp.isnan(out[2])


def test_uint32_labels_with_an_ignore_index_above_int32():
    """``ignore_index=2**31`` fits uint32 labels: it is compared as uint32 (a bare Python int would not fit int32)."""
    labels = jnp.array([1, 2**31, 2**31 + 3], jnp.uint32)
    out = jxent.softmax_cross_entropy_with_integer_labels(jnp.zeros((3, 8)), labels, ignore_index=2**31)
    assert out[0] == pytest.approx(jnp.log(8.0)) and out[1] == 0.0 and jnp.isnan(out[2])
    with pytest.raises(checkify.JaxRuntimeError, match="label 2147483651 at position"):
        jxent.validate_labels(labels, 8, ignore_index=2**31)
