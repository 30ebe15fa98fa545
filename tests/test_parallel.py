"""Vocabulary-parallel cross-entropy on 8 fake CPU devices, against the single-device losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jxent

N, D, V = 16, 8, 48  # V = 8 * 6 = 4 * 12


def _mesh(shape, names):
    devices = jax.devices()
    if len(devices) < 8:
        pytest.skip("needs 8 devices (tests/conftest.py sets XLA_FLAGS for 8 fake CPU devices)")
    return Mesh(np.array(devices[:8]).reshape(shape), names)


@pytest.fixture(scope="module")
def mesh_v8():
    return _mesh((8,), ("vocab",))


@pytest.fixture(scope="module")
def mesh_2x4():
    return _mesh((2, 4), ("data", "vocab"))


def _data(seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 6)
    h = jax.random.normal(k[0], (N, D))
    w = jax.random.normal(k[1], (D, V)) / np.sqrt(D) * 2.0
    b = jax.random.normal(k[2], (V,)) * 0.5
    y = jax.random.randint(k[3], (N,), 0, V).at[::5].set(-100)
    cw = jax.random.uniform(k[4], (V,), minval=0.5, maxval=2.0)
    ct = jax.random.normal(k[5], (N,))
    return h, w, b, y, cw, ct


OPTS = {"label_smoothing": 0.1, "z_loss": 1e-2, "soft_cap": 3.0, "ignore_index": -100}


def _dense(logits, y, cw, reduction):
    return jxent.softmax_cross_entropy_with_integer_labels(logits, y, weight=cw, reduction=reduction, **OPTS)


def _vjp(f, args, reduction, ct):
    value, pullback = jax.vjp(f, *args)
    return value, pullback(ct if reduction == "none" else jnp.float32(1.3))


def _close(a, b, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("mesh_name", ["mesh_v8", "mesh_2x4"])
def test_sharded_logits_match_dense(reduction, mesh_name, request):
    mesh = request.getfixturevalue(mesh_name)
    batch_axis = "data" if "data" in mesh.axis_names else None
    h, w, b, y, cw, ct = _data()
    logits = h @ w + b

    def par(x):
        return jxent.sharded_softmax_cross_entropy(
            x, y, mesh=mesh, vocab_axis="vocab", batch_axis=batch_axis, class_weight=cw, reduction=reduction, **OPTS
        )

    value, (grad,) = _vjp(jax.jit(par), (logits,), reduction, ct)
    ref_value, (ref_grad,) = _vjp(lambda x: _dense(x, y, cw, reduction), (logits,), reduction, ct)
    _close(value, ref_value)
    _close(grad, ref_grad)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("mesh_name", ["mesh_v8", "mesh_2x4"])
def test_sharded_fused_matches_single_device(reduction, mesh_name, request):
    mesh = request.getfixturevalue(mesh_name)
    batch_axis = "data" if "data" in mesh.axis_names else None
    h, w, b, y, cw, ct = _data(1)
    # The first class of every shard but the first (V/R = 6 or 12): with overlapping last blocks, the overlap once
    # counted such a label's logit twice, on the device before its owner.
    y = y.at[jnp.array([1, 2, 3, 4, 6, 7, 8])].set(jnp.arange(6, V, 6))
    chunks = {"chunk_size": 4, "token_chunk_size": 3}  # V/R = 6 or 12 and N/2 = 8: chunks overlap at the ends

    def par(h, w, b):
        return jxent.sharded_linear_softmax_cross_entropy(
            h, w, y, mesh=mesh, vocab_axis="vocab", batch_axis=batch_axis, bias=b, class_weight=cw,
            reduction=reduction, **chunks, **OPTS,
        )  # fmt: skip

    def single(h, w, b):
        return jxent.linear_softmax_cross_entropy(h, w, y, bias=b, class_weight=cw, reduction=reduction, **OPTS)

    value, grads = _vjp(jax.jit(par), (h, w, b), reduction, ct)
    ref_value, ref_grads = _vjp(single, (h, w, b), reduction, ct)
    naive_value, naive_grads = _vjp(lambda h, w, b: _dense(h @ w + b, y, cw, reduction), (h, w, b), reduction, ct)
    _close(value, ref_value)
    _close(value, naive_value)
    for g, r, n in zip(grads, ref_grads, naive_grads, strict=True):
        _close(g, r)
        _close(g, n)


def test_sharded_fused_weight_layout_vd(mesh_2x4):
    h, w, b, y, cw, ct = _data(2)
    emb = jnp.asarray(np.asarray(w).T)

    def par(h, e):
        return jxent.sharded_linear_softmax_cross_entropy(
            h, e, y, mesh=mesh_2x4, vocab_axis="vocab", batch_axis="data", bias=b, class_weight=cw,
            reduction="none", chunk_size=4, token_chunk_size=3, weight_layout="vd", **OPTS,
        )  # fmt: skip

    def single(h, w):
        return jxent.linear_softmax_cross_entropy(h, w, y, bias=b, class_weight=cw, reduction="none", **OPTS)

    value, (dh, de) = _vjp(jax.jit(par), (h, emb), "none", ct)
    ref_value, (rh, rw) = _vjp(single, (h, w), "none", ct)
    _close(value, ref_value)
    _close(dh, rh)
    _close(de, rw.T)
    with pytest.raises(ValueError, match="vocabulary size V"):
        jxent.sharded_linear_softmax_cross_entropy(
            h, emb[:45], y, mesh=mesh_2x4, vocab_axis="vocab", weight_layout="vd"
        )


def test_sharded_inputs_under_jit_keep_their_sharding(mesh_2x4):
    h, w, _, y, _, _ = _data(2)
    y = jnp.where(y < 0, 0, y)
    hs = jax.device_put(h, NamedSharding(mesh_2x4, PartitionSpec("data", None)))
    ws = jax.device_put(w, NamedSharding(mesh_2x4, PartitionSpec(None, "vocab")))
    ys = jax.device_put(y, NamedSharding(mesh_2x4, PartitionSpec("data")))

    @jax.jit
    def step(h, w, y):
        return jax.value_and_grad(
            lambda w: jxent.sharded_linear_softmax_cross_entropy(
                h, w, y, mesh=mesh_2x4, vocab_axis="vocab", batch_axis="data"
            )
        )(w)

    value, grad = step(hs, ws, ys)
    ref_value, ref_grad = jax.value_and_grad(lambda w: jxent.linear_softmax_cross_entropy(h, w, y))(w)
    _close(value, ref_value)
    _close(grad, ref_grad)
    assert grad.sharding.is_equivalent_to(ws.sharding, 2)


def test_inside_user_shard_map(mesh_v8):
    """The building block: called inside the user's own shard_map with local slices and the axis name."""
    h, w, b, y, cw, ct = _data(3)
    logits = h @ w + b
    spec = PartitionSpec(None, "vocab")

    def local(x, c):
        return jxent.vocab_parallel_softmax_cross_entropy(x, y, axis_name="vocab", class_weight=c, **OPTS)

    fn = jax.jit(jax.shard_map(local, mesh=mesh_v8, in_specs=(spec, PartitionSpec("vocab")), out_specs=PartitionSpec()))
    value, pullback = jax.vjp(lambda x: fn(x, cw), logits)
    ref_value, ref_pullback = jax.vjp(lambda x: _dense(x, y, cw, "none"), logits)
    _close(value, ref_value)
    _close(pullback(ct)[0], ref_pullback(ct)[0])

    def local_fused(h, w):
        return jxent.vocab_parallel_linear_softmax_cross_entropy(h, w, y, axis_name="vocab", reduction="sum", **OPTS)

    fn = jax.jit(jax.shard_map(local_fused, mesh=mesh_v8, in_specs=(PartitionSpec(), spec), out_specs=PartitionSpec()))
    value, grads = jax.value_and_grad(fn, argnums=(0, 1))(h, w)
    ref_value, ref_grads = jax.value_and_grad(lambda h, w: _dense(h @ w, y, None, "sum"), argnums=(0, 1))(h, w)
    _close(value, ref_value, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads, strict=True):
        _close(g, r)


