# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Large vocabularies: cross-entropy without the $[N, V]$ logits
#
# The last layer of a language model maps hidden states $h \in \mathbb{R}^{N \times D}$ ($N$ tokens) through
# an output embedding $W \in \mathbb{R}^{D \times V}$ to logits $Z = hW \in \mathbb{R}^{N \times V}$, and the
# loss is the softmax cross-entropy of $Z$. With a modern vocabulary the logits are by far the largest
# tensor of the step: for $N = 8192$ tokens and $V = 128\,256$ (Llama 3) they take **4.2 GB in float32**,
# and the backward pass needs another array of the same shape, $\partial L / \partial Z$, while $h$ itself
# is only $N \times D$.
#
# A *fused* linear cross-entropy computes the loss and the gradients with respect to $h$ and $W$ without
# ever holding the full $[N, V]$ matrix. This notebook derives why that is possible, checks a fused
# computation against the naive one, and measures the memory with XLA's compiled memory analysis
# (`jax.jit(f).lower(...).compile().memory_analysis()`), which only compiles: the large shapes are never
# allocated, so it runs on a laptop CPU.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from jax import lax

import jxent

plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3})
rng = np.random.default_rng(0)
print(f"jax {jax.__version__}, jxent {jxent.__version__}, backend: {jax.default_backend()}")


# %% [markdown]
# ## 5.1 Why the logits need not exist all at once
#
# For token $i$ with label $y_i$, writing $w_j$ for column $j$ of $W$,
#
# $$\ell_i = \operatorname{lse}_j(h_i^\top w_j) - h_i^\top w_{y_i}, \qquad L = \frac1N \sum_i \ell_i .$$
#
# **Forward.** The label term is a gather ($N$ dot products). The log-sum-exp can be accumulated over
# vocabulary chunks $C_1, C_2, \dots$ with a running maximum $m_i$ and a running sum $s_i$ (the
# "online softmax"):
#
# $$m_i' = \max\big(m_i, \max_{j \in C} z_{ij}\big), \qquad
#   s_i' = s_i\, e^{m_i - m_i'} + \sum_{j \in C} e^{z_{ij} - m_i'}, \qquad
#   \operatorname{lse}_i = m_i + \log s_i ,$$
#
# which needs only one $[N, |C|]$ block of logits at a time, and keeps the max-shift of notebook 1.
#
# **Backward.** From notebook 1, $G = \partial L/\partial Z = (P - Y)/N$ with $P_{ij} = e^{z_{ij} -
# \operatorname{lse}_i}$. Every block of $P$ can be recomputed from the saved $\operatorname{lse}$ (a vector
# of length $N$), so
#
# $$\frac{\partial L}{\partial h} = G\,W^\top = \sum_{C} G_{:,C}\, W_{:,C}^\top, \qquad
#   \frac{\partial L}{\partial W_{:,C}} = h^\top G_{:,C},$$
#
# again one block at a time. The cost is recomputing $Z$ in the backward pass (one more matmul), the gain is
# memory that no longer grows with $N \times V$.
#
# The same idea works along the token axis: tokens are independent, so the loss of a chunk of $n$ tokens
# can be computed from its own $[n, V]$ logits, with `jax.checkpoint` so that the backward pass recomputes
# them instead of storing them. That version is five lines of JAX, and we use it below as an
# **illustration** (it is not jxent's implementation).


# %%
def naive_loss(h, W, labels):
    # Materialises the [N, V] logits.
    return jxent.softmax_cross_entropy_with_integer_labels(h @ W, labels, reduction="mean")


