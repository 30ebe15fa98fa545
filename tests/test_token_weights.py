"""``token_weight=`` and ``where=`` of the fused loss against the dense loss weighted by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jxent

N, D, V = 29, 8, 40
CHUNKS = {"chunk_size": 16, "token_chunk_size": 8}


def _data(seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 7)
    h = jax.random.normal(k[0], (N, D))
    w = jax.random.normal(k[1], (D, V)) / np.sqrt(D) * 2
    y = jax.random.randint(k[2], (N,), 0, V).at[::7].set(-100)
    cw = jax.random.uniform(k[3], (V,), minval=0.5, maxval=2.0)
    tw = jax.random.uniform(k[4], (N,), minval=0.0, maxval=3.0).at[3].set(0.0)
    mask = jax.random.bernoulli(k[5], 0.7, (N,))
    ct = jax.random.normal(k[6], (N,))
    return h, w, y, cw, tw, mask, ct


def _reference(h, w, y, cw, tw, mask, reduction):
    """Per-token dense losses times the token weight; ``"mean"`` over sum(t_i w_{y_i}) of the counted tokens."""
    losses = jxent.softmax_cross_entropy_with_integer_labels(
        h @ w, jnp.where(mask, y, -100), weight=cw, ignore_index=-100, label_smoothing=0.1
    )
    weighted = jnp.where(mask, tw, 0.0) * losses
    if reduction == "none":
        return weighted
    if reduction == "sum":
        return jnp.sum(weighted)
    counted = mask & (y != -100)
    return jnp.sum(weighted) / jnp.sum(jnp.where(counted, tw * cw[jnp.where(counted, y, 0)], 0.0))


@pytest.mark.parametrize(
    ("schedule", "reduction"),
    [
        ("one_pass", "mean"),
        ("one_pass", "sum"),
        ("split", "none"),
        ("split", "mean"),
        ("token", "mean"),
        ("vocab", "none"),
    ],
)
def test_token_weight_and_where_match_the_weighted_dense_loss(schedule, reduction):
    h, w, y, cw, tw, mask, ct = _data()

    def fused(h, w):
        return jxent.linear_softmax_cross_entropy(
            h,
            w,
            y,
            class_weight=cw,
            ignore_index=-100,
            label_smoothing=0.1,
            token_weight=tw,
            where=mask,
            reduction=reduction,
            schedule=schedule,
            **CHUNKS,
        )

    value, pull = jax.vjp(jax.jit(fused), h, w)
    ref, ref_pull = jax.vjp(lambda h, w: _reference(h, w, y, cw, tw, mask, reduction), h, w)
    cot = ct if reduction == "none" else jnp.asarray(1.3)
    np.testing.assert_allclose(value, ref, rtol=1e-5, atol=1e-6)
    for g, r in zip(pull(cot), ref_pull(cot), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)


def test_per_token_gradients_are_exact_under_weights():
    """Each token's gradient is its own: d/dh_i of sum_j c_j t_j l_j is c_i t_i dl_i/dh_i."""
    h, w, y, _, tw, _, _ = _data(1)
    y = jnp.where(y < 0, 1, y)

    def per_token(h):
        return jxent.linear_softmax_cross_entropy(
            h, w, y, token_weight=tw, reduction="none", schedule="split", **CHUNKS
        )

    jac = jax.jacrev(per_token)(h)  # [N, N, D]
    off_diagonal = jac * (1 - jnp.eye(N))[:, :, None]
    assert float(jnp.max(jnp.abs(off_diagonal))) == 0.0
    unweighted = jax.jacrev(
        lambda h: jxent.linear_softmax_cross_entropy(h, w, y, reduction="none", schedule="split", **CHUNKS)
    )(h)
    idx = jnp.arange(N)
    np.testing.assert_allclose(jac[idx, idx], tw[:, None] * unweighted[idx, idx], rtol=1e-5, atol=1e-6)


def test_masked_tokens_with_bad_labels_give_zero_not_nan():
    h, w, y, *_ = _data(2)
    y = jnp.where(y < 0, 1, y).at[0].set(V + 5)  # out of range: NaN where it counts
    mask = jnp.ones((N,), bool).at[0].set(False)
    for reduction in ("mean", "none"):

        def f(h, reduction=reduction):
            return jnp.sum(jxent.linear_softmax_cross_entropy(h, w, y, where=mask, reduction=reduction))

        value, grad = jax.value_and_grad(f)(h)
        assert np.isfinite(value) and np.all(np.isfinite(grad))
        assert float(jnp.max(jnp.abs(grad[0]))) == 0.0
    unmasked = jxent.linear_softmax_cross_entropy(h, w, y, reduction="none")
    assert np.isnan(unmasked[0])  # and without the mask the bad label is visible


def test_row_weight_errors():
    h, w, y, *_ = _data()
    with pytest.raises(ValueError, match="`token_weight` must have shape"):
        jxent.linear_softmax_cross_entropy(h, w, y, token_weight=jnp.ones((N + 1,)))
    with pytest.raises(TypeError, match="`where` must be a boolean mask"):
        jxent.linear_softmax_cross_entropy(h, w, y, where=jnp.ones((N,)))
    with pytest.raises(TypeError, match="token_weight"):
        jxent.linear_softmax_cross_entropy(h, w, y, token_weight=jnp.ones((N,), jnp.int32))


def test_weight_keyword_points_to_class_weight():
    """Per-class weights are `weight=` in the dense functions; in the fused one `weight` is the output matrix."""
    h, w, y, cw, *_ = _data()
    with pytest.raises(TypeError, match="per-class weights are `class_weight=`"):
        jxent.linear_softmax_cross_entropy(h, w, y, weight=cw)
    # keyword use of the matrix itself still works
    by_keyword = jxent.linear_softmax_cross_entropy(hidden=h, weight=w, labels=jnp.where(y < 0, 0, y))
    assert np.isfinite(by_keyword)
