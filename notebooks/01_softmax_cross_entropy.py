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
# # 1. Softmax and cross-entropy
#
# This notebook derives, by hand, the derivatives that every softmax cross-entropy implementation relies on,
# and checks each derivation against JAX's automatic differentiation of the `jxent` functions:
#
# 1. the Jacobian of the softmax, $\operatorname{diag}(p) - p p^\top$;
# 2. the gradient of the cross-entropy with respect to the logits, $\operatorname{softmax}(z) - y$;
# 3. the Hessian of log-sum-exp (and of the cross-entropy), again $\operatorname{diag}(p) - p p^\top$;
# 4. why log-sum-exp is computed with a max-shift, shown with a float32 overflow;
# 5. worked examples: cat/dog/horse, four students and two models, and a fruit container, in nats,
#    base-10 units and bits.
#
# Every check is an `assert` (or `np.testing.assert_*`), so the notebook fails if a derivation and the
# library disagree. It is executed in CI by `tests/test_notebooks.py`.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jxent

jax.config.update("jax_enable_x64", True)  # float64 keeps the gradient checks tight
plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3})
rng = np.random.default_rng(0)
print(f"jax {jax.__version__}, jxent {jxent.__version__}, backend: {jax.default_backend()}")

# %% [markdown]
# ## 1.1 The softmax and its Jacobian
#
# For logits $z \in \mathbb{R}^K$ the softmax is
#
# $$p_i = \operatorname{softmax}(z)_i = \frac{e^{z_i}}{\sum_{k} e^{z_k}} = \frac{e^{z_i}}{S}.$$
#
# By the quotient rule, with $\partial S / \partial z_j = e^{z_j}$,
#
# $$\frac{\partial p_i}{\partial z_j}
#   = \frac{\delta_{ij} e^{z_i} S - e^{z_i} e^{z_j}}{S^2}
#   = p_i \delta_{ij} - p_i p_j,
#   \qquad\text{i.e.}\qquad
#   J = \frac{\partial p}{\partial z} = \operatorname{diag}(p) - p p^\top .$$
#
# Three consequences we can check too:
#
# * $J$ is **symmetric**;
# * $J\mathbf{1} = p - p \sum_j p_j = 0$: adding the same constant to every logit leaves $p$ unchanged
#   (shift invariance), so $\mathbf{1}$ is in the null space;
# * $J$ is **positive semi-definite**: $v^\top J v = \sum_i p_i v_i^2 - (\sum_i p_i v_i)^2$ is the variance
#   of $v$ under $p$, which is $\ge 0$.

# %%
z = rng.normal(size=5) * 2.0
p = jxent.softmax(z)

J_by_hand = jnp.diag(p) - jnp.outer(p, p)
J_forward = jax.jit(jax.jacfwd(jxent.softmax))(z)  # forward-mode autodiff
J_reverse = jax.jit(jax.jacrev(jxent.softmax))(z)  # reverse-mode autodiff