def chunked_loss_illustration(h, W, labels, chunk=256):
    # ILLUSTRATION: token-chunked loss; each [chunk, V] block is recomputed in the backward pass.
    n, d = h.shape
    blocks = (h.reshape(n // chunk, chunk, d), labels.reshape(n // chunk, chunk))

    @jax.checkpoint
    def block_loss(block):
        h_block, labels_block = block
        return jxent.softmax_cross_entropy_with_integer_labels(h_block @ W, labels_block, reduction="sum")

    return jnp.sum(lax.map(block_loss, blocks)) / n


print(jxent.linear_softmax_cross_entropy.__doc__.strip().splitlines()[0])

# %% [markdown]
# jxent's version is `jxent.linear_softmax_cross_entropy(hidden, weight, labels, *, reduction=..., ...)`
# (hidden states $[N, D]$, weight $[D, V]$, integer labels $[N]$). The cells below check and measure it next to
# the naive version and the illustration.


# %%
def fused_loss(h, W, labels):
    return jxent.linear_softmax_cross_entropy(h, W, labels, reduction="mean")


# %% [markdown]
# ## 5.2 Same loss, same gradients
#
# On a small problem, every version must agree with the naive one, in value and in both gradients.

# %%
N, D, V = 512, 32, 3000
key_h, key_w, key_y = jax.random.split(jax.random.key(0), 3)
h = jax.random.normal(key_h, (N, D), jnp.float32)
W = jax.random.normal(key_w, (D, V), jnp.float32) / np.sqrt(D)
labels = jax.random.randint(key_y, (N,), 0, V)

versions = {"naive": naive_loss, "chunked (illustration)": chunked_loss_illustration, "jxent fused": fused_loss}
results = {name: jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(h, W, labels) for name, fn in versions.items()}

ref_loss, (ref_dh, ref_dW) = results["naive"]
for name, (loss, (dh, dW)) in results.items():
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(dh, ref_dh, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(dW, ref_dW, rtol=1e-4, atol=1e-7)
    print(
        f"{name:>24}: loss {float(loss):.6f}  |dL/dh| {float(jnp.linalg.norm(dh)):.6f}  "
        f"|dL/dW| {float(jnp.linalg.norm(dW)):.6f}"
    )
# dL/dZ = (softmax(Z) - onehot) / N, so dL/dh = G W^T and dL/dW = h^T G.
G = (jxent.softmax(h @ W) - jax.nn.one_hot(labels, V)) / N
np.testing.assert_allclose(ref_dh, G @ W.T, rtol=1e-4, atol=1e-7)
np.testing.assert_allclose(ref_dW, h.T @ G, rtol=1e-4, atol=1e-7)


# %% [markdown]
# ## 5.3 Memory, measured by the compiler
#
# For each vocabulary size we compile the training computation (loss and gradients with respect to $h$ and
# $W$) for abstract inputs (`jax.ShapeDtypeStruct`), and read `temp_size_in_bytes` from the compiled
# executable's memory analysis: the scratch memory XLA allocates beyond the inputs and outputs. Nothing of
# that size is ever allocated, so $N = 4096$ tokens and $V$ up to $262\,144$ are fine on a CPU.
# The dotted line is the size of one float32 $[N, V]$ array.


# %%
def temp_bytes(loss_fn, n, d, v):
    args = (
        jax.ShapeDtypeStruct((n, d), jnp.float32),
        jax.ShapeDtypeStruct((d, v), jnp.float32),
        jax.ShapeDtypeStruct((n,), jnp.int32),
    )
    compiled = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1))).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes


N, D = 4096, 256
vocab_sizes = [8_192, 32_768, 131_072, 262_144]
memory = {name: [temp_bytes(fn, N, D, v) for v in vocab_sizes] for name, fn in versions.items()}
logits_bytes = [N * v * 4 for v in vocab_sizes]

GiB = 2**30
print(f"{'V':>8} " + " ".join(f"{name:>24}" for name in memory) + f" {'one [N, V] array':>18}")
for i, v in enumerate(vocab_sizes):
    print(
        f"{v:>8,} "
        + " ".join(f"{memory[name][i] / GiB:>20.3f} GiB" for name in memory)
        + f" {logits_bytes[i] / GiB:>14.3f} GiB"
    )

# The naive step holds at least one [N, V] array; the chunked ones stay well below it.
assert all(m >= b for m, b in zip(memory["naive"], logits_bytes, strict=True))
assert memory["chunked (illustration)"][-1] < memory["naive"][-1] / 4
assert memory["jxent fused"][-1] < memory["naive"][-1] / 4

# %%
fig, ax = plt.subplots(figsize=(8, 4.5))
styles = {"naive": ("tab:red", "o"), "chunked (illustration)": ("tab:blue", "s"), "jxent fused": ("tab:green", "^")}
for name, values in memory.items():
    color, marker = styles[name]
    ax.plot(vocab_sizes, np.array(values) / GiB, marker=marker, color=color, lw=2, label=name)
