"""The language-model head functions against the naive ``hidden @ weight`` + dense jxent functions.

Token statistics, forward/reverse KL, generalized JS and the top-k sparse KL: values and gradients on every
schedule (float32 within 1e-5 / 1e-4 relative to the largest reference entry, bfloat16 within 1e-2), second order
with ``check_grads`` in float64, ``jit``/``vmap``, the numerics the issue asks for (non-negative divergences when
the heads nearly agree, finite values and gradients at logits of magnitude 1e4) and the bad inputs.
"""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jxent

N, D, DT, V, K = 29, 12, 8, 40, 6  # N and V are not multiples of the chunks
CHUNKS = {"chunk_size": 16, "token_chunk_size": 8}


def _data(seed=0, dtype=jnp.float32, scale=2.0):
    k = jax.random.split(jax.random.PRNGKey(seed), 9)
    h = jax.random.normal(k[0], (N, D))
    w = jax.random.normal(k[1], (D, V)) / np.sqrt(D) * scale
    b = jax.random.normal(k[2], (V,)) * 0.5
    th = jax.random.normal(k[3], (N, DT))
    tw = jax.random.normal(k[4], (DT, V)) / np.sqrt(DT) * scale
    tb = jax.random.normal(k[5], (V,)) * 0.5
    y = jax.random.randint(k[6], (N,), 0, V)
    mask = jax.random.bernoulli(k[7], 0.8, (N,))
    ct = jax.random.normal(k[8], (N,))
    cast = lambda x: x.astype(dtype)
    return (*map(cast, (h, w, b, th, tw, tb)), y, mask, ct)


def _logits(h, w, b, temperature=1.0):
    return (h.astype(jnp.float32) @ w.astype(jnp.float32) + b.astype(jnp.float32)) / temperature


