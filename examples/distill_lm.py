"""Distils a small word-level language model into a smaller one with jxent's fused KL, never forming the logits.

The text is the source code of Python's standard library (it ships with every Python, so nothing is downloaded),
split into words and punctuation; the vocabulary is the ``--vocab`` most frequent tokens plus one for the rest.
Both models are Flax NNX next-token MLPs over the previous ``--context`` tokens with a ``[D, V]`` output matrix:

1. a **teacher** (``D = 256``) is trained with :func:`jxent.linear_softmax_cross_entropy`;
2. a **student** (``D = 64``) is trained twice from the same initialisation: on the labels alone, and distilled,
   with ``alpha * T^2 KL(teacher_T || student_T) + (1 - alpha) CE`` where the KL is
   :func:`jxent.linear_kl_divergence` on the frozen teacher's hidden states and output matrix (``stop_gradient``)
   at temperature ``T``.

It prints the held-out cross-entropy (nats per token) of the three models, the compiled temp memory of the
distillation loss at ``--memory-tokens`` tokens with the fused functions against the naive ones (``hidden @ weight``
for both models, then the dense :func:`jxent.kl_divergence` and cross-entropy), and how far the two are apart on a
batch.

Usage::

  python examples/distill_lm.py            # V = 16384, about two minutes on 2 CPU cores
  python examples/distill_lm.py --fast     # small and short, for tests
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import sys
import time
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Config:
    vocab: int = 16384
    context: int = 4
    batch: int = 512
    teacher_steps: int = 600
    student_steps: int = 600
    temperature: float = 2.0
    alpha: float = 0.7
    max_files: int = 400
    memory_tokens: int = 8192  # the tokens of the distillation step whose compiled memory is reported
    seed: int = 0


FAST = Config(vocab=4096, batch=256, teacher_steps=60, student_steps=60, max_files=40, memory_tokens=4096)


def parse_args(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="small vocabulary, few steps (tests)")
    parser.add_argument("--vocab", type=int, help="vocabulary size V")
    parser.add_argument("--teacher-steps", type=int)
    parser.add_argument("--student-steps", type=int)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    cfg = FAST if args.fast else Config()
    overrides = {
        "vocab": args.vocab,
        "teacher_steps": args.teacher_steps,
        "student_steps": args.student_steps,
        "seed": args.seed,
    }
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None}), args


# The heavy imports come after the arguments are parsed, so that --help is instant.
def main(argv: list[str] | None = None) -> dict[str, float]:
    cfg, _ = parse_args(argv)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    import jxent

    # -- data: the standard library's source as words ------------------------------------------------------------
    root = Path(os.__file__).parent
    files = sorted(p for p in root.glob("*.py"))[: cfg.max_files]
    words = re.findall(r"[A-Za-z_]\w*|\d+|[^\s\w]", "\n".join(p.read_text(errors="ignore") for p in files))
    common = [w for w, _ in collections.Counter(words).most_common(cfg.vocab - 1)]
    index = {w: i + 1 for i, w in enumerate(common)}  # 0: any other token
    tokens = np.array([index.get(w, 0) for w in words], np.int32)
    windows = np.lib.stride_tricks.sliding_window_view(tokens, cfg.context + 1)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(windows))
    held_out = windows[order[:4096]]
    train = windows[order[4096:]]
    print(f"{len(files)} stdlib files, {len(tokens):,} tokens, V = {cfg.vocab}, {len(train):,} training windows")

    # -- models --------------------------------------------------------------------------------------------------
    class NextToken(nnx.Module):
        """Embeds the previous tokens, an MLP to ``[B, D]`` hidden states, and a ``[D, V]`` output matrix."""

        def __init__(self, width: int, embed: int, rngs: nnx.Rngs):
            self.embed = nnx.Embed(cfg.vocab, embed, rngs=rngs)
            self.mlp = nnx.Linear(cfg.context * embed, width, rngs=rngs)
            self.out = nnx.Linear(width, width, rngs=rngs)
            init = jax.nn.initializers.normal(1.0 / np.sqrt(width))
            self.head = nnx.Param(init(rngs.params(), (width, cfg.vocab)))

        def __call__(self, context: jax.Array) -> jax.Array:
            x = self.embed(context).reshape(context.shape[0], -1)
            x = jax.nn.gelu(self.mlp(x))
            return x + jax.nn.gelu(self.out(x))

    def batches(seed: int):
        r = np.random.default_rng(seed)
        while True:
            w = train[r.integers(0, len(train), cfg.batch)]
            yield jnp.asarray(w[:, :-1]), jnp.asarray(w[:, -1])

    def held_out_ce(model: NextToken) -> float:
        ctx, y = jnp.asarray(held_out[:, :-1]), jnp.asarray(held_out[:, -1])
        return float(jxent.linear_softmax_cross_entropy(model(ctx), model.head[...], y))

    def fit(model: NextToken, loss_fn, steps: int, seed: int, what: str) -> list[float]:
        optimizer = nnx.Optimizer(model, optax.adamw(3e-3, weight_decay=1e-4), wrt=nnx.Param)

        @nnx.jit
        def step(model, optimizer, ctx, y):
            loss, grads = nnx.value_and_grad(loss_fn)(model, ctx, y)
            optimizer.update(model, grads)
            return loss

        curve, data, t0 = [], batches(seed), time.perf_counter()
        for _ in range(steps):
            curve.append(float(step(model, optimizer, *next(data))))
        print(f"  {what}: {steps} steps in {time.perf_counter() - t0:.1f} s, last training loss {curve[-1]:.3f}")
        return curve

    def ce_loss(model, ctx, y):
        return jxent.linear_softmax_cross_entropy(model(ctx), model.head[...], y)

    print("training the teacher (D = 256) with the fused cross-entropy")
    teacher = NextToken(256, 64, nnx.Rngs(cfg.seed))
    fit(teacher, ce_loss, cfg.teacher_steps, cfg.seed + 1, "teacher")

    def distill_loss(model, ctx, y, fused=True):
        h = model(ctx)
        th = jax.lax.stop_gradient(teacher(ctx))
        tw = jax.lax.stop_gradient(teacher.head[...])
        t = cfg.temperature
        if fused:
            kl = jxent.linear_kl_divergence(h, model.head[...], th, tw, temperature=t)
            ce = jxent.linear_softmax_cross_entropy(h, model.head[...], y)
        else:  # what one writes without jxent's fused head: both sets of logits, then the dense losses
            logits, t_logits = h @ model.head[...], th @ tw
            kl = jxent.kl_divergence(jax.nn.log_softmax(logits / t), jax.nn.softmax(t_logits / t), reduction="mean")
            ce = jxent.softmax_cross_entropy_with_integer_labels(logits, y, reduction="mean")
        return cfg.alpha * t**2 * kl + (1.0 - cfg.alpha) * ce

    print("training the student (D = 64) on the labels, and distilled from the teacher")
    plain = NextToken(64, 32, nnx.Rngs(cfg.seed + 2))
    distilled = NextToken(64, 32, nnx.Rngs(cfg.seed + 2))  # the same initialisation
    fit(plain, ce_loss, cfg.student_steps, cfg.seed + 3, "student, labels only")
    fit(distilled, distill_loss, cfg.student_steps, cfg.seed + 3, "student, distilled")

    # -- memory and agreement of the distillation loss: fused against naive ------------------------------------------
    def head_loss(fused):
        """The distillation loss of the student's head, given both models' hidden states and labels."""

        def f(h, w, th, tw, y):
            t = cfg.temperature
            if fused:
                kl = jxent.linear_kl_divergence(h, w, th, tw, temperature=t)
                ce = jxent.linear_softmax_cross_entropy(h, w, y)
            else:  # what one writes without jxent's fused head: both sets of logits, then the dense losses
                logits, t_logits = h @ w, th @ tw
                log_q = jax.nn.log_softmax(logits / t)
                kl = jxent.kl_divergence(log_q, jax.nn.softmax(t_logits / t), reduction="mean")
                ce = jxent.softmax_cross_entropy_with_integer_labels(logits, y, reduction="mean")
            return cfg.alpha * t**2 * kl + (1.0 - cfg.alpha) * ce

        return jax.value_and_grad(f, argnums=(0, 1))  # the teacher is frozen

    n = cfg.memory_tokens
    shapes = [((n, 64), jnp.float32), ((64, cfg.vocab), jnp.float32), ((n, 256), jnp.float32)]
    shapes += [((256, cfg.vocab), jnp.float32), ((n,), jnp.int32)]
    abstract = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in shapes]
    temp = {}
    for name, fused in (("fused", True), ("naive", False)):
        analysis = jax.jit(head_loss(fused)).lower(*abstract).compile().memory_analysis()
        temp[name] = analysis.temp_size_in_bytes / 2**20 if analysis is not None else float("nan")
    ctx, y = next(batches(cfg.seed + 4))
    args = (distilled(ctx), distilled.head[...], teacher(ctx), teacher.head[...], y)
    fused_value = float(head_loss(True)(*args)[0])
    naive_value = float(head_loss(False)(*args)[0])

    results = {
        "teacher": held_out_ce(teacher),
        "student_labels_only": held_out_ce(plain),
        "student_distilled": held_out_ce(distilled),
        "temp_mib_fused": temp["fused"],
        "temp_mib_naive": temp["naive"],
        "loss_fused": fused_value,
        "loss_naive": naive_value,
    }
    print("\n| model | held-out cross-entropy (nats/token) |\n|---|---|")
    print(f"| teacher, D = 256 | {results['teacher']:.3f} |")
    print(f"| student, D = 64, labels only | {results['student_labels_only']:.3f} |")
    print(f"| student, D = 64, distilled (fused KL, T = {cfg.temperature}) | {results['student_distilled']:.3f} |")
    print(f"\ndistillation loss of the head (value and gradient, V = {cfg.vocab}):")
    print(f"  compiled temp memory at {n} tokens: fused {temp['fused']:.1f} MiB, naive {temp['naive']:.1f} MiB")
    print(f"  loss: fused {fused_value:.6f}, naive {naive_value:.6f} (difference {abs(fused_value - naive_value):.1e})")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
