"""jxent.linear_softmax_cross_entropy against the naive ``hidden @ weight`` + dense loss, values and gradients."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jxent
from jxent._options import CrossEntropyOptions
from jxent.fused import prepare as fused

N, D, V = 37, 16, 50  # N and V are not multiples of the chunks below
CHUNKS = {"chunk_size": 16, "token_chunk_size": 8}
SCHEDULES = ("one_pass", "split", "token", "vocab")

OPTION_SETS = {
    "plain": {},
    "cap_temperature": {"soft_cap": 3.0, "temperature": 0.7},
    "smoothing_zloss": {"label_smoothing": 0.1, "z_loss": 1e-2},
    "everything": {
        "class_weight": "cw",
        "label_smoothing": 0.2,
        "ignore_index": -100,
        "soft_cap": 2.0,
        "z_loss": 0.1,
        "temperature": 1.3,
    },
}


def _data(seed=0, n=N, d=D, v=V, dtype=jnp.float32):
    k = jax.random.split(jax.random.PRNGKey(seed), 6)
    h = jax.random.normal(k[0], (n, d), jnp.float32)
    w = jax.random.normal(k[1], (d, v), jnp.float32) / np.sqrt(d) * 2.0
    b = jax.random.normal(k[2], (v,), jnp.float32) * 0.5
    y = jax.random.randint(k[3], (n,), 0, v)
    y = y.at[::5].set(-100)  # ignored when ignore_index=-100 (NaN otherwise: those sets leave it out)
    cw = jax.random.uniform(k[4], (v,), minval=0.5, maxval=2.0)
    ct = jax.random.normal(k[5], (n,))
    return h.astype(dtype), w.astype(dtype), b.astype(dtype), y, cw, ct


def _options(name, cw, y):
    opts = dict(OPTION_SETS[name])
    if opts.get("class_weight") == "cw":
        opts["class_weight"] = cw
    if "ignore_index" not in opts:
        y = jnp.where(y < 0, 3, y)
    return opts, y


def _naive(h, w, b, y, reduction, opts):
    dense = {("weight" if k == "class_weight" else k): v for k, v in opts.items()}
    logits = h.astype(jnp.float32) @ w.astype(jnp.float32) + b.astype(jnp.float32)
    return jxent.softmax_cross_entropy_with_integer_labels(logits, y, reduction=reduction, **dense)


def _vjp(f, args, reduction, ct):
    value, pullback = jax.vjp(f, *args)
    cot = ct.astype(value.dtype) if reduction == "none" else jnp.ones((), value.dtype) * 1.7
    return value, pullback(cot)


def _assert_rel(actual, expected, rtol, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(np.max(np.abs(expected)), 1e-30)
    err = np.max(np.abs(actual - expected)) / scale
    assert err <= rtol, f"{what}: max error {err:.2e} (relative to max |ref|) > {rtol:g}"


# Every schedule with every option at once and every reduction, plus each option set on its own.
CASES = [(s, "everything", r) for s in SCHEDULES for r in ("mean", "sum", "none")] + [
    ("one_pass", "plain", "mean"),
    ("split", "plain", "none"),
    ("token", "cap_temperature", "sum"),
    ("vocab", "cap_temperature", "none"),
    ("one_pass", "smoothing_zloss", "mean"),
    ("split", "smoothing_zloss", "none"),
]


@pytest.mark.parametrize(("schedule", "options", "reduction"), CASES)
def test_matches_naive_f32(schedule, options, reduction):
    h, w, b, y, cw, ct = _data()
    opts, y = _options(options, cw, y)

    def f(h, w, b):
        return jxent.linear_softmax_cross_entropy(
            h, w, y, bias=b, reduction=reduction, schedule=schedule, **CHUNKS, **opts
        )

    value, grads = _vjp(jax.jit(f), (h, w, b), reduction, ct)
    ref_value, ref_grads = _vjp(lambda h, w, b: _naive(h, w, b, y, reduction, opts), (h, w, b), reduction, ct)
    _assert_rel(value, ref_value, 1e-5, "loss")
    for name, g, r in zip(("hidden", "weight", "bias"), grads, ref_grads, strict=True):
        _assert_rel(g, r, 1e-5, f"d{name}")


@pytest.mark.parametrize("schedule", ["one_pass", "split", "vocab"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_bf16_against_f32_reference(schedule, reduction):
    h, w, b, y, cw, ct = _data(seed=1, dtype=jnp.bfloat16)
    opts, y = _options("everything", cw, y)

    def f(h, w, b):
        return jxent.linear_softmax_cross_entropy(
            h, w, y, bias=b, reduction=reduction, schedule=schedule, **CHUNKS, **opts
        )

    value, grads = _vjp(jax.jit(f), (h, w, b), reduction, ct)
    f32 = [a.astype(jnp.float32) for a in (h, w, b)]
    ref_value, ref_grads = _vjp(lambda h, w, b: _naive(h, w, b, y, reduction, opts), f32, reduction, ct)
    assert value.dtype == jnp.float32
    _assert_rel(value, ref_value, 1e-2, "loss")
    for name, g, r, x in zip(("hidden", "weight", "bias"), grads, ref_grads, (h, w, b), strict=True):
        assert g.dtype == x.dtype == jnp.bfloat16
        _assert_rel(g, r, 1e-2, f"d{name}")


def test_default_schedules():
    h, w, _, y, *_ = _data()
    p = fused.prepare(h, w, y, **_prepare_defaults())
    assert p.cfg.schedule == "one_pass"  # float32 weight: gradients in the forward pass for mean/sum
    p16 = fused.prepare(h, w.astype(jnp.bfloat16), y, **_prepare_defaults())
    assert p16.cfg.schedule == "split"  # 16-bit weight: no float32 [D, V] accumulator
    assert (p16.cfg.token_chunk, p16.cfg.vocab_chunk) == (N, V)  # clipped to the problem


def _prepare_defaults():
    return dict(
        bias=None,
        class_weight=None,
        options=CrossEntropyOptions(reduction="mean"),
        chunk_size=None,
        token_chunk_size=None,
        schedule="auto",
    )


@pytest.mark.parametrize("schedule", ["one_pass", "split"])
def test_all_ignored_gives_zero_and_zero_grads(schedule):
    h, w, b, _, _, _ = _data()
    y = jnp.full((N,), -100)

    def f(h, w, b):
        return jxent.linear_softmax_cross_entropy(
            h, w, y, bias=b, ignore_index=-100, z_loss=0.1, schedule=schedule, **CHUNKS
        )

    value, grads = jax.value_and_grad(f, argnums=(0, 1, 2))(h, w, b)
    assert value == 0.0
    for g in grads:
        assert not np.any(np.asarray(g))


def test_out_of_range_label_is_nan_and_ignored_is_zero():
    h, w, _, y, _, _ = _data()
    y = jnp.where(y < 0, 0, y).at[0].set(V).at[1].set(-1).at[2].set(-100)
    losses = jxent.linear_softmax_cross_entropy(h, w, y, ignore_index=-100, reduction="none", **CHUNKS)
    assert np.isnan(losses[0]) and np.isnan(losses[1])  # -1 does not wrap around
    assert losses[2] == 0.0
    assert np.all(np.isfinite(losses[3:]))
    assert np.isnan(jxent.linear_softmax_cross_entropy(h, w, y, ignore_index=-100, **CHUNKS))


def test_batch_dims_jit_and_vmap():
    h, w, b, y, _, _ = _data()
    y = jnp.where(y < 0, 0, y)
    h3, y3 = h[:36].reshape(3, 12, D), y[:36].reshape(3, 12)
    kw = dict(bias=b, reduction="none", label_smoothing=0.1, **CHUNKS)
    ref = _naive(h3, w, b, y3, "none", {"label_smoothing": 0.1})
    out = jax.jit(lambda h: jxent.linear_softmax_cross_entropy(h, w, y3, **kw))(h3)
    assert out.shape == (3, 12)
    _assert_rel(out, ref, 1e-5, "batch dims")
    vm = jax.vmap(lambda h, y: jxent.linear_softmax_cross_entropy(h, w, y, **kw))(h3, y3)
    _assert_rel(vm, ref, 1e-5, "vmap")
    # vmap of the gradient (per-example weight gradients), against the naive one.
    g = jax.vmap(jax.grad(lambda w, h, y: jxent.linear_softmax_cross_entropy(h, w, y, bias=b, **CHUNKS)), (None, 0, 0))
    g_ref = jax.vmap(jax.grad(lambda w, h, y: _naive(h, w, b, y, "mean", {})), (None, 0, 0))
    _assert_rel(g(w, h3, y3), g_ref(w, h3, y3), 1e-5, "vmap(grad)")


@pytest.mark.parametrize("schedule", ["split", "one_pass"])
def test_return_lse_and_its_gradient(schedule):
    h, w, b, y, _, ct = _data()
    y = jnp.where(y < 0, 0, y)
    opts = {"soft_cap": 2.5, "z_loss": 1e-3}

    def f(h, w):
        loss, lse = jxent.linear_softmax_cross_entropy(
            h, w, y, bias=b, return_lse=True, schedule=schedule, **CHUNKS, **opts
        )
        return loss + jnp.sum(ct * lse)

    def ref(h, w):
        z = jxent.soft_cap(h @ w + b, 2.5)
        return _naive(h, w, b, y, "mean", opts) + jnp.sum(ct * jax.nn.logsumexp(z, axis=-1))

    value, grads = jax.value_and_grad(f, argnums=(0, 1))(h, w)
    ref_value, ref_grads = jax.value_and_grad(ref, argnums=(0, 1))(h, w)
    _assert_rel(value, ref_value, 1e-5, "loss + lse")
    for g, r in zip(grads, ref_grads, strict=True):
        _assert_rel(g, r, 1e-5, "grad through lse")


def test_empty_batch():
    h = jnp.zeros((0, D))
    w = jnp.ones((D, V))
    y = jnp.zeros((0,), jnp.int32)
    assert jxent.linear_softmax_cross_entropy(h, w, y) == 0.0
    assert jxent.linear_softmax_cross_entropy(h, w, y, reduction="none").shape == (0,)
    assert not np.any(np.asarray(jax.grad(lambda w: jxent.linear_softmax_cross_entropy(h, w, y))(w)))


@pytest.mark.parametrize("schedule", ["one_pass", "split", "vocab"])  # "token" is split's first loop with dW
def test_check_grads_x64(schedule):
    with jax.enable_x64(True):
        k = jax.random.split(jax.random.PRNGKey(3), 4)
        h = jax.random.normal(k[0], (7, 5), jnp.float64)
        w = jax.random.normal(k[1], (5, 11), jnp.float64)
        b = jax.random.normal(k[2], (11,), jnp.float64)
        y = jax.random.randint(k[3], (7,), 0, 11)
        for reduction in ("mean", "none"):

            def f(h, w, b, reduction=reduction):
                return jxent.linear_softmax_cross_entropy(
                    h,
                    w,
                    y,
                    bias=b,
                    soft_cap=2.0,
                    label_smoothing=0.1,
                    z_loss=0.01,
                    reduction=reduction,
                    chunk_size=4,
                    token_chunk_size=3,
                    schedule=schedule,
                )

            assert f(h, w, b).dtype == jnp.float64
            # Second order too: the backward pass is itself made of differentiable blocks (``fori_loop`` with a
            # static trip count), so ``grad`` of ``grad`` and ``jax.hessian`` work; forward mode does not.
            check_grads(jax.jit(f), (h, w, b), order=2, modes=["rev"])


@pytest.mark.parametrize("schedule", ["one_pass", "split"])
def test_hessian_matches_naive_x64(schedule):
    """``jax.hessian`` (forward over reverse) runs through the blockwise backward pass and equals the naive one."""
    with jax.enable_x64(True):
        k = jax.random.split(jax.random.PRNGKey(5), 3)
        h = jax.random.normal(k[0], (5, 3), jnp.float64)
        w = jax.random.normal(k[1], (3, 7), jnp.float64)
        y = jax.random.randint(k[2], (5,), 0, 7)

        def fused(h):
            return jxent.linear_softmax_cross_entropy(
                h, w, y, soft_cap=2.0, z_loss=0.01, chunk_size=3, token_chunk_size=2, schedule=schedule
            )

        def naive(h):
            z = 2.0 * jnp.tanh(h @ w / 2.0)
            return jnp.mean(jxent.softmax_cross_entropy_with_integer_labels(z, y, z_loss=0.01))

        np.testing.assert_allclose(jax.hessian(fused)(h), jax.hessian(naive)(h), rtol=1e-10, atol=1e-12)


def _full_matrix_copies(hlo: str, d: int, v: int) -> list[str]:
    """Instructions that copy or transpose a whole ``[D, V]``/``[V, D]`` matrix."""
    shape = rf"f32\[({d},{v}|{v},{d})\]"
    pattern = re.compile(rf"%(copy|transpose|wrapped_copy|wrapped_transpose|transpose_copy)[\w.-]* = {shape}")
    return [line.strip() for line in hlo.splitlines() if pattern.search(line)]


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_tied_embedding_transpose_works_as_a_documented_copy(reduction):
    """``E.T`` in the default layout gives the right values and gradients; XLA copies the matrix, as the docstring
    says (``weight_layout="vd"`` avoids the copy: :func:`test_weight_layout_vd_makes_no_copy`)."""
    n, d, v = 64, 32, 512
    k = jax.random.split(jax.random.PRNGKey(4), 3)
    h = jax.random.normal(k[0], (n, d))
    emb = jax.random.normal(k[1], (v, d)) / 4
    y = jax.random.randint(k[2], (n,), 0, v)
    weights = jnp.linspace(0.0, 1.0, n)

    def loss(h, emb):
        out = jxent.linear_softmax_cross_entropy(h, emb.T, y, reduction=reduction, chunk_size=128)
        return out if reduction == "mean" else jnp.sum(out * weights)

    def naive(h, emb):
        out = _naive(h, emb.T, jnp.zeros(v), y, reduction, {})
        return out if reduction == "mean" else jnp.sum(out * weights)

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    chex.assert_trees_all_close(step(h, emb), jax.value_and_grad(naive, argnums=(0, 1))(h, emb), rtol=1e-5, atol=1e-6)
    assert _full_matrix_copies(step.lower(h, emb).compile().as_text(), d, v) != []


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_weight_layout_vd_matches_dv(schedule, reduction, dtype):
    h, w, b, y, cw, ct = _data(5, dtype=dtype)
    opts, y = _options("everything", cw, y)
    emb = jnp.asarray(np.asarray(w.astype(jnp.float32)).T).astype(dtype)  # a fresh [V, D] array, not a traced .T

    def loss(h, weight, b, layout):
        out = jxent.linear_softmax_cross_entropy(
            h, weight, y, bias=b, reduction=reduction, schedule=schedule, weight_layout=layout, **CHUNKS, **opts
        )
        return out if reduction == "mean" else jnp.sum(out * ct)

    value, (dh, de, db) = jax.value_and_grad(loss, argnums=(0, 1, 2))(h, emb, b, "vd")
    ref, (rh, rw, rb) = jax.value_and_grad(loss, argnums=(0, 1, 2))(h, w, b, "dv")
    assert de.shape == emb.shape and de.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == jnp.float32 else {"rtol": 1e-2, "atol": 1e-2}
    chex.assert_trees_all_close((value, dh, de, db), (ref, rh, rw.T, rb), **tol)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_weight_layout_vd_makes_no_copy(reduction):
    n, d, v = 64, 32, 512
    k = jax.random.split(jax.random.PRNGKey(6), 3)
    h = jax.random.normal(k[0], (n, d))
    emb = jax.random.normal(k[1], (v, d)) / 4
    y = jax.random.randint(k[2], (n,), 0, v)

    def loss(h, emb):
        out = jxent.linear_softmax_cross_entropy(h, emb, y, reduction=reduction, chunk_size=128, weight_layout="vd")
        return out if reduction == "mean" else jnp.sum(out * jnp.linspace(0.0, 1.0, n))

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    assert _full_matrix_copies(step.lower(h, emb).compile().as_text(), d, v) == []
    if reduction == "mean":
        ref = jax.value_and_grad(lambda h, e: _naive(h, e.T, jnp.zeros(v), y, "mean", {}), argnums=(0, 1))(h, emb)
        chex.assert_trees_all_close(step(h, emb), ref, rtol=1e-5, atol=1e-6)


def test_weight_layout_errors():
    h, w, _, y, _, _ = _data()
    y = jnp.where(y < 0, 0, y)
    lce = jxent.linear_softmax_cross_entropy
    with pytest.raises(ValueError, match="`weight_layout` must be one of"):
        lce(h, w, y, weight_layout="VD")
    with pytest.raises(ValueError, match=r"`weight` must have shape \[V, D\].*default layout"):
        lce(h, w, y, weight_layout="vd")
    with pytest.raises(ValueError, match=r"`weight` must have shape \[D, V\].*weight_layout='vd'"):
        lce(h, w.T, y)


def test_temp_memory_is_a_fraction_of_naive():
    n, d, v = 4096, 256, 32768
    args = (
        jax.ShapeDtypeStruct((n, d), jnp.float32),
        jax.ShapeDtypeStruct((d, v), jnp.float32),
        jax.ShapeDtypeStruct((n,), jnp.int32),
    )

    def temp(f):
        return (
            jax.jit(jax.value_and_grad(f, argnums=(0, 1))).lower(*args).compile().memory_analysis().temp_size_in_bytes
        )

    naive = temp(lambda h, w, y: jxent.softmax_cross_entropy_with_integer_labels(h @ w, y, reduction="mean"))
    for schedule in SCHEDULES:
        fused_temp = temp(lambda h, w, y, s=schedule: jxent.linear_softmax_cross_entropy(h, w, y, schedule=s))
        assert fused_temp < 0.1 * naive, (schedule, fused_temp, naive)
    assert naive >= n * v * 4  # the naive loss holds at least the float32 logits


def test_one_trace_per_shape():
    h, w, _, y, _, _ = _data()
    y = jnp.where(y < 0, 0, y)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(h, w, y):
        return jxent.linear_softmax_cross_entropy(h, w, y, **CHUNKS)

    f(h, w, y)
    f(h + 1.0, w, y)


def test_argument_errors():
    h, w, _, y, _, _ = _data()
    lce = jxent.linear_softmax_cross_entropy
    with pytest.raises(ValueError, match="`weight` must have shape"):
        lce(h, w.T, y)
    with pytest.raises(ValueError, match="`labels` must have shape"):
        lce(h, w, y[:-1])
    with pytest.raises(TypeError, match="`labels` must be an integer"):
        lce(h, w, y.astype(jnp.float32))
    with pytest.raises(ValueError, match="`bias` must have shape"):
        lce(h, w, y, bias=jnp.zeros(V + 1))
    with pytest.raises(ValueError, match="`class_weight` must have shape"):
        lce(h, w, y, class_weight=jnp.ones(3))
    with pytest.raises(ValueError, match="`chunk_size` must be a positive int"):
        lce(h, w, y, chunk_size=0)
    with pytest.raises(ValueError, match="`schedule` must be one of"):
        lce(h, w, y, schedule="fast")
    with pytest.raises(ValueError, match="label_smoothing"):
        lce(h, w, y, label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction"):
        lce(h, w, y, reduction="avg")


def test_llm_shape_bf16_compiles_within_64_mib():
    """The memory goal at N=8192, D=4096, V=131072 (bfloat16), compile-only: nothing is allocated."""
    n, d, v = 8192, 4096, 131072
    args = (
        jax.ShapeDtypeStruct((n, d), jnp.bfloat16),
        jax.ShapeDtypeStruct((d, v), jnp.bfloat16),
        jax.ShapeDtypeStruct((n,), jnp.int32),
    )
    step = jax.jit(jax.value_and_grad(lambda h, w, y: jxent.linear_softmax_cross_entropy(h, w, y), argnums=(0, 1)))
    with jax.default_device(jax.devices("cpu")[0]):
        temp = step.lower(*args).compile().memory_analysis().temp_size_in_bytes
    assert temp <= 64 * 2**20, temp / 2**20


def test_benchmark_quick_smoke(capsys):
    """`python benchmarks/bench_large_vocab.py --quick` (CPU sections, in-process): prints the Markdown table."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_large_vocab.py"
    spec = importlib.util.spec_from_file_location("bench_large_vocab", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--quick", "--sections", "cpu,compile,lm_head", "--repeats", "1", "--no-gpu"])
    out = capsys.readouterr().out
    assert "| case | metric | naive | fused / parallel | ratio | goal | met |" in out
    assert "CPU f32 N=256 D=64 V=2048" in out and "compile-only CPU bf16" in out
    for name in bench.LM_HEAD:  # every LM-head function has its rows
        assert f"{name}: CPU float32 N=256" in out and f"{name}: compile-only CPU bf16 N=512" in out
    assert "n/a (quick shapes)" in out and "**no**" not in out  # goals are for the full shapes


def test_one_pass_16_bit_hidden_stores_the_scaled_gradient():
    """``"one_pass"`` stores ``dh`` in the hidden dtype: it must hold the final ``"mean"`` gradient, not the
    unscaled sum (with class weights of 5000 that overflowed float16 to inf)."""
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(8, 4)), jnp.float16)
    w = jnp.asarray(rng.normal(size=(4, 10)) * 30, jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 8))
    cw = jnp.full((10,), 5000.0)

    def fused(h):
        return jxent.linear_softmax_cross_entropy(h, w, y, class_weight=cw, schedule="one_pass")

    def reference(h):  # float32 throughout
        z = h.astype(jnp.float32) @ w
        return jxent.softmax_cross_entropy_with_integer_labels(z, y, weight=cw, reduction="mean")

    got = jax.grad(fused)(h)
    assert got.dtype == jnp.float16
    np.testing.assert_allclose(got.astype(np.float32), jax.grad(reference)(h), rtol=1e-2, atol=1e-2)