def _assert_rel(actual, expected, rtol, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(np.max(np.abs(expected)), 1e-30)
    err = np.max(np.abs(actual - expected)) / scale
    assert err <= rtol, f"{what}: max error {err:.2e} (relative to max |ref|) > {rtol:g}"


def _compare(fused, naive, args, ct, value_tol, grad_tol):
    value, pull = jax.vjp(jax.jit(fused), *args)
    ref, ref_pull = jax.vjp(naive, *args)
    cot = jax.tree.map(lambda v: (ct if v.ndim else jnp.asarray(1.3)).astype(v.dtype), ref)
    for a, r in zip(jax.tree.leaves(value), jax.tree.leaves(ref), strict=True):
        _assert_rel(a, r, value_tol, "value")
    for i, (g, r) in enumerate(zip(pull(cot), ref_pull(cot), strict=True)):
        assert g.dtype == args[i].dtype
        _assert_rel(g, r, grad_tol, f"gradient {i}")


# --- naive references: the logits, then the dense jxent functions -------------------------------------------


def _naive_stats(h, w, b, y):
    z = _logits(h, w, b, 0.7)
    log_p = jxent.log_softmax(z)
    return (
        jnp.take_along_axis(log_p, y[:, None], axis=-1)[:, 0],
        jxent.entropy(jxent.softmax(z)),
        jxent.logsumexp(z, axis=-1),
    )


def _naive_kl(h, w, b, th, tw, tb, mask, reduction, reverse=False):
    zs, zt = _logits(h, w, b, 1.5), _logits(th, tw, tb, 1.5)
    if reverse:
        zs, zt = zt, zs
    kl = jxent.kl_divergence(jxent.log_softmax(zs), jxent.softmax(zt), where=None)
    return jxent.reduce_loss(jnp.where(mask, kl, 0.0), weights=mask.astype(kl.dtype), reduction=reduction)


def _naive_js(h, w, b, th, tw, tb, mask, reduction, beta):
    ps, pt = jxent.softmax(_logits(h, w, b)), jxent.softmax(_logits(th, tw, tb))
    log_m = jnp.log(beta * pt + (1 - beta) * ps)
    js = beta * jxent.kl_divergence(log_m, pt) + (1 - beta) * jxent.kl_divergence(log_m, ps)
    return jxent.reduce_loss(jnp.where(mask, js, 0.0), weights=mask.astype(js.dtype), reduction=reduction)


def _teacher_topk(seed=1, k=K):
    teacher = jxent.log_softmax(jax.random.normal(jax.random.PRNGKey(seed), (N, V)) * 2.0)
    log_p, idx = jax.lax.top_k(teacher, k)
    return idx, log_p


def _naive_sparse(h, w, b, log_p, idx, mask, reduction):
    q = jxent.softmax(_logits(h, w, b))
    q_k = jnp.take_along_axis(q, idx, axis=-1)
    bins_q = jnp.concatenate([q_k, 1.0 - jnp.sum(q_k, -1, keepdims=True)], axis=-1)
    p_k = jnp.exp(log_p)
    bins_p = jnp.concatenate([p_k, 1.0 - jnp.sum(p_k, -1, keepdims=True)], axis=-1)
    kl = jxent.kl_divergence(jnp.log(bins_q), bins_p)
    return jxent.reduce_loss(jnp.where(mask, kl, 0.0), weights=mask.astype(kl.dtype), reduction=reduction)


# --- agreement with the naive versions ---------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["token", "vocab", "split"])
def test_token_statistics_match_naive(schedule):
    h, w, b, *_, y, _, ct = _data()

    def fused(h, w, b):
        s = jxent.linear_token_statistics(h, w, y, bias=b, temperature=0.7, schedule=schedule, **CHUNKS)
        return s.log_prob, s.entropy, s.logsumexp

    _compare(fused, lambda h, w, b: _naive_stats(h, w, b, y), (h, w, b), ct, 1e-5, 1e-4)
    stats = jxent.linear_token_statistics(h, w, y, bias=b, **CHUNKS)
    assert stats.argmax.dtype == jnp.int32
    np.testing.assert_array_equal(stats.argmax, jnp.argmax(_logits(h, w, b), axis=-1))


CASES = [("one_pass", "mean"), ("one_pass", "sum"), ("token", "none"), ("vocab", "mean"), ("split", "none")]


@pytest.mark.parametrize(("schedule", "reduction"), CASES)
def test_kl_matches_naive(schedule, reduction):
    h, w, b, th, tw, tb, _, mask, ct = _data()

    def fused(h, w, b, th, tw, tb):
        return jxent.linear_kl_divergence(
            h, w, th, tw, bias=b, teacher_bias=tb, temperature=1.5, where=mask, reduction=reduction,
            schedule=schedule, **CHUNKS,
        )  # fmt: skip

    naive = lambda *a: _naive_kl(*a, mask, reduction)
    _compare(fused, naive, (h, w, b, th, tw, tb), ct, 1e-5, 1e-4)


@pytest.mark.parametrize("schedule", ["one_pass", "split"])
def test_reverse_kl_matches_naive(schedule):
    h, w, b, th, tw, tb, _, mask, ct = _data(1)

    def fused(h, w, b, th, tw, tb):
        return jxent.linear_kl_divergence(
            h, w, th, tw, bias=b, teacher_bias=tb, temperature=1.5, where=mask, reverse=True, reduction="none",
            schedule=schedule, **CHUNKS,
        )  # fmt: skip

    naive = lambda *a: _naive_kl(*a, mask, "none", reverse=True)
    _compare(fused, naive, (h, w, b, th, tw, tb), ct, 1e-5, 1e-4)


@pytest.mark.parametrize(("schedule", "reduction", "beta"), [("one_pass", "mean", 0.5), ("vocab", "none", 0.2)])
def test_js_matches_naive(schedule, reduction, beta):
    h, w, b, th, tw, tb, _, mask, ct = _data(2)

    def fused(h, w, b, th, tw, tb):
        return jxent.linear_js_divergence(
            h, w, th, tw, beta=beta, bias=b, teacher_bias=tb, where=mask, reduction=reduction, schedule=schedule,
            **CHUNKS,
        )  # fmt: skip

    naive = lambda *a: _naive_js(*a, mask, reduction, beta)
    _compare(fused, naive, (h, w, b, th, tw, tb), ct, 1e-5, 1e-4)


def test_js_at_one_half_is_the_dense_js_divergence():
    h, w, b, th, tw, tb, *_ = _data(3)
    js = jxent.linear_js_divergence(h, w, th, tw, bias=b, teacher_bias=tb, reduction="none")
    dense = jxent.js_divergence(jxent.softmax(_logits(th, tw, tb)), jxent.softmax(_logits(h, w, b)))
    _assert_rel(js, dense, 1e-5, "js")


@pytest.mark.parametrize(("schedule", "reduction"), [("token", "none"), ("vocab", "mean"), ("split", "sum")])
def test_sparse_kl_matches_naive(schedule, reduction):
    h, w, b, *_, mask, ct = _data(4)
    idx, log_p = _teacher_topk()

    def fused(h, w, b, log_p):
        return jxent.linear_sparse_kl_divergence(
            h, w, idx, log_p, bias=b, where=mask, reduction=reduction, schedule=schedule, **CHUNKS
        )

    naive = lambda h, w, b, log_p: _naive_sparse(h, w, b, log_p, idx, mask, reduction)
    _compare(fused, naive, (h, w, b, log_p), ct, 1e-5, 1e-4)


def test_sparse_kl_with_every_class_is_the_full_kl():
    h, w, b, *_ = _data(5)
    teacher = jxent.log_softmax(jax.random.normal(jax.random.PRNGKey(9), (N, V)))
    idx = jnp.broadcast_to(jax.random.permutation(jax.random.PRNGKey(3), V), (N, V))
    sparse = jxent.linear_sparse_kl_divergence(h, w, idx, jnp.take_along_axis(teacher, idx, -1), bias=b)
    full = jxent.kl_divergence(jxent.log_softmax(_logits(h, w, b)), jnp.exp(teacher), reduction="mean")
    _assert_rel(sparse, full, 1e-5, "k = V")


def test_bf16_within_1e_2():
    h, w, b, th, tw, tb, y, _, _ = _data(6, dtype=jnp.bfloat16)
    idx, log_p = _teacher_topk()
    cases = [
        (
            lambda h, w, b, th, tw, tb: jxent.linear_kl_divergence(
                h, w, th, tw, bias=b, teacher_bias=tb, temperature=1.5, **CHUNKS
            ),
            lambda *a: _naive_kl(*a, jnp.ones((N,), bool), "mean", False),
        ),
        (
            lambda h, w, b, th, tw, tb: jxent.linear_js_divergence(h, w, th, tw, bias=b, teacher_bias=tb, **CHUNKS),
            lambda *a: _naive_js(*a, jnp.ones((N,), bool), "mean", 0.5),
        ),
        (
            lambda h, w, b, th, tw, tb: jxent.linear_token_statistics(h, w, y, bias=b, temperature=0.7, **CHUNKS)[:3],
            lambda h, w, b, *_: _naive_stats(h, w, b, y),
        ),
    ]

    def total(f):
        return lambda *a: sum(jnp.sum(x) for x in jax.tree.leaves(f(*a)))

    for fused, naive in cases:
        f32 = [x.astype(jnp.float32) for x in (h, w, b, th, tw, tb)]
        value = jax.jit(fused)(h, w, b, th, tw, tb)
        for a, r in zip(jax.tree.leaves(value), jax.tree.leaves(naive(*f32)), strict=True):
            assert a.dtype == jnp.float32  # computed in float32
            _assert_rel(a, r, 1e-2, "bf16 value")
        grads = jax.grad(total(fused), argnums=(0, 1))(h, w, b, th, tw, tb)
        ref = jax.grad(total(naive), argnums=(0, 1))(*f32)
        for g, r in zip(grads, ref, strict=True):
            assert g.dtype == jnp.bfloat16
            _assert_rel(g, r, 1e-2, "bf16 gradient")
    sparse = jxent.linear_sparse_kl_divergence(h, w, idx, log_p, bias=b, **CHUNKS)
    f32 = [x.astype(jnp.float32) for x in (h, w, b)]
    _assert_rel(sparse, _naive_sparse(*f32, log_p, idx, jnp.ones((N,), bool), "mean"), 1e-2, "bf16 sparse")


# --- second order, jit and vmap ------------------------------------------------------------------------------------


def _small(seed=0):
    """A small float64 problem (x64 must be on)."""
    n, d, v = 5, 3, 7
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    f = lambda key, shape: jax.random.normal(key, shape, jnp.float64)
    return f(k[0], (n, d)), f(k[1], (d, v)), f(k[2], (n, d)), f(k[3], (d, v)), jax.random.randint(k[4], (n,), 0, v)


@pytest.mark.parametrize("schedule", ["split"])  # both loop orders (the fused CE's tests cover the others)
def test_check_grads_second_order_x64(x64, schedule):
    h, w, th, tw, y = _small()
    opts = {"schedule": schedule, "chunk_size": 3, "token_chunk_size": 2}
    idx = jnp.array([[0, 3], [1, 2], [6, 5], [4, 0], [2, 3]])
    log_p = jnp.log(jnp.full((5, 2), 0.3))

    def stats(h, w):
        s = jxent.linear_token_statistics(h, w, y, **opts)
        return jnp.sum(s.log_prob * 0.3 + s.entropy * 0.5 - 0.2 * s.logsumexp)

    fns = [
        (stats, (h, w)),
        (lambda h, w, th, tw: jxent.linear_kl_divergence(h, w, th, tw, **opts), (h, w, th, tw)),
        (lambda h, w, th, tw: jxent.linear_js_divergence(h, w, th, tw, beta=0.3, **opts), (h, w, th, tw)),
        (lambda h, w, lp: jxent.linear_sparse_kl_divergence(h, w, idx, lp, **opts), (h, w, log_p)),
    ]
    for f, args in fns:
        check_grads(jax.jit(f), args, order=2, modes=["rev"], atol=1e-5, rtol=1e-5)


def test_jit_and_vmap():
    h, w, _, th, tw, _, y, _, _ = _data(7)
    batched = jnp.stack([h, 2.0 * h])

    def kl(h):
        return jxent.linear_kl_divergence(h, w, th, tw, reduction="none", **CHUNKS)

    np.testing.assert_allclose(jax.vmap(kl)(batched), jnp.stack([kl(h), kl(2.0 * h)]), rtol=1e-6)
    stats = jax.jit(jax.vmap(lambda h: jxent.linear_token_statistics(h, w, y, **CHUNKS)))(batched)
    np.testing.assert_allclose(stats.entropy[1], jxent.linear_token_statistics(2.0 * h, w, y).entropy, rtol=1e-5)
    # batch dimensions: [2, N, D] hidden states and [2, N] labels, the same as two calls
    two = jxent.linear_token_statistics(batched, w, jnp.stack([y, y]), **CHUNKS)
    assert two.log_prob.shape == (2, N)
    np.testing.assert_allclose(two.log_prob[0], stats.log_prob[0], rtol=1e-6)


# --- numerics ------------------------------------------------------------------------------------------------------


def test_divergences_are_non_negative_when_the_heads_nearly_agree():
    h, w, *_ = _data(8)
    for eps in (0.0, 1e-7, 1e-5, 1e-3):
        w2 = w * (1.0 + eps)
        for value in (
            jxent.linear_kl_divergence(h, w, h, w2, reduction="none"),
            jxent.linear_kl_divergence(h, w, h, w2, reverse=True, reduction="none"),
            jxent.linear_js_divergence(h, w, h, w2, reduction="none"),
        ):
            assert float(jnp.min(value)) >= -1e-6
    assert float(jnp.max(jnp.abs(jxent.linear_kl_divergence(h, w, h, w, reduction="none")))) == 0.0


def test_finite_at_logits_of_magnitude_1e4():
    h, w, _, th, tw, _, y, _, _ = _data(9)
    w_big, tw_big = w * 1e4 / 3, tw * 1e4 / 3  # logits of order 1e4
    idx, log_p = _teacher_topk()
    fns = [
        lambda h, w, th, tw: jnp.sum(jnp.stack(jxent.linear_token_statistics(h, w, y)[:3])),
        lambda h, w, th, tw: jxent.linear_kl_divergence(h, w, th, tw),
        lambda h, w, th, tw: jxent.linear_kl_divergence(h, w, th, tw, reverse=True),
        lambda h, w, th, tw: jxent.linear_js_divergence(h, w, th, tw),
        lambda h, w, th, tw: jxent.linear_sparse_kl_divergence(h, w, idx, log_p),
    ]
    for f in fns:
        value, grads = jax.value_and_grad(f, argnums=(0, 1, 2, 3))(h, w_big, th, tw_big)
        assert np.isfinite(value), f
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads), f
    ent = jxent.linear_token_statistics(h, w_big, y).entropy
    assert float(jnp.min(ent)) >= 0.0 and np.all(np.isfinite(ent))