ax.plot(vocab_sizes, np.array(logits_bytes) / GiB, ls=":", color="gray", label="one float32 [N, V] array")
ax.set(
    xscale="log",
    yscale="log",
    xlabel="vocabulary size V",
    ylabel="XLA temporary memory (GiB)",
    title=f"Loss + gradients of a linear softmax cross-entropy, N = {N:,} tokens, D = {D}",
)
ax.set_xticks(vocab_sizes, [f"{v // 1024}k" for v in vocab_sizes])
ax.minorticks_off()
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The naive step needs several $[N, V]$ arrays (the logits, the softmax, the gradient), so its memory grows
# with $N \times V$. The chunked versions hold one block at a time. The token-chunked illustration works on
# $[256, V]$ blocks, $N / 256 = 16$ times smaller than the full logits, but its memory still grows with $V$.
# Chunking along both axes, $[\text{token chunk}, \text{vocabulary chunk}]$ blocks with the online
# log-sum-exp of 5.1, removes the dependence on $V$ altogether; that is what
# `jxent.linear_softmax_cross_entropy` does (when it is present, its curve is the flat one). What still grows
# with $V$ is $\partial L / \partial W$, which has the size of $W$ and is an output, not a temporary.
#
# What is not measured here is time: the fused versions recompute the logits in the backward pass, one
# extra $N \times D \times V$ matmul, which is usually a good trade when the alternative does not fit.

# %% [markdown]
# ## 5.4 The language-model head: entropy, KL and JS, and the gradients the kernels use
#
# RL fine-tuning needs each token's log-probability and entropy; distillation needs a divergence between a
# teacher's and a student's softmax. jxent computes them blockwise like the cross-entropy
# (`jxent.linear_token_statistics`, `linear_kl_divergence`, `linear_js_divergence`,
# `linear_sparse_kl_divergence`), and each backward pass applies a closed form per logit block. With
# $p = \operatorname{softmax}(z)$, $\log p_c = z_c - \operatorname{lse}(z)$ and
# $\partial \log p_j / \partial z_c = [j = c] - p_c$:
#
# **Entropy.** $H = -\sum_j p_j \log p_j$, so
# $$\frac{\partial H}{\partial z_c} = -\sum_j \frac{\partial p_j}{\partial z_c}(\log p_j + 1)
#   = -\sum_j p_j([j=c] - p_c)(\log p_j + 1) = -p_c(\log p_c + 1) + p_c(1 - H)
#   = -p_c(\log p_c + H).$$
# The forward pass never forms $\log p$ for the whole row: with the running maximum $m$ it keeps
# $s = \sum_j e^{z_j - m}$ and the *shifted moment* $\mu = \sum_j e^{z_j - m}(z_j - m)$; then
# $H = \log s - \mu / s$. Each term of $\mu$ lies in $[-1/e, 0]$, so nothing cancels even when the logits are
# $10^4$. When the maximum grows from $m$ to $M$, $\mu \to e^{m - M}(\mu + (m - M)s)$, the same online step
# as $s \to e^{m-M} s$.
#
# **KL.** For $\mathrm{KL}(p^t \| p^s) = \sum_j p^t_j(\log p^t_j - \log p^s_j)$,
# $$\frac{\partial\,\mathrm{KL}}{\partial z^s_c} = -\sum_j p^t_j([j = c] - p^s_c) = p^s_c - p^t_c, \qquad
#   \frac{\partial\,\mathrm{KL}}{\partial z^t_c} = p^t_c\,(r_c - \mathrm{KL}),\quad
#   r_c = \log p^t_c - \log p^s_c,$$
# the second because $\partial/\partial z^t_c$ of $\sum_j p^t_j r_j$ is $\sum_j p^t_j([j=c] - p^t_c)(r_j +
# 1)$. The kernel computes $\mathrm{KL}$ in a second pass over the vocabulary, once both normalisers are known,
# from the shifted logits: $r_c = (z^t_c - m^t) - (z^s_c - m^s) - \log s^t + \log s^s$.
#
# **Generalized JS.** With $m = \beta p^t + (1-\beta)p^s$ and
# $J = \beta\,\mathrm{KL}(p^t \| m) + (1 - \beta)\,\mathrm{KL}(p^s \| m) = \sum_j [\beta p^t_j \log p^t_j +
# (1-\beta)p^s_j \log p^s_j - m_j \log m_j]$, the derivative in $p^s_j$ is $(1-\beta)(\log p^s_j - \log m_j)$
# (the $+1$ terms cancel), and through the softmax
# $$\frac{\partial J}{\partial z^s_c} = (1-\beta)\,p^s_c\big(\log p^s_c - \log m_c - \mathrm{KL}(p^s \| m)\big),
#   \qquad
#   \frac{\partial J}{\partial z^t_c} = \beta\,p^t_c\big(\log p^t_c - \log m_c - \mathrm{KL}(p^t \| m)\big).$$
#
# The cell below checks each closed form against `jax.grad` of the plain formula, and against the fused
# functions themselves: with $W = I$ (so $D = V$ and the logits are $h$), the gradient of a fused function
# with respect to `hidden` *is* its gradient with respect to the logits.