def test_return_lse_matches_global_logsumexp(mesh_v8):
    h, w, _, y, _, _ = _data(4)
    logits = h @ w
    spec = PartitionSpec(None, "vocab")

    def local(x):
        return jxent.vocab_parallel_softmax_cross_entropy(x, jnp.where(y < 0, 0, y), axis_name="vocab", return_lse=True)

    _, lse = jax.jit(jax.shard_map(local, mesh=mesh_v8, in_specs=spec, out_specs=PartitionSpec()))(logits)
    _close(lse, jax.nn.logsumexp(logits, axis=-1))


def test_non_dividing_vocabulary_raises(mesh_v8):
    h, w, _, y, _, _ = _data()
    y = jnp.where(y < 0, 0, y) % 44
    with pytest.raises(ValueError, match=r"vocabulary size V \(44\) must be divisible by the number of devices"):
        jxent.sharded_softmax_cross_entropy((h @ w)[:, :44], y, mesh=mesh_v8, vocab_axis="vocab")
    with pytest.raises(ValueError, match=r"vocabulary size V \(44\) must be divisible"):
        jxent.sharded_linear_softmax_cross_entropy(h, w[:, :44], y, mesh=mesh_v8, vocab_axis="vocab")
    with pytest.raises(ValueError, match="not an axis of the mesh"):
        jxent.sharded_softmax_cross_entropy(h @ w, y, mesh=mesh_v8, vocab_axis="model")


def test_unbound_axis_name_raises():
    with pytest.raises(ValueError, match="not a mesh axis bound here"):
        jxent.vocab_parallel_softmax_cross_entropy(jnp.zeros((2, 4)), jnp.zeros((2,), jnp.int32), axis_name="vocab")