def test_masked_and_bad_rows():
    h, w, *_, y, _, _ = _data(10)
    idx, log_p = _teacher_topk()
    bad = idx.at[0, 1].set(idx[0, 0]).at[1, 0].set(V)  # a repeated class, a class out of range
    rows = jxent.linear_sparse_kl_divergence(h, w, bad, log_p, reduction="none")
    assert np.isnan(rows[0]) and np.isnan(rows[1]) and np.all(np.isfinite(rows[2:]))
    mask = jnp.ones((N,), bool).at[:2].set(False)
    f = lambda h, lp: jxent.linear_sparse_kl_divergence(h, w, bad, lp, where=mask)
    value, (dh, dlp) = jax.value_and_grad(f, argnums=(0, 1))(h, log_p)
    assert np.isfinite(value) and np.all(np.isfinite(dh)) and np.all(np.isfinite(dlp))
    assert float(jnp.max(jnp.abs(dh[:2]))) == 0.0
    stats = jxent.linear_token_statistics(h, w, y.at[0].set(V).at[1].set(-100), ignore_index=-100)
    assert np.isnan(stats.log_prob[0]) and stats.log_prob[1] == 0.0 and np.isfinite(stats.entropy[0])


# --- bad input ---------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    h, w, _, th, tw, _, y, mask, _ = _data()
    idx, log_p = _teacher_topk()
    with pytest.raises(ValueError, match="same vocabulary"):
        jxent.linear_kl_divergence(h, w, th, tw[:, :-1])
    with pytest.raises(ValueError, match="teacher_hidden"):
        jxent.linear_js_divergence(h, w, th[:-1], tw)
    with pytest.raises(ValueError, match="`teacher_weight` must have shape"):
        jxent.linear_kl_divergence(h, w, th, tw[0])
    with pytest.raises(ValueError, match="`weight` must have shape"):
        jxent.linear_token_statistics(h, w[None], y)
    with pytest.raises(ValueError, match="`labels` must have shape"):
        jxent.linear_token_statistics(h, w, y[None])
    with pytest.raises(ValueError, match="`beta` must be"):
        jxent.linear_js_divergence(h, w, th, tw, beta=1.0)
    with pytest.raises(ValueError, match="1 <= k <= V"):
        jxent.linear_sparse_kl_divergence(h, w, jnp.zeros((N, V + 1), int), jnp.zeros((N, V + 1)))
    with pytest.raises(ValueError, match="`teacher_log_probs` must have the shape"):
        jxent.linear_sparse_kl_divergence(h, w, idx, log_p[:, :-1])
    with pytest.raises(ValueError, match="`teacher_indices` must have shape"):
        jxent.linear_sparse_kl_divergence(h, w, idx[0], log_p[0])
    with pytest.raises(TypeError, match="`teacher_indices` must be an integer array"):
        jxent.linear_sparse_kl_divergence(h, w, log_p, log_p)
    with pytest.raises(ValueError, match="reduction"):
        jxent.linear_kl_divergence(h, w, th, tw, reduction="avg")
    with pytest.raises(TypeError, match="`where` must be a boolean mask"):
        jxent.linear_kl_divergence(h, w, th, tw, where=mask.astype(int))


