"""Speed and memory of the large-vocabulary losses against the naive ``hidden @ weight`` + dense loss.

One command prints one Markdown table::

    python benchmarks/bench_large_vocab.py            # CPU timing, compile-only memory, 8 fake devices
    python benchmarks/bench_large_vocab.py --quick    # tiny shapes, a few seconds (CI smoke test)
    python benchmarks/bench_large_vocab.py --gpu      # adds the Gemma-2-like GPU case (automatic on a GPU)

Sections:

* ``cpu``: float32 ``N=4096, D=1024, V=32768`` on the CPU: wall time of ``jit(value_and_grad)`` (median of
  ``--repeats`` runs after a warm-up, synchronised with ``block_until_ready``) and XLA's compiled temp memory
  (``memory_analysis().temp_size_in_bytes``), fused/naive.
* ``compile``: compile-only (``jax.ShapeDtypeStruct`` inputs, nothing allocated) temp memory of fused and naive at
  ``N=8192, D=4096, V=131072`` bfloat16, on the CPU backend (and on the GPU when one is present).
* ``parallel``: per-device temp memory of the vocabulary-parallel losses on 8 fake CPU devices (run in a
  subprocess that sets ``XLA_FLAGS=--xla_force_host_platform_device_count=8``) against the single-device loss.
* ``gpu``: ``N=8192, D=2304, V=256000`` bfloat16 (Gemma 2 2B-like): time and temp memory, fused/naive.
* ``lm_head``: each language-model head function (token statistics, KL, JS, top-32 sparse KL) against its naive
  version (the logits, then the dense jxent functions), gradients for the student: the ``cpu`` measurements at the
  ``cpu`` shape and the compile-only temp memory at the ``compile`` shape. ``--lm-head`` picks the functions.
* ``lm_head_gpu``: the same functions timed on the GPU at the ``gpu`` shape in bfloat16 (not in the default set;
  ``benchmarks/gpu_check.sh`` runs it).

Timings on a shared machine are noisy; the table says which device ran them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

PARALLEL_FLAG = "--xla_force_host_platform_device_count=8"

if "--_parallel-worker" in sys.argv and PARALLEL_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + PARALLEL_FLAG).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import jxent  # noqa: E402

MiB = 2**20


# ----------------------------------------------------------------------------------------------------------------
# The two losses
# ----------------------------------------------------------------------------------------------------------------


def naive_loss(h, w, y, reduction="mean"):
    """What a user writes without jxent's fused path: the full logits, then the dense loss."""
    return jxent.softmax_cross_entropy_with_integer_labels(h @ w, y, reduction=reduction)


def fused_loss(h, w, y, reduction="mean", **kw):
    return jxent.linear_softmax_cross_entropy(h, w, y, reduction=reduction, **kw)


def value_and_grad(loss):
    return jax.value_and_grad(loss, argnums=(0, 1))


# The language-model head functions, each as (naive, fused) scalar losses of the same arguments
# (h, w, teacher_h, teacher_w, labels, teacher_indices, teacher_log_probs); gradients are taken for the student
# (h, w), the teacher being frozen as in distillation.


def _stats_objective(s) -> Any:
    return -jnp.mean(s[0]) - 0.01 * jnp.mean(s[1]) + 1e-4 * jnp.mean(s[2] ** 2)  # PPO-like: log-prob, entropy, z


def _naive_stats(h, w, th, tw, y, idx, lp):
    z = h @ w
    log_p = jxent.log_softmax(z)
    picked = jnp.take_along_axis(log_p, y[:, None], axis=-1)[:, 0]
    return _stats_objective((picked, jxent.entropy(jnp.exp(log_p)), jxent.logsumexp(z, axis=-1)))


def _fused_stats(h, w, th, tw, y, idx, lp, **kw):
    return _stats_objective(jxent.linear_token_statistics(h, w, y, **kw))


def _naive_kl(h, w, th, tw, y, idx, lp):
    zt = jax.lax.stop_gradient(th @ tw)
    return jxent.kl_divergence(jxent.log_softmax(h @ w), jxent.softmax(zt), reduction="mean")


def _fused_kl(h, w, th, tw, y, idx, lp, **kw):
    return jxent.linear_kl_divergence(h, w, jax.lax.stop_gradient(th), jax.lax.stop_gradient(tw), **kw)


def _naive_js(h, w, th, tw, y, idx, lp):
    p = jxent.softmax(jax.lax.stop_gradient(th @ tw))
    return jxent.js_divergence(p, jxent.softmax(h @ w), reduction="mean")