np.testing.assert_allclose(J_forward, J_by_hand, rtol=1e-12, atol=1e-15)
np.testing.assert_allclose(J_reverse, J_by_hand, rtol=1e-12, atol=1e-15)
np.testing.assert_allclose(J_by_hand, J_by_hand.T)  # symmetric
np.testing.assert_allclose(J_by_hand @ np.ones(5), 0.0, atol=1e-15)  # shift invariance
eigenvalues = np.linalg.eigvalsh(J_by_hand)
assert eigenvalues.min() > -1e-15, eigenvalues  # positive semi-definite
print("p =", np.round(p, 4))
print("eigenvalues of J:", np.round(eigenvalues, 5) + 0.0)

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw={"width_ratios": [1, 1.25]})
axes[0].bar(range(5), p, color="tab:blue")
axes[0].set(title="p = softmax(z)", xlabel="class", xticks=range(5))
lim = float(np.abs(J_by_hand).max())
im = axes[1].imshow(J_by_hand, cmap="RdBu_r", vmin=-lim, vmax=lim)
axes[1].set(
    title=r"Jacobian $\mathrm{diag}(p) - pp^\top$",
    xlabel="j (logit)",
    ylabel="i (probability)",
    xticks=range(5),
    yticks=range(5),
)
axes[1].grid(False)
fig.colorbar(im, ax=axes[1])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 1.2 The gradient of the cross-entropy: $\operatorname{softmax}(z) - y$
#
# For a target distribution $y$ (one-hot or soft, $\sum_i y_i = 1$) the cross-entropy of the predicted
# distribution $p = \operatorname{softmax}(z)$ is
#
# $$\mathrm{CE}(z, y) = -\sum_i y_i \log p_i, \qquad \log p_i = z_i - \operatorname{lse}(z), \qquad
#   \operatorname{lse}(z) = \log \sum_k e^{z_k},$$
#
# so $\mathrm{CE}(z, y) = \big(\sum_i y_i\big)\operatorname{lse}(z) - \sum_i y_i z_i$. The derivative of
# log-sum-exp is the softmax, $\partial \operatorname{lse} / \partial z_j = e^{z_j} / \sum_k e^{z_k} = p_j$,
# hence
#
# $$\boxed{\frac{\partial\, \mathrm{CE}}{\partial z_j} = \Big(\sum_i y_i\Big) p_j - y_j = p_j - y_j.}$$
#
# The same result through the chain rule and the Jacobian above:
# $\frac{\partial \mathrm{CE}}{\partial z_j} = -\sum_i \frac{y_i}{p_i} \frac{\partial p_i}{\partial z_j}
# = -\sum_i \frac{y_i}{p_i}\,(p_i\delta_{ij} - p_i p_j) = -y_j + p_j \sum_i y_i$.
#
# The gradient is bounded (each entry lies in $[-1, 1]$), and it is zero exactly when $p = y$.

# %%
Z = rng.normal(size=(4, 5)) * 3.0  # 4 examples, 5 classes
T = rng.dirichlet(np.ones(5), size=4)  # soft targets, rows sum to 1
labels = np.array([0, 3, 1, 4])  # integer targets
P = jxent.softmax(Z)

# Soft targets: d/dz sum_i CE(z_i, t_i) = softmax(z) - t. (jax.jit: compile each check once.)
soft_loss = lambda z: jxent.softmax_cross_entropy(z, T).sum()
grad_soft = jax.jit(jax.grad(soft_loss))(Z)
np.testing.assert_allclose(grad_soft, P - T, rtol=1e-10, atol=1e-14)

# Integer targets: softmax(z) - onehot(y); and "mean" divides by the number of examples.
int_loss = lambda z: jxent.softmax_cross_entropy_with_integer_labels(z, labels, reduction="mean")
grad_int = jax.jit(jax.grad(int_loss))(Z)
np.testing.assert_allclose(grad_int, (P - np.eye(5)[labels]) / 4, rtol=1e-10, atol=1e-14)

# The chain rule through the softmax Jacobian gives the same vector.
J = jax.jit(jax.vmap(jax.jacfwd(jxent.softmax)))(Z)  # [4, 5, 5]
grad_chain = -np.einsum("bi,bij->bj", T / P, J)
np.testing.assert_allclose(grad_chain, P - T, rtol=1e-10, atol=1e-14)

# Forward mode agrees with reverse mode.
grad_fwd = jax.jit(jax.jacfwd(soft_loss))(Z)
np.testing.assert_allclose(grad_fwd, grad_soft, rtol=1e-10, atol=1e-14)

# Targets that do not sum to 1: (sum y) p - y.
T2 = 3.0 * T
grad_unnormalised = jax.jit(jax.grad(lambda z: jxent.softmax_cross_entropy(z, T2).sum()))(Z)
np.testing.assert_allclose(grad_unnormalised, T2.sum(-1, keepdims=True) * P - T2, rtol=1e-10, atol=1e-14)
print("softmax(z) - y checked for soft, integer and unnormalised targets")
print(np.round(grad_int * 4, 3))