# %%
with jax.enable_x64(True):
    V4, beta = 9, 0.3
    zs, zt = (jnp.asarray(rng.normal(size=(4, V4)) * 2) for _ in range(2))
    eye = jnp.eye(V4)
    ps, pt = jax.nn.softmax(zs), jax.nn.softmax(zt)
    lps, lpt = jax.nn.log_softmax(zs), jax.nn.log_softmax(zt)

    def entropy(z):
        return -jnp.sum(jax.nn.softmax(z) * jax.nn.log_softmax(z), axis=-1)

    def kl(zs, zt):
        return jnp.sum(jax.nn.softmax(zt) * (jax.nn.log_softmax(zt) - jax.nn.log_softmax(zs)), axis=-1)

    def js(zs, zt):
        ps, pt = jax.nn.softmax(zs), jax.nn.softmax(zt)
        m = beta * pt + (1 - beta) * ps
        return beta * jnp.sum(pt * jnp.log(pt / m), -1) + (1 - beta) * jnp.sum(ps * jnp.log(ps / m), -1)

    H, KL = entropy(zs), kl(zs, zt)
    log_m = jnp.log(beta * pt + (1 - beta) * ps)
    kl_tm, kl_sm = jnp.sum(pt * (lpt - log_m), -1), jnp.sum(ps * (lps - log_m), -1)
    closed = {
        "dH/dz": -ps * (lps + H[:, None]),
        "dKL/dz_s": ps - pt,
        "dKL/dz_t": pt * (lpt - lps - KL[:, None]),
        "dJS/dz_s": (1 - beta) * ps * (lps - log_m - kl_sm[:, None]),
        "dJS/dz_t": beta * pt * (lpt - log_m - kl_tm[:, None]),
    }
    autodiff = {
        "dH/dz": jax.grad(lambda z: entropy(z).sum())(zs),
        "dKL/dz_s": jax.grad(lambda z: kl(z, zt).sum())(zs),
        "dKL/dz_t": jax.grad(lambda z: kl(zs, z).sum())(zt),
        "dJS/dz_s": jax.grad(lambda z: js(z, zt).sum())(zs),
        "dJS/dz_t": jax.grad(lambda z: js(zs, z).sum())(zt),
    }
    y4 = jnp.zeros(4, jnp.int32)
    fused = {  # W = I: d/d hidden is d/d logits
        "dH/dz": jax.grad(lambda h: jxent.linear_token_statistics(h, eye, y4).entropy.sum())(zs),
        "dKL/dz_s": jax.grad(lambda h: jxent.linear_kl_divergence(h, eye, zt, eye, reduction="sum"))(zs),
        "dKL/dz_t": jax.grad(lambda h: jxent.linear_kl_divergence(zs, eye, h, eye, reduction="sum"))(zt),
        "dJS/dz_s": jax.grad(lambda h: jxent.linear_js_divergence(h, eye, zt, eye, beta=beta, reduction="sum"))(zs),
        "dJS/dz_t": jax.grad(lambda h: jxent.linear_js_divergence(zs, eye, h, eye, beta=beta, reduction="sum"))(zt),
    }
    for name in closed:
        err_autodiff = float(jnp.max(jnp.abs(closed[name] - autodiff[name])))
        err_fused = float(jnp.max(jnp.abs(closed[name] - fused[name])))
        print(f"{name:>9}: closed form vs jax.grad {err_autodiff:.1e}, vs the fused kernel {err_fused:.1e}")
        assert err_autodiff < 1e-12 and err_fused < 1e-12

# %% [markdown]
# All five agree to rounding in float64. The sparse KL against a teacher's stored top-$k$ log-probabilities
# adds one more idea: the mass outside the top-$k$ is a single *tail bin* on both sides, and the student's tail
# $q_\text{tail} = \sum_{c \notin K} q_c$ is summed over those classes directly (its own running maximum), never
# as $1 - \sum_{j} q_{i_j}$, which would lose all precision when the top-$k$ hold nearly all the mass.