def _fused_js(h, w, th, tw, y, idx, lp, **kw):
    return jxent.linear_js_divergence(h, w, jax.lax.stop_gradient(th), jax.lax.stop_gradient(tw), **kw)


def _naive_sparse(h, w, th, tw, y, idx, lp):
    log_q = jxent.log_softmax(h @ w)
    log_q_k = jnp.take_along_axis(log_q, idx, axis=-1)
    q_tail = 1.0 - jnp.sum(jnp.exp(log_q_k), axis=-1, keepdims=True)
    p = jnp.exp(lp)
    p_tail = 1.0 - jnp.sum(p, axis=-1, keepdims=True)
    bins_p, bins_q = jnp.concatenate([p, p_tail], -1), jnp.concatenate([jnp.exp(log_q_k), q_tail], -1)
    return jxent.kl_divergence(jnp.log(bins_q), bins_p, reduction="mean")


def _fused_sparse(h, w, th, tw, y, idx, lp, **kw):
    return jxent.linear_sparse_kl_divergence(h, w, idx, lp, **kw)


LM_HEAD = {
    "linear_token_statistics": (_naive_stats, _fused_stats),
    "linear_kl_divergence": (_naive_kl, _fused_kl),
    "linear_js_divergence": (_naive_js, _fused_js),
    "linear_sparse_kl_divergence": (_naive_sparse, _fused_sparse),
}
TOP_K = 32


def lm_head_inputs(n, d, v, dtype, device=None, abstract_only=False):
    """Student and teacher heads (the same sizes), labels and a top-k teacher."""
    if abstract_only:
        sharding = None if device is None else jax.sharding.SingleDeviceSharding(device)
        sd = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=sharding)
        return (
            sd((n, d), dtype), sd((d, v), dtype), sd((n, d), dtype), sd((d, v), dtype),
            sd((n,), jnp.int32), sd((n, TOP_K), jnp.int32), sd((n, TOP_K), jnp.float32),
        )  # fmt: skip
    h, w, y = inputs(n, d, v, dtype, device, seed=0)
    th, tw, _ = inputs(n, d, v, dtype, device, seed=1)
    teacher = jax.nn.log_softmax(jax.random.normal(jax.random.PRNGKey(2), (n, v)) * 3.0)
    lp, idx = jax.lax.top_k(teacher, TOP_K)
    if device is not None:
        idx, lp = jax.device_put(idx, device), jax.device_put(lp, device)
    return h, w, th, tw, y, idx, lp


# ----------------------------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------------------------


def temp_bytes(fn, *args) -> int:
    """XLA's compiled temp buffer size of ``jit(fn)`` for these (possibly abstract) arguments."""
    compiled = jax.jit(fn).lower(*args).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        return -1
    return int(analysis.temp_size_in_bytes)


def median_time(fn, args, repeats: int) -> float:
    """Median wall time of ``fn(*args)`` over ``repeats`` runs after one warm-up (compile) and one extra run."""
    f = jax.jit(fn)
    jax.block_until_ready(f(*args))
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def inputs(n, d, v, dtype, device=None, seed=0):
    kh, kw, ky = jax.random.split(jax.random.PRNGKey(seed), 3)
    h = jax.random.normal(kh, (n, d), jnp.float32).astype(dtype)
    w = (jax.random.normal(kw, (d, v), jnp.float32) / np.sqrt(d)).astype(dtype)
    y = jax.random.randint(ky, (n,), 0, v)
    if device is not None:
        h, w, y = (jax.device_put(a, device) for a in (h, w, y))
    return h, w, y


def abstract(n, d, v, dtype, device=None):
    sharding = None if device is None else jax.sharding.SingleDeviceSharding(device)
    return (
        jax.ShapeDtypeStruct((n, d), dtype, sharding=sharding),
        jax.ShapeDtypeStruct((d, v), dtype, sharding=sharding),
        jax.ShapeDtypeStruct((n,), jnp.int32, sharding=sharding),
    )


def fmt_mib(b: float) -> str:
    return f"{b / MiB:,.1f} MiB" if b >= 0 else "n/a"


def fmt_s(t: float) -> str:
    return f"{t * 1e3:,.1f} ms" if t < 1 else f"{t:,.2f} s"