# %% [markdown]
# ## 1.3 The Hessian: $\nabla^2 \operatorname{lse}(z) = \operatorname{diag}(p) - p p^\top$
#
# The gradient of $\operatorname{lse}$ is $p = \operatorname{softmax}(z)$, so its Hessian is the Jacobian of
# the softmax from 1.1:
#
# $$\nabla^2 \operatorname{lse}(z) = \frac{\partial p}{\partial z} = \operatorname{diag}(p) - p p^\top .$$
#
# The cross-entropy $\big(\sum_i y_i\big)\operatorname{lse}(z) - y^\top z$ differs from it by a linear term, so
# it has the same Hessian (times $\sum_i y_i$). Because the Hessian is positive semi-definite, the
# cross-entropy is **convex in the logits**; it is not strictly convex, since the Hessian has the eigenvalue 0
# with eigenvector $\mathbf{1}$ (shifting all logits changes nothing). `jxent` gets second derivatives from
# its closed-form `custom_jvp`s, so `jax.hessian` works directly.

# %%
z = rng.normal(size=6) * 2.0
p = jxent.softmax(z)
H_by_hand = jnp.diag(p) - jnp.outer(p, p)

H_lse = jax.jit(jax.hessian(jxent.logsumexp))(z)
np.testing.assert_allclose(H_lse, H_by_hand, rtol=1e-10, atol=1e-15)

label = 2
H_ce = jax.jit(jax.hessian(lambda z: jxent.softmax_cross_entropy_with_integer_labels(z, label)))(z)
np.testing.assert_allclose(H_ce, H_by_hand, rtol=1e-10, atol=1e-15)

eigenvalues, eigenvectors = np.linalg.eigh(H_by_hand)
assert abs(eigenvalues[0]) < 1e-14 and eigenvalues[1] > 0  # one zero eigenvalue, the rest positive
np.testing.assert_allclose(np.abs(eigenvectors[:, 0]), 1 / np.sqrt(6), rtol=1e-8)  # along (1, ..., 1)
print("eigenvalues of the Hessian:", np.round(eigenvalues, 5) + 0.0)


# %% [markdown]
# ## 1.4 Why log-sum-exp is max-shifted
#
# Computed literally, $\log \sum_k e^{z_k}$ breaks down in floating point long before the answer does.
# In float32 the largest finite number is $3.4 \times 10^{38} \approx e^{88.72}$, so $e^{z}$ **overflows** to
# `inf` for $z > 88.72$. At the other end the smallest normal float32 is $1.2 \times 10^{-38} \approx
# e^{-87.3}$; XLA (like most accelerator code) flushes smaller, subnormal results to zero, so for logits
# below about $-87$ the terms $e^{z_k}$ **underflow** to 0, one after another: the sum first loses terms
# (a wrong answer), then becomes 0 and the logarithm returns $-\infty$. The softmax
# $e^{z_i} / \sum_k e^{z_k}$ becomes $\infty/\infty$ or $0/0$: NaN.
#
# The fix is an exact identity. For any constant $m$,
#
# $$\operatorname{lse}(z) = m + \log \sum_k e^{z_k - m},
#   \qquad \operatorname{softmax}(z)_i = \frac{e^{z_i - m}}{\sum_k e^{z_k - m}} .$$
#
# With $m = \max_k z_k$ every exponent is $\le 0$ (nothing overflows) and the largest term is exactly
# $e^0 = 1$, so the sum lies in $[1, K]$ and its logarithm is always finite. `jxent.logsumexp` does this.


# %%
def naive_logsumexp(z):
    return jnp.log(jnp.sum(jnp.exp(z), axis=-1))


def naive_softmax(z):
    e = jnp.exp(z)
    return e / jnp.sum(e, axis=-1, keepdims=True)


