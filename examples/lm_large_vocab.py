"""Trains a small word-level transformer language model with a 32k vocabulary, its head never forming the logits.

The text is the source code of Python's standard library (it ships with every Python, so nothing is downloaded),
split into words and punctuation; the vocabulary is the ``--vocab`` most frequent tokens of the training files plus
one for the rest, and every 20th file is held out. The model is a Flax NNX decoder-only transformer (token embedding
and learned positions, 2 pre-LayerNorm blocks of causal self-attention and an MLP, ``D = 128``, 64 tokens of
context) with a ``[D, V]`` output matrix, trained with AdamW. Its loss is :func:`jxent.linear_softmax_cross_entropy`
of the final hidden states ``[B*T, D]`` and the output matrix, which never forms the ``[B*T, V]`` logits.

It first compares the whole jitted training step (forward, loss, gradients, AdamW update) with the fused head and
with the naive one (``hidden @ weight``, then :func:`jxent.softmax_cross_entropy_with_integer_labels`): the loss on
the same batch, XLA's compiled memory (temp, and peak = arguments + outputs + temp - aliased, the parameters and
optimiser state being donated) and tokens per second. Then it trains with the fused head, printing the training and
held-out loss (nats per token; the uniform baseline is ``log V``), and plots the curves to ``--plot``.

Usage::

  python examples/lm_large_vocab.py                 # V = 32768, 400 steps: 1.5-2.5 minutes on 2 CPU cores
  python examples/lm_large_vocab.py --fast          # V = 16384, 20 steps: about 20 s (tests)
  python examples/lm_large_vocab.py --plot ''       # no plot
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Config:
    vocab: int = 32768
    context: int = 64
    d_model: int = 128
    heads: int = 4
    batch: int = 16  # sequences per step: B * T tokens
    steps: int = 400
    eval_every: int = 50
    lr: float = 3e-3
    max_files: int = 1000  # of the standard library's .py files (about 670 without the tests)
    timing_steps: int = 5  # timed steps per head, after one warm-up step
    seed: int = 0


FAST = Config(vocab=16384, batch=16, steps=20, eval_every=10, max_files=150, timing_steps=2)


def parse_args(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="V = 16384, few files and steps (tests)")
    parser.add_argument("--vocab", type=int, help="vocabulary size V")
    parser.add_argument("--batch", type=int, help="sequences per step")
    parser.add_argument("--steps", type=int, help="training steps with the fused head")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--plot", default="lm_large_vocab.png", help="loss-curve image ('' for none)")
    args = parser.parse_args(argv)
    cfg = FAST if args.fast else Config()
    overrides = {"vocab": args.vocab, "batch": args.batch, "steps": args.steps, "seed": args.seed}
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None}), args


def stdlib_files(max_files: int) -> list[Path]:
    """The standard library's Python files, without its tests and installed packages."""
    root = Path(os.__file__).parent
    skip = {"site-packages", "test", "tests", "idlelib"}
    files = sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))
    return files[:max_files]


def words(files: list[Path]) -> list[str]:
    """Identifiers, numbers and single punctuation characters."""
    return re.findall(r"[A-Za-z_]\w*|\d+|[^\s\w]", "\n".join(p.read_text(errors="ignore") for p in files))