class Table:
    def __init__(self, quick: bool = False):
        self.rows: list[tuple[str, ...]] = []
        self.quick = quick  # the goals are stated for the full shapes: at the quick ones they are not judged

    def add(self, case, metric, naive, fused, ratio, goal, met):
        if self.quick and met in ("yes", "**no**"):
            met = "n/a (quick shapes)"
        self.rows.append((case, metric, naive, fused, ratio, goal, met))

    def render(self) -> str:
        head = ("case", "metric", "naive", "fused / parallel", "ratio", "goal", "met")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


# ----------------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------------


def section_cpu(table: Table, shape, repeats: int, fused_kw: dict) -> None:
    n, d, v = shape
    cpu = jax.devices("cpu")[0]
    case = f"CPU f32 N={n} D={d} V={v}, jit(value_and_grad), mean"
    args = inputs(n, d, v, jnp.float32, cpu)
    naive = value_and_grad(naive_loss)
    fused = value_and_grad(lambda h, w, y: fused_loss(h, w, y, **fused_kw))
    with jax.default_device(cpu):
        m_naive, m_fused = temp_bytes(naive, *args), temp_bytes(fused, *args)
        t_naive = median_time(naive, args, repeats)
        t_fused = median_time(fused, args, repeats)
    table.add(
        case,
        "wall time",
        fmt_s(t_naive),
        fmt_s(t_fused),
        f"{t_fused / t_naive:.2f}",
        "<= 1.0",
        verdict(t_fused <= t_naive),
    )
    ratio = m_fused / m_naive
    table.add(case, "temp memory", fmt_mib(m_naive), fmt_mib(m_fused), f"{ratio:.2%}", "<= 5%", verdict(ratio <= 0.05))


def section_compile(table: Table, shape, fused_kw: dict, devices) -> None:
    n, d, v = shape
    for device in devices:
        kind = device.platform.upper()
        case = f"compile-only {kind} bf16 N={n} D={d} V={v}, value_and_grad, mean"
        args = abstract(n, d, v, jnp.bfloat16, device)
        with jax.default_device(device):  # the fused defaults (chunks, schedule) follow the target platform
            m_naive = temp_bytes(value_and_grad(naive_loss), *args)
            m_fused = temp_bytes(value_and_grad(lambda h, w, y: fused_loss(h, w, y, **fused_kw)), *args)
        table.add(
            case,
            "temp memory",
            fmt_mib(m_naive),
            fmt_mib(m_fused),
            f"{m_fused / m_naive:.2%}",
            "fused <= 64 MiB",
            verdict(m_fused <= 64 * MiB),
        )


def section_gpu(table: Table, shape, repeats: int, fused_kw: dict) -> None:
    n, d, v = shape
    gpu = jax.devices()[0]
    case = f"{gpu.device_kind} bf16 N={n} D={d} V={v}, jit(value_and_grad), mean"
    args = inputs(n, d, v, jnp.bfloat16, gpu)
    naive = value_and_grad(naive_loss)
    fused = value_and_grad(lambda h, w, y: fused_loss(h, w, y, **fused_kw))
    m_naive, m_fused = temp_bytes(naive, *args), temp_bytes(fused, *args)
    t_naive = median_time(naive, args, repeats)
    t_fused = median_time(fused, args, repeats)
    speedup = t_naive / t_fused
    table.add(
        case,
        "wall time",
        fmt_s(t_naive),
        fmt_s(t_fused),
        f"{speedup:.2f}x faster",
        ">= 1.3x faster",
        verdict(speedup >= 1.3),
    )
    ratio = m_fused / m_naive
    table.add(case, "temp memory", fmt_mib(m_naive), fmt_mib(m_fused), f"{ratio:.2%}", "<= 1%", verdict(ratio <= 0.01))