# --- vocabulary-sharded forms on 8 fake CPU devices ----------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh():
    devices = jax.devices()
    if len(devices) < 8:
        pytest.skip("needs 8 devices (tests/conftest.py sets XLA_FLAGS for 8 fake CPU devices)")
    return jax.sharding.Mesh(np.array(devices[:8]).reshape(2, 4), ("data", "model"))


def test_sharded_forms_match_single_device(mesh):
    n, v = 12, 64  # tokens split over "data" (2), classes over "model" (4)
    k = jax.random.split(jax.random.PRNGKey(11), 6)
    h, th = jax.random.normal(k[0], (n, D)), jax.random.normal(k[1], (n, DT))
    w, tw = jax.random.normal(k[2], (D, v)) / 2, jax.random.normal(k[3], (DT, v)) / 2
    y = jax.random.randint(k[4], (n,), 0, v)
    mask = jnp.arange(n) % 5 != 0
    log_p, idx = jax.lax.top_k(jxent.log_softmax(jax.random.normal(k[5], (n, v))), K)
    shard = {"mesh": mesh, "vocab_axis": "model", "batch_axis": "data", **CHUNKS}
    calls = {  # name: (call(f, args, options), args)
        "linear_token_statistics": (lambda f, a, o: f(*a, y, **o)[:3], (h, w)),
        "linear_kl_divergence": (lambda f, a, o: f(*a, where=mask, **o), (h, w, th, tw)),
        "linear_js_divergence": (lambda f, a, o: f(*a, beta=0.3, reduction="none", **o), (h, w, th, tw)),
        "linear_sparse_kl_divergence": (lambda f, a, o: f(a[0], a[1], idx, a[2], where=mask, **o), (h, w, log_p)),
        "linear_softmax_cross_entropy": (
            lambda f, a, o: f(*a, y, token_weight=1.0 + mask, where=mask, **o),
            (h, w),
        ),
    }
    for name, (call, args) in calls.items():
        sharded = functools.partial(call, getattr(jxent, "sharded_" + name), o=shard)
        single = functools.partial(call, getattr(jxent, name), o=CHUNKS)
        (a, pa) = jax.vjp(jax.jit(lambda *x, f=sharded: f(x)), *args)
        (r, pr) = jax.vjp(lambda *x, f=single: f(x), *args)
        for x, z in zip(jax.tree.leaves(a), jax.tree.leaves(r), strict=True):
            _assert_rel(x, z, 1e-5, f"sharded {name}")
        cot = jax.tree.map(lambda x: jnp.full(x.shape, 0.7, x.dtype), r)
        for g, gr in zip(pa(cot), pr(cot), strict=True):
            _assert_rel(g, gr, 1e-5, f"sharded {name} gradient")
    stats = jax.jit(lambda h, w: jxent.sharded_linear_token_statistics(h, w, y, **shard))(h, w)
    np.testing.assert_array_equal(stats.argmax, jnp.argmax(h @ w, axis=-1))