f32 = np.finfo(np.float32)
print(
    f"float32: exp overflows above {np.log(f32.max):.2f}; "
    f"results below e^{np.log(f32.tiny):.2f} are subnormal and flushed to 0"
)
for row in ([1.0, 2.0, 3.0], [100.0, 101.0, 102.0], [-200.0, -201.0, -202.0]):
    z32 = jnp.array(row, dtype=jnp.float32)
    exact = np.logaddexp.reduce(np.array(row, dtype=np.float64))  # float64 reference
    print(
        f"z = {row}:  naive lse = {float(naive_logsumexp(z32)):>10.4f}   "
        f"jxent.logsumexp = {float(jxent.logsumexp(z32)):>10.4f}   exact = {exact:.4f}   "
        f"naive softmax = {np.asarray(naive_softmax(z32))}"
    )

big = jnp.array([100.0, 101.0, 102.0], dtype=jnp.float32)
small = jnp.array([-200.0, -201.0, -202.0], dtype=jnp.float32)
assert jnp.isposinf(naive_logsumexp(big)) and jnp.isneginf(naive_logsumexp(small))
assert jnp.isnan(naive_softmax(big)).all() and jnp.isnan(naive_softmax(small)).all()
np.testing.assert_allclose(jxent.logsumexp(big), np.logaddexp.reduce([100.0, 101.0, 102.0]), rtol=1e-6)
np.testing.assert_allclose(jxent.logsumexp(small), np.logaddexp.reduce([-200.0, -201.0, -202.0]), rtol=1e-6)
np.testing.assert_allclose(jxent.softmax(big), jxent.softmax(big - 100.0), rtol=1e-6)  # shift invariance
# Cross-entropy on such logits is finite too (the label is class 0 here).
print("cross-entropy of the big logits, label 0:", float(jxent.softmax_cross_entropy_with_integer_labels(big, 0)))

# %%
t = np.linspace(-150, 150, 1201)
Zt = jnp.asarray(np.stack([t, t - 1, t - 2], axis=-1), dtype=jnp.float32)  # logits (t, t-1, t-2)
offset_exact = np.log1p(np.exp(-1.0) + np.exp(-2.0))  # lse(z) - max(z), exactly
naive = np.asarray(naive_logsumexp(Zt)) - t
shifted = np.asarray(jxent.logsumexp(Zt)) - t

overflow = np.log(f32.max) - offset_exact  # the sum of the three exponentials overflows
underflow = np.log(f32.tiny)  # every exponential is flushed to 0
fig, ax = plt.subplots(figsize=(8.5, 3.8))
ax.axvspan(overflow, t.max(), color="tab:red", alpha=0.12, label="naive: sum overflows, lse = +inf")
ax.axvspan(t.min(), underflow, color="tab:purple", alpha=0.12, label="naive: every term is 0, lse = -inf")
ax.axvspan(underflow, underflow + 2, color="tab:orange", alpha=0.2, label="naive: some terms are 0")
ax.plot(t, shifted, lw=4, color="tab:green", alpha=0.6, label="jxent.logsumexp (max-shifted)")
ax.plot(t, naive, lw=1.5, color="black", label="naive log(sum(exp(z)))")
ax.axhline(offset_exact, ls=":", color="gray")
ax.set(
    xlabel="t, where z = (t, t-1, t-2) in float32",
    ylabel="lse(z) - max(z)",
    ylim=(-0.02, 0.55),
    title="log-sum-exp in float32: the naive formula only works for about -85 < t < 88",
)
ax.legend(loc="lower center", bbox_to_anchor=(0.62, 0.03), fontsize=8, ncol=2)
fig.tight_layout()
plt.show()

inside = (t > underflow + 2) & (t < overflow)
assert np.all(np.isfinite(shifted)) and np.allclose(shifted, offset_exact, atol=1e-4)
assert np.all(~np.isfinite(naive[t > overflow])) and np.allclose(naive[inside], offset_exact, atol=1e-3)