# The heavy imports come after the arguments are parsed, so that --help is instant.
def main(argv: list[str] | None = None) -> dict[str, float]:
    cfg, args = parse_args(argv)
    start = time.perf_counter()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    import jxent

    # -- data: the standard library's source as words, every 20th file held out ------------------------------------
    files = stdlib_files(cfg.max_files)
    train_words, held_out_words = words([p for i, p in enumerate(files) if i % 20]), words(files[::20])
    common = [w for w, _ in collections.Counter(train_words).most_common(cfg.vocab - 1)]
    index = {w: i + 1 for i, w in enumerate(common)}  # 0: any other token
    train = np.array([index.get(w, 0) for w in train_words], np.int32)
    held_out = np.array([index.get(w, 0) for w in held_out_words], np.int32)
    n_eval = min(64, len(held_out) // (cfg.context + 1))  # non-overlapping held-out sequences
    held_out_seqs = held_out[: n_eval * (cfg.context + 1)].reshape(n_eval, cfg.context + 1)
    tokens_per_step = cfg.batch * cfg.context
    print(
        f"{len(files)} stdlib files: {len(train):,} training tokens, {len(held_out):,} held out; V = {cfg.vocab}, "
        f"{np.mean(train == 0):.1%} of training tokens unknown; {tokens_per_step} tokens per step"
    )

    def batches(seed: int):
        r = np.random.default_rng(seed)
        while True:
            starts = r.integers(0, len(train) - cfg.context - 1, cfg.batch)
            seqs = train[starts[:, None] + np.arange(cfg.context + 1)]
            yield jnp.asarray(seqs[:, :-1]), jnp.asarray(seqs[:, 1:])

    # -- the model -------------------------------------------------------------------------------------------------
    class Block(nnx.Module):
        """Pre-LayerNorm causal self-attention and MLP, each with a residual connection."""

        def __init__(self, d: int, rngs: nnx.Rngs):
            self.norm1, self.norm2 = nnx.LayerNorm(d, rngs=rngs), nnx.LayerNorm(d, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(cfg.heads, d, decode=False, keep_rngs=False, rngs=rngs)
            self.up, self.down = nnx.Linear(d, 4 * d, rngs=rngs), nnx.Linear(4 * d, d, rngs=rngs)

        def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
            x = x + self.attn(self.norm1(x), mask=mask)
            return x + self.down(jax.nn.gelu(self.up(self.norm2(x))))

    class LanguageModel(nnx.Module):
        """Tokens ``[B, T]`` to final hidden states ``[B, T, D]``; the output matrix ``head`` is ``[D, V]``."""

        def __init__(self, rngs: nnx.Rngs):
            d, init = cfg.d_model, jax.nn.initializers.normal(0.02)
            self.embed = nnx.Embed(cfg.vocab, d, rngs=rngs)
            self.position = nnx.Param(init(rngs.params(), (cfg.context, d)))
            self.blocks = nnx.List([Block(d, rngs) for _ in range(2)])
            self.norm = nnx.LayerNorm(d, rngs=rngs)
            self.head = nnx.Param(init(rngs.params(), (d, cfg.vocab)))

        def __call__(self, tokens: jax.Array) -> jax.Array:
            x = self.embed(tokens) + self.position[...][: tokens.shape[1]]
            mask = nnx.make_causal_mask(tokens)
            for block in self.blocks:
                x = block(x, mask)
            return self.norm(x)

    def fused_head(hidden, weight, labels):
        return jxent.linear_softmax_cross_entropy(hidden, weight, labels, reduction="mean")

    def naive_head(hidden, weight, labels):  # what one writes without jxent's fused head: the [B*T, V] logits
        return jxent.softmax_cross_entropy_with_integer_labels(hidden @ weight, labels, reduction="mean")

    def loss(model, x, y, head):
        hidden = model(x).reshape(-1, cfg.d_model)
        return head(hidden, model.head[...], y.reshape(-1))

    model = LanguageModel(nnx.Rngs(cfg.seed))
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, max(1, cfg.steps // 10), cfg.steps, cfg.lr / 10)
    optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=0.01), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    print(f"model: {n_params:,} parameters, of which {cfg.d_model * cfg.vocab:,} in the output matrix")

    def train_step(head):
        """One jitted step on the split (model, optimizer) state, which is donated: returns the new state and loss."""

        def step(state, x, y):
            model, optimizer = nnx.merge(graphdef, state)
            value, grads = nnx.value_and_grad(loss)(model, x, y, head)
            optimizer.update(model, grads)
            return nnx.state((model, optimizer)), value

        return jax.jit(step, donate_argnums=0)

    @functools.partial(jax.jit, static_argnames="naive")
    def evaluate(state, x, y, naive=False):
        model, _ = nnx.merge(graphdef, state)
        return loss(model, x, y, naive_head if naive else fused_head)

    # -- fused against naive: the whole training step ----------------------------------------------------------------
    x0, y0 = next(batches(cfg.seed + 1))
    steps, mib, measured = {}, {}, {}
    for name, head in (("fused", fused_head), ("naive", naive_head)):
        t0 = time.perf_counter()
        steps[name] = train_step(head).lower(state, x0, y0).compile()
        a = steps[name].memory_analysis()  # peak: the donated state's outputs reuse (alias) its buffers
        peak = a.argument_size_in_bytes + a.output_size_in_bytes + a.temp_size_in_bytes - a.alias_size_in_bytes
        mib[name] = (a.temp_size_in_bytes / 2**20, peak / 2**20)
        print(f"  compiled the {name} training step in {time.perf_counter() - t0:.1f} s")
    # From the same state and batch: the first step's losses, then the time per step, the two heads interleaved.
    copies = {name: jax.tree.map(jnp.copy, state) for name in steps}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(1 + cfg.timing_steps):
        for name, step in steps.items():
            t0 = time.perf_counter()
            copies[name], value = step(copies[name], x0, y0)
            value = float(jax.block_until_ready(value))
            if i == 0:
                measured[name] = value  # the warm-up step gives the loss on the same state
            else:
                times[name].append(time.perf_counter() - t0)
    del copies
    speed = {name: tokens_per_step / statistics.median(t) for name, t in times.items()}
    rows = [
        ("loss on the same batch", f"{measured['fused']:.6f}", f"{measured['naive']:.6f}",
         f"difference {abs(measured['fused'] - measured['naive']):.1e}"),
        ("compiled temp memory", f"{mib['fused'][0]:.1f} MiB", f"{mib['naive'][0]:.1f} MiB",
         f"{mib['fused'][0] / mib['naive'][0]:.2f}"),
        ("compiled peak memory", f"{mib['fused'][1]:.1f} MiB", f"{mib['naive'][1]:.1f} MiB",
         f"{mib['fused'][1] / mib['naive'][1]:.2f}"),
        (f"tokens / s (median of {cfg.timing_steps} steps)", f"{speed['fused']:,.0f}", f"{speed['naive']:,.0f}",
         f"{speed['fused'] / speed['naive']:.2f}"),
    ]  # fmt: skip
    print(f"\nthe training step (B*T = {tokens_per_step}, D = {cfg.d_model}, V = {cfg.vocab}) with each head:\n")
    print("| | fused | naive | fused / naive |\n|---|---|---|---|")
    print("\n".join("| " + " | ".join(row) + " |" for row in rows))

    # -- training with the fused head --------------------------------------------------------------------------------
    step = steps.pop("fused")
    del steps  # the naive step's executable
    eval_x, eval_y = jnp.asarray(held_out_seqs[:, :-1]), jnp.asarray(held_out_seqs[:, 1:])
    uniform = math.log(cfg.vocab)
    print(f"\ntraining with the fused head for {cfg.steps} steps (uniform baseline log V = {uniform:.3f})")
    curve, eval_steps, eval_curve = [], [0], [float(evaluate(state, eval_x, eval_y))]
    data, t0 = batches(cfg.seed + 2), time.perf_counter()
    print(f"  step {0:4d}: held-out {eval_curve[-1]:.3f}")
    for i in range(1, cfg.steps + 1):
        state, value = step(state, *next(data))
        curve.append(float(value))
        if i % cfg.eval_every == 0 or i == cfg.steps:
            eval_steps.append(i)
            eval_curve.append(float(evaluate(state, eval_x, eval_y)))
            recent = statistics.mean(curve[-cfg.eval_every :])
            print(
                f"  step {i:4d}: training {recent:.3f} (mean of the last {min(i, cfg.eval_every)}), "
                f"held-out {eval_curve[-1]:.3f}, {time.perf_counter() - t0:.0f} s"
            )

    naive_held_out = float(evaluate(state, eval_x, eval_y, naive=True))
    difference = abs(naive_held_out - eval_curve[-1])
    print(
        f"  held-out loss of the trained model with the naive head: {naive_held_out:.6f} (difference {difference:.1e})"
    )

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(range(1, len(curve) + 1), curve, lw=0.8, alpha=0.6, label="training batch")
        ax.plot(eval_steps, eval_curve, "o-", label="held-out")
        ax.axhline(uniform, color="grey", ls="--", lw=0.8, label=f"uniform, log V = {uniform:.2f}")
        ax.set(xlabel="step", ylabel="cross-entropy (nats/token)", title=f"fused head, V = {cfg.vocab}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        plt.close(fig)
        print(f"  loss curves written to {args.plot}")

    results = {
        "vocab": float(cfg.vocab),
        "uniform": uniform,
        "loss_fused": measured["fused"],
        "loss_naive": measured["naive"],
        "temp_mib_fused": mib["fused"][0],
        "temp_mib_naive": mib["naive"][0],
        "peak_mib_fused": mib["fused"][1],
        "peak_mib_naive": mib["naive"][1],
        "tokens_per_s_fused": speed["fused"],
        "tokens_per_s_naive": speed["naive"],
        "train_loss": statistics.mean(curve[-cfg.eval_every :]),
        "held_out_initial": eval_curve[0],
        "held_out": eval_curve[-1],
        "held_out_naive": naive_held_out,
        "wall_s": time.perf_counter() - start,
    }
    print(
        f"\nheld-out loss {results['held_out']:.3f} nats/token against log V = {uniform:.3f}; "
        f"{results['wall_s']:.0f} s in all"
    )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