def test_a_frozen_teacher_gets_no_gradient_work():
    """``symbolic_zeros``: with the teacher under ``stop_gradient`` no teacher ``dh``/``dW`` matmul is compiled, and
    the student's gradient is unchanged."""
    h, w, _, th, tw, *_ = _data(12)
    for schedule in ("one_pass", "split"):

        def frozen(h, w, schedule=schedule):
            teacher = jax.lax.stop_gradient((th, tw))
            return jxent.linear_kl_divergence(h, w, *teacher, schedule=schedule, **CHUNKS)

        def both(h, w, th, tw, schedule=schedule):
            return jxent.linear_kl_divergence(h, w, th, tw, schedule=schedule, **CHUNKS)

        g_frozen = jax.grad(frozen, argnums=(0, 1))(h, w)
        g_both = jax.grad(both, argnums=(0, 1, 2, 3))(h, w, th, tw)
        for a, r in zip(g_frozen, g_both[:2], strict=True):
            np.testing.assert_array_equal(a, r)
        # and the other way round: a frozen student (the first head), gradients for the teacher only
        g_teacher = jax.grad(lambda th, tw, f=both: f(*jax.lax.stop_gradient((h, w)), th, tw), argnums=(0, 1))(th, tw)
        for a, r in zip(g_teacher, g_both[2:], strict=True):
            np.testing.assert_array_equal(a, r)
        dots = lambda f, *a: jax.jit(jax.grad(f, argnums=(0, 1))).lower(*a).as_text().count("dot_general")
        assert dots(frozen, h, w) < jax.jit(jax.grad(both, argnums=(0, 1, 2, 3))).lower(h, w, th, tw).as_text().count(
            "dot_general"
        )


def test_sharded_forms_work_outside_jit():
    """Outside ``jit``, ``shard_map`` does not support a plain call of a ``custom_vjp`` with ``symbolic_zeros``
    (``NotImplementedError``): the sharded forms use the kernel without it. Run in a fresh process with one
    device, as a user without a cluster would."""
    code = """
import jax, jax.numpy as jnp, jxent
mesh = jax.make_mesh((len(jax.devices()),), ("vocab",))
h, w = jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.linspace(-1.0, 1.0, 16).reshape(2, 8)
y = jnp.array([0, 5])
for name, f in (
    ("ce", lambda h, w: jxent.sharded_linear_softmax_cross_entropy(h, w, y, mesh=mesh, vocab_axis="vocab")),
    ("kl", lambda h, w: jxent.sharded_linear_kl_divergence(h, w, 2 * h, w, mesh=mesh, vocab_axis="vocab")),
):
    value = f(h, w)  # a plain call, no transformation
    grads = jax.grad(f, argnums=(0, 1))(h, w)
    print(name, bool(jnp.isfinite(value)), all(bool(jnp.all(jnp.isfinite(g))) for g in grads))
"""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ce", "True", "True", "kl", "True", "True"], out.stdout