# %% [markdown]
# ## 1.5 Worked examples
#
# ### Cat, dog, horse
#
# A classifier sees a picture of a **dog** and predicts $(0.4, 0.4, 0.2)$ for (cat, dog, horse). With a
# one-hot target only the true class's term survives:
# $\mathrm{CE} = -\sum_i y_i \ln p_i = -\ln 0.4 = 0.916$ nats. For a **horse** predicted as
# $(0.1, 0.2, 0.7)$ the loss is $-\ln 0.7 = 0.357$ nats: the more probability on the right class, the
# smaller the loss. `jxent.categorical_cross_entropy` takes probabilities (not logits) and one-hot or
# integer targets.

# %%
classes = ["cat", "dog", "horse"]
pred_dog_image = jnp.array([0.4, 0.4, 0.2])
pred_horse_image = jnp.array([0.1, 0.2, 0.7])
onehot_dog = jnp.array([0.0, 1.0, 0.0])
onehot_horse = jnp.array([0.0, 0.0, 1.0])

ce_dog = jxent.categorical_cross_entropy(pred_dog_image, onehot_dog)
ce_horse = jxent.categorical_cross_entropy(pred_horse_image, onehot_horse)
print(f"dog image:   CE = {float(ce_dog):.3f} nats   (-ln 0.4 = {-np.log(0.4):.3f})")
print(f"horse image: CE = {float(ce_horse):.3f} nats   (-ln 0.7 = {-np.log(0.7):.3f})")
assert round(float(ce_dog), 3) == 0.916 and round(float(ce_horse), 3) == 0.357

# Integer labels give the same numbers, for a batch of both images at once.
batch = jxent.categorical_cross_entropy(
    jnp.stack([pred_dog_image, pred_horse_image]), jnp.array([classes.index("dog"), classes.index("horse")])
)
np.testing.assert_allclose(batch, [ce_dog, ce_horse], rtol=1e-12)

# %% [markdown]
# ### Four students, two models (illustrative numbers)
#
# Binary cross-entropy is the $K = 2$ case: for a true outcome $y \in \{0, 1\}$ and a predicted probability
# $p$ of $y = 1$,
#
# $$\mathrm{BCE}(p, y) = -\big[y \ln p + (1 - y)\ln(1 - p)\big].$$
#
# The numbers below are **illustrative, made up for this example**: four students with their true outcome
# (1 = pass, 0 = fail) and the probability of passing predicted by two models, A and B.
#
# | student | passed? | model A: P(pass) | model B: P(pass) |
# |:-:|:-:|:-:|:-:|
# | 1 | 1 | 0.9 | 0.6 |
# | 2 | 0 | 0.2 | 0.4 |
# | 3 | 1 | 0.7 | 0.5 |
# | 4 | 0 | 0.4 | 0.7 |
#
# Model A puts more probability on what actually happened for every student, so its mean cross-entropy is
# lower. We compute it by hand in NumPy and with `jxent.binary_cross_entropy`, in three units. The unit is
# only the base of the logarithm: $\log_b x = \ln x / \ln b$, so a loss in nats divided by $\ln 10$ is the
# loss in base-10 units (hartleys), and divided by $\ln 2$ it is in bits.

# %%
passed = np.array([1.0, 0.0, 1.0, 0.0])
model_a = np.array([0.9, 0.2, 0.7, 0.4])
model_b = np.array([0.6, 0.4, 0.5, 0.7])


def bce_by_hand(p, y, log=np.log):
    return -(y * log(p) + (1 - y) * log(1 - p))