def test_per_device_memory_is_a_slice(mesh_v8):
    n, v = 256, 4096
    rep = NamedSharding(mesh_v8, PartitionSpec())
    x1 = jax.ShapeDtypeStruct((n, v), jnp.float32)
    y1 = jax.ShapeDtypeStruct((n,), jnp.int32)
    xs = jax.ShapeDtypeStruct((n, v), jnp.float32, sharding=NamedSharding(mesh_v8, PartitionSpec(None, "vocab")))
    ys = jax.ShapeDtypeStruct((n,), jnp.int32, sharding=rep)

    def temp(f, *args):
        return jax.jit(jax.grad(f)).lower(*args).compile().memory_analysis().temp_size_in_bytes

    single = temp(lambda x, y: jxent.softmax_cross_entropy_with_integer_labels(x, y, reduction="mean"), x1, y1)
    sharded = temp(
        lambda x, y: jxent.sharded_softmax_cross_entropy(x, y, mesh=mesh_v8, vocab_axis="vocab"),
        xs,
        ys,
    )
    assert sharded <= single / 8 * 1.25 + 64 * 1024, (sharded, single)


def test_fused_with_data_sharded_inputs(mesh_v8):
    """The single-device fused loss on inputs sharded along the tokens (plain jit, XLA partitions it)."""
    h, w, b, y, _, ct = _data(5)
    y = jnp.where(y < 0, 0, y)
    data = NamedSharding(mesh_v8, PartitionSpec("vocab"))  # any 8-way axis: used here for the tokens
    hs = jax.device_put(h, NamedSharding(mesh_v8, PartitionSpec("vocab", None)))
    ys = jax.device_put(y, data)

    def f(h, w, y):
        return jxent.linear_softmax_cross_entropy(
            h, w, y, bias=b, reduction="none", chunk_size=16, token_chunk_size=4, **OPTS
        )

    value, pullback = jax.vjp(jax.jit(f), hs, w, ys)
    ref_value, ref_pullback = jax.vjp(lambda h, w: _dense(h @ w + b, y, None, "none"), h, w)
    _close(value, ref_value)
    for g, r in zip(pullback(ct)[:2], ref_pullback(ct), strict=True):
        _close(g, r)


def test_second_order_matches_dense(mesh_v8):
    """grad of grad across vocabulary shards (``pmax`` has no derivative rule; its input is a constant shift)."""
    h, w, _, y, _, _ = _data(4)

    def sharded(h, w):
        logits = jxent.sharded_softmax_cross_entropy(h @ w, y, mesh=mesh_v8, vocab_axis="vocab", **OPTS)
        fused = jxent.sharded_linear_softmax_cross_entropy(h, w, y, mesh=mesh_v8, vocab_axis="vocab", **OPTS)
        return logits + fused

    def dense(h, w):
        return 2.0 * _dense(h @ w, y, None, "mean")

    def second(f):
        return jax.jit(jax.grad(lambda h, w: sum(jnp.sum(g**2) for g in jax.grad(f, (0, 1))(h, w)), (0, 1)))(h, w)

    for g, r in zip(second(sharded), second(dense), strict=True):
        _close(g, r, rtol=1e-4, atol=1e-6)


def test_single_token_with_batch_axis(mesh_2x4):
    """A 0-d batch cannot be split over ``batch_axis``: it is replicated, and not summed once per data shard."""
    h, w, _, y, _, _ = _data(5)
    h0, y0 = h[0], jnp.abs(y[1])
    expected = jxent.softmax_cross_entropy_with_integer_labels(h0 @ w, y0)
    kwargs = {"mesh": mesh_2x4, "vocab_axis": "vocab", "batch_axis": "data", "reduction": "sum"}
    got = jax.jit(
        lambda h, w: (
            jxent.sharded_softmax_cross_entropy(h @ w, y0, **kwargs),
            jxent.sharded_linear_softmax_cross_entropy(h, w, y0, **kwargs),
        )
    )(h0, w)
    _close(got[0], expected)
    _close(got[1], expected)


def test_explicit_axes_mesh_from_make_mesh():
    """``jax.make_mesh`` gives ``Explicit`` axes by default, where shard_map requires inputs already sharded as its
    ``in_specs``: the wrappers reshard unsharded inputs (and the class weights they build) first."""
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (tests/conftest.py sets XLA_FLAGS for 8 fake CPU devices)")
    mesh = jax.make_mesh((2, 4), ("data", "vocab"), axis_types=(jax.sharding.AxisType.Explicit,) * 2)
    h, w, b, y, cw, _ = _data(6)
    kwargs = {"mesh": mesh, "vocab_axis": "vocab", "batch_axis": "data", "class_weight": cw, **OPTS}

    def sharded(h, w):
        logits = jxent.sharded_softmax_cross_entropy(h @ w, y, **kwargs)
        return logits + jxent.sharded_linear_softmax_cross_entropy(h, w, y, bias=b, **kwargs)

    def dense(h, w):
        return _dense(h @ w, y, cw, "mean") + _dense(h @ w + b, y, cw, "mean")

    value, grads = jax.jit(jax.value_and_grad(sharded, (0, 1)))(h, w)
    ref_value, ref_grads = jax.value_and_grad(dense, (0, 1))(h, w)
    _close(value, ref_value)
    for g, r in zip(grads, ref_grads, strict=True):
        _close(g, r)