def section_lm_head(table: Table, device, shape, dtype, repeats: int, fused_kw: dict, names, goals: bool) -> None:
    """Each LM-head function against its naive version on ``device``: wall time and temp memory. ``goals``: judge
    the CPU goals (time <= 1.1x, memory <= 5% of naive)."""
    n, d, v = shape
    args = lm_head_inputs(n, d, v, dtype, device)
    kind = "CPU" if device.platform == "cpu" else device.device_kind
    for name in names:
        naive_fn, fused_fn = LM_HEAD[name]
        naive = value_and_grad(naive_fn)
        fused = value_and_grad(lambda *a, f=fused_fn: f(*a, **fused_kw))
        case = f"{name}: {kind} {jnp.dtype(dtype).name} N={n} D={d} V={v}, value_and_grad (student)"
        with jax.default_device(device):
            m_naive, m_fused = temp_bytes(naive, *args), temp_bytes(fused, *args)
            t_naive, t_fused = median_time(naive, args, repeats), median_time(fused, args, repeats)
        r_t, r_m = t_fused / t_naive, m_fused / m_naive
        table.add(
            case, "wall time", fmt_s(t_naive), fmt_s(t_fused), f"{r_t:.2f}", "<= 1.1" if goals else "-",
            verdict(r_t <= 1.1) if goals else "n/a",
        )  # fmt: skip
        mem = (fmt_mib(m_naive), fmt_mib(m_fused), f"{r_m:.2%}")
        table.add(case, "temp memory", *mem, "<= 5%" if goals else "-", verdict(r_m <= 0.05) if goals else "n/a")


def section_lm_head_compile(table: Table, shape, fused_kw: dict, names) -> None:
    """Compile-only temp memory of each LM-head function and its naive version on the CPU backend."""
    cpu = jax.devices("cpu")[0]
    n, d, v = shape
    abstract_args = lm_head_inputs(n, d, v, jnp.bfloat16, cpu, abstract_only=True)
    for name in names:
        naive_fn, fused_fn = LM_HEAD[name]
        naive = value_and_grad(naive_fn)
        fused = value_and_grad(lambda *a, f=fused_fn: f(*a, **fused_kw))
        with jax.default_device(cpu):
            m_naive, m_fused = temp_bytes(naive, *abstract_args), temp_bytes(fused, *abstract_args)
        case = f"{name}: compile-only CPU bf16 N={n} D={d} V={v}, value_and_grad (student)"
        ratio = f"{m_fused / m_naive:.2%}"
        table.add(
            case, "temp memory", fmt_mib(m_naive), fmt_mib(m_fused), ratio, "fused <= 64 MiB",
            verdict(m_fused <= 64 * MiB),
        )  # fmt: skip