print(f"{'':>8} {'nats':>8} {'base 10':>8} {'bits':>8}   per student (nats)")
for name, pred in [("model A", model_a), ("model B", model_b)]:
    per_student = jxent.binary_cross_entropy(pred, passed)
    mean_nats = float(jxent.binary_cross_entropy(pred, passed, reduction="mean"))
    # By hand, in NumPy, once per unit.
    np.testing.assert_allclose(per_student, bce_by_hand(pred, passed), rtol=1e-12)
    np.testing.assert_allclose(mean_nats, bce_by_hand(pred, passed).mean(), rtol=1e-12)
    np.testing.assert_allclose(mean_nats / np.log(10), bce_by_hand(pred, passed, np.log10).mean(), rtol=1e-12)
    np.testing.assert_allclose(mean_nats / np.log(2), bce_by_hand(pred, passed, np.log2).mean(), rtol=1e-12)
    # Binary CE is categorical CE over the two classes (fail, pass).
    two_class = jxent.categorical_cross_entropy(np.stack([1 - pred, pred], -1), passed.astype(int))
    np.testing.assert_allclose(two_class, per_student, rtol=1e-12)
    print(
        f"{name:>8} {mean_nats:8.4f} {mean_nats / np.log(10):8.4f} {mean_nats / np.log(2):8.4f}   "
        f"{np.round(per_student, 4)}"
    )

loss_a = float(jxent.binary_cross_entropy(model_a, passed, reduction="mean"))
loss_b = float(jxent.binary_cross_entropy(model_b, passed, reduction="mean"))
assert loss_a < loss_b
np.testing.assert_allclose(loss_a, -np.mean(np.log([0.9, 0.8, 0.7, 0.6])), rtol=1e-12)

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
x = np.arange(1, 5)
for offset, (name, pred) in zip((-0.18, 0.18), [("model A", model_a), ("model B", model_b)], strict=True):
    ax.bar(x + offset, jxent.binary_cross_entropy(pred, passed), width=0.36, label=name)
ax.set(
    xticks=x,
    xticklabels=[f"student {i}\n({'pass' if y else 'fail'})" for i, y in zip(x, passed, strict=True)],
    ylabel="BCE (nats)",
    title="Per-student cross-entropy (illustrative numbers)",
)
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ### A fruit container (illustrative numbers)
#
# Cross-entropy compares whole distributions, not only one-hot targets. **Illustrative numbers:** a container
# holds 10 fruits: 5 apples, 3 bananas and 2 cherries, so the true distribution of a randomly drawn fruit is
# $q = (0.5, 0.3, 0.2)$. A model predicts $p = (0.4, 0.4, 0.2)$. Then
#
# $$H(q, p) = -\sum_i q_i \log p_i = -(0.5 \log 0.4 + 0.3 \log 0.4 + 0.2 \log 0.2),$$
#
# which we evaluate in three bases: base-10 logarithms (as some textbook versions of this example do), natural
# logarithms (nats, what jxent returns) and base-2 logarithms (bits). For reference, the entropy
# $H(q) = -\sum_i q_i \log q_i$ is the smallest cross-entropy any prediction can reach (notebook 4 shows
# $H(q, p) = H(q) + \mathrm{KL}(q \,\|\, p)$).

# %%
fruits = ["apple", "banana", "cherry"]
q = np.array([5, 3, 2]) / 10  # true distribution in the container
p = np.array([0.4, 0.4, 0.2])  # predicted distribution

by_hand = {
    "base 10": -np.sum(q * np.log10(p)),
    "nats": -np.sum(q * np.log(p)),
    "bits": -np.sum(q * np.log2(p)),
}
ce_nats = float(jxent.categorical_cross_entropy(p, q))  # probability targets
from_jxent = {"base 10": ce_nats / np.log(10), "nats": ce_nats, "bits": ce_nats / np.log(2)}
entropy_nats = float(jxent.entropy(q))

print(f"{'unit':>8} {'by hand':>9} {'jxent':>9} {'H(q)':>9}")
for unit, scale in [("base 10", np.log(10)), ("nats", 1.0), ("bits", np.log(2))]:
    np.testing.assert_allclose(from_jxent[unit], by_hand[unit], rtol=1e-12)
    print(f"{unit:>8} {by_hand[unit]:9.4f} {from_jxent[unit]:9.4f} {entropy_nats / scale:9.4f}")
assert ce_nats > entropy_nats
np.testing.assert_allclose(by_hand["base 10"], 0.4581, atol=5e-5)