def test_64_bit_labels_out_of_range_stay_out_of_range():
    """Under x64, ``2**32 + 3`` is not class 3 after the kernels' cast to int32: NaN, like the dense loss."""
    with jax.enable_x64(True):
        h = jnp.ones((3, 3))
        w = jnp.arange(15.0).reshape(3, 5) / 10
        y = jnp.array([2**32 + 3, 3, -100], jnp.int64)
        got = jxent.linear_softmax_cross_entropy(h, w, y, ignore_index=-100, reduction="none")
        expected = jxent.softmax_cross_entropy_with_integer_labels(h @ w, y, ignore_index=-100)
        assert np.isnan(got[0]) and np.isnan(expected[0])
        np.testing.assert_allclose(got[1:], expected[1:], rtol=1e-12)


def test_one_pass_16_bit_hidden_keeps_small_gradients_under_loss_scaling():
    """float16 training multiplies the loss by a large scale: the stored unit-cotangent ``dh`` must not be rounded to
    16 bits before that scale is applied (small per-token ``"mean"`` gradients would flush to 0)."""
    rng = np.random.default_rng(1)
    n, d, v, scale = 4096, 8, 32, 2.0**16
    h = jnp.asarray(rng.normal(size=(n, d)), jnp.float16)
    w = jnp.asarray(rng.normal(size=(d, v)) * 1e-3, jnp.float32)
    y = jnp.asarray(rng.integers(0, v, n))

    def fused(h, schedule):
        return scale * jxent.linear_softmax_cross_entropy(h, w, y, schedule=schedule)

    def reference(h):
        z = h.astype(jnp.float32) @ w
        return scale * jxent.softmax_cross_entropy_with_integer_labels(z, y, reduction="mean")

    expected = np.asarray(jax.grad(reference)(h))
    got = np.asarray(jax.grad(fused)(h, "one_pass").astype(jnp.float32))
    assert np.count_nonzero(got == 0) == np.count_nonzero(expected == 0)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-6)