def parallel_worker(shape, fused_kw: dict) -> list[tuple[str, ...]]:
    """Runs in a subprocess with 8 fake CPU devices; returns table rows."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    n, d, v = shape
    devices = jax.devices("cpu")
    if len(devices) < 8:
        return [("vocab-parallel", "per-device temp memory", "n/a", "n/a", "n/a", "8 devices", "n/a")]
    mesh = Mesh(np.array(devices[:8]), ("vocab",))
    rep = NamedSharding(mesh, PartitionSpec())
    vsh = NamedSharding(mesh, PartitionSpec(None, "vocab"))
    rows = []

    # The logits of a vocabulary-sharded weight stay sharded along V: [N, V/8] per device.
    h1, w1, y1 = abstract(n, d, v, jnp.float32, devices[0])
    hs = jax.ShapeDtypeStruct((n, d), jnp.float32, sharding=rep)
    ws = jax.ShapeDtypeStruct((d, v), jnp.float32, sharding=vsh)
    ys = jax.ShapeDtypeStruct((n,), jnp.int32, sharding=rep)

    def sharded(h, w, y):
        return jxent.sharded_softmax_cross_entropy(h @ w, y, mesh=mesh, vocab_axis="vocab", reduction="mean")

    naive1 = temp_bytes(value_and_grad(naive_loss), h1, w1, y1)
    m8 = temp_bytes(value_and_grad(sharded), hs, ws, ys)
    case = f"vocab-parallel logits, 8 CPU devices, f32 N={n} D={d} V={v}, value_and_grad"
    rows.append(
        (
            case,
            "temp memory per device vs naive",
            fmt_mib(naive1),
            fmt_mib(m8),
            f"{m8 / naive1:.2%}",
            "~1/8 = 12.5%",
            verdict(m8 <= naive1 / 8 * 1.25),
        )
    )

    # Fused, weight sharded along V.

    def fused_single(h, w, y):
        return jxent.linear_softmax_cross_entropy(h, w, y, **fused_kw)

    def fused_sharded(h, w, y):
        return jxent.sharded_linear_softmax_cross_entropy(h, w, y, mesh=mesh, vocab_axis="vocab", **fused_kw)

    f1 = temp_bytes(value_and_grad(fused_single), h1, w1, y1)
    f8 = temp_bytes(value_and_grad(fused_sharded), hs, ws, ys)
    case = f"fused vocab-parallel, 8 CPU devices, f32 N={n} D={d} V={v}, value_and_grad"
    rows.append(
        (case, "temp memory per device vs naive", fmt_mib(naive1), fmt_mib(f8), f"{f8 / naive1:.2%}", "-", "n/a")
    )
    rows.append((case, "temp memory per device vs fused", fmt_mib(f1), fmt_mib(f8), f"{f8 / f1:.2%}", "-", "n/a"))
    return rows


def section_parallel(table: Table, shape, fused_kw: dict) -> None:
    cmd = [sys.executable, os.path.abspath(__file__), "--_parallel-worker", json.dumps([list(shape), fused_kw])]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        table.add("vocab-parallel", "per-device temp memory", "error", "error", "-", "-", "**no**")
        sys.stderr.write(out.stderr)
        return
    for row in json.loads(out.stdout.strip().splitlines()[-1]):
        table.add(*row)


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes (seconds); for CI")
    parser.add_argument("--gpu", action="store_true", help="run the GPU case (automatic when a GPU is present)")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU case even when a GPU is present")
    parser.add_argument("--sections", default="cpu,compile,parallel,gpu,lm_head", help="comma-separated subset to run")
    parser.add_argument(
        "--lm-head", default=",".join(LM_HEAD), help="comma-separated LM-head functions for the lm_head section"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--schedule", default="auto", help="fused schedule (see linear_softmax_cross_entropy)")
    parser.add_argument("--chunk-size", type=int, default=None, help="fused vocabulary chunk")
    parser.add_argument("--token-chunk-size", type=int, default=None, help="fused token chunk")
    parser.add_argument("--_parallel-worker", dest="parallel_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.parallel_worker is not None:
        shape, fused_kw = json.loads(args.parallel_worker)
        print(json.dumps(parallel_worker(tuple(shape), fused_kw)))
        return

    fused_kw: dict[str, Any] = {"schedule": args.schedule}
    if args.chunk_size:
        fused_kw["chunk_size"] = args.chunk_size
    if args.token_chunk_size:
        fused_kw["token_chunk_size"] = args.token_chunk_size

    if args.quick:
        cpu_shape, compile_shape, par_shape, gpu_shape = (256, 64, 2048), (512, 128, 4096), (256, 64, 2048), None
        gpu_shape = (512, 128, 4096)
        repeats = min(args.repeats, 3)
    else:
        cpu_shape, compile_shape, par_shape = (4096, 1024, 32768), (8192, 4096, 131072), (4096, 1024, 32768)
        gpu_shape = (8192, 2304, 256000)
        repeats = args.repeats

    sections = set(args.sections.split(","))
    has_gpu = jax.default_backend() == "gpu"
    run_gpu = "gpu" in sections and not args.no_gpu and (args.gpu or has_gpu)

    dev = jax.devices()[0]
    print("# Large-vocabulary cross-entropy: fused / vocab-parallel vs naive `hidden @ weight` + dense loss\n")
    print(
        f"- jax {jax.__version__}, default device: {dev.device_kind} ({dev.platform}), "
        f"{len(jax.devices())} device(s); host: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores"
    )
    print(
        f"- fused options: {fused_kw}; timings: median of {repeats} runs after warm-up"
        f"{' (quick shapes)' if args.quick else ''}\n"
    )

    table = Table(quick=args.quick)
    if "cpu" in sections:
        section_cpu(table, cpu_shape, repeats, fused_kw)
    if "compile" in sections:
        devices = [jax.devices("cpu")[0]] + ([dev] if has_gpu else [])
        section_compile(table, compile_shape, fused_kw, devices)
    if "parallel" in sections:
        section_parallel(table, par_shape, fused_kw)
    lm_names = args.lm_head.split(",")
    if "lm_head" in sections:
        section_lm_head(table, jax.devices("cpu")[0], cpu_shape, jnp.float32, repeats, fused_kw, lm_names, True)
        section_lm_head_compile(table, compile_shape, fused_kw, lm_names)
    if "lm_head_gpu" in sections:
        if has_gpu:
            section_lm_head(table, dev, gpu_shape, jnp.bfloat16, repeats, fused_kw, lm_names, False)
        else:
            table.add("LM head on GPU", "-", "-", "-", "-", "-", "no GPU present")
    if run_gpu:
        if not has_gpu:
            table.add("GPU", "-", "-", "-", "-", "-", "no GPU present")
        else:
            section_gpu(table, gpu_shape, repeats, fused_kw)
    print(table.render())


if __name__ == "__main__":
    main()
