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
# # 4. Label smoothing, KL divergence and entropy
#
# 1. $\mathrm{CE} = H + \mathrm{KL}$: cross-entropy is entropy plus Kullback-Leibler divergence.
# 2. The gradient of label-smoothed cross-entropy, and what smoothing does to the **optimal logits**: they
#    become finite, with a gap of $\log\frac{1 - \varepsilon + \varepsilon/K}{\varepsilon/K}$.
# 3. Two regularisers of the logits used in large models: the **z-loss** (PaLM) and **soft-capping**
#    (Gemma 2), with their gradients.
#
# Each derivation is checked numerically against `jax.grad` or `jax.jacfwd`.

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
# ## 4.1 Cross-entropy = entropy + KL divergence
#
# For a target distribution $t$ and a predicted distribution $q$ (here $q = \operatorname{softmax}(z)$):
#
# $$H(t) = -\sum_c t_c \log t_c, \qquad
#   \mathrm{KL}(t \,\|\, q) = \sum_c t_c \log\frac{t_c}{q_c}, \qquad
#   \mathrm{CE}(t, q) = -\sum_c t_c \log q_c .$$
#
# Adding and subtracting $\sum_c t_c \log t_c$:
#
# $$\mathrm{CE}(t, q) = -\sum_c t_c \log t_c + \sum_c t_c (\log t_c - \log q_c)
#   = H(t) + \mathrm{KL}(t \,\|\, q).$$
#
# $H(t)$ does not depend on the model, so minimising cross-entropy *is* minimising the KL divergence, and
# since $\mathrm{KL} \ge 0$ with equality iff $q = t$ (Gibbs' inequality), the smallest achievable
# cross-entropy is $H(t)$, reached at $q = t$. Terms with $t_c = 0$ count as $0 \log 0 = 0$.

# %%
K = 7
Z = rng.normal(size=(5, K)) * 2.0
T = rng.dirichlet(np.ones(K) * 0.7, size=5)
T[0] = np.eye(K)[3]  # a one-hot row: H = 0, CE = KL
T[1, :3] = 0.0
T[1] /= T[1].sum()  # a row with some zero probabilities
log_q = jxent.log_softmax(Z)

ce = jxent.softmax_cross_entropy(Z, T)
h = jxent.entropy(T)
kl = jxent.kl_divergence(log_q, T)  # optax's argument order: log-predictions, then targets
np.testing.assert_allclose(ce, h + kl, rtol=1e-12)
np.testing.assert_allclose(
    kl, np.sum(np.where(T > 0, T * (np.log(np.where(T > 0, T, 1.0)) - log_q), 0.0), -1), rtol=1e-12
)
assert np.all(kl >= 0) and h[0] == 0.0
np.testing.assert_allclose(jxent.kl_divergence(jnp.log(T[2]), T[2]), 0.0, atol=1e-15)  # KL(t || t) = 0
np.testing.assert_allclose(jxent.softmax_cross_entropy(jnp.log(T[2]), T[2]), h[2], rtol=1e-12)  # min CE = H(t)
# Gradient of the entropy: -(log p + 1).
np.testing.assert_allclose(jax.grad(jxent.entropy)(T[2]), -(np.log(T[2]) + 1), rtol=1e-12)
for row in zip(ce, h, kl, strict=True):
    print("CE = {:.4f} = H {:.4f} + KL {:.4f}".format(*map(float, row)))

# %% [markdown]
# ## 4.2 Label smoothing and its gradient
#
# Label smoothing (Szegedy et al. 2016; Müller, Kornblith and Hinton,
# [*When does label smoothing help?*](https://arxiv.org/abs/1906.02629), 2019) trains against the mixture of
# the one-hot target and the uniform distribution over the $K$ classes:
#
# $$q_c = (1 - \varepsilon)\,[c = y] + \frac{\varepsilon}{K}, \qquad
#   \mathrm{CE}_\varepsilon(z) = -\sum_c q_c \log p_c
#   = (1 - \varepsilon)\,\mathrm{CE}(e_y, p)
#   + \varepsilon\, \underbrace{\frac1K \sum_c (-\log p_c)}_{\text{CE against uniform}} .$$
#
# $q$ sums to 1, so the result of notebook 1 applies unchanged:
#
# $$\boxed{\frac{\partial\, \mathrm{CE}_\varepsilon}{\partial z} = p - q
#   = p - (1 - \varepsilon)\, e_y - \frac{\varepsilon}{K}\mathbf{1}.}$$
#
# In `jxent` this is the `label_smoothing=` argument (torch's semantics), or `jxent.smooth_labels` applied to
# a one-hot target (optax's function).

# %%
K, eps = 10, 0.1
Z = rng.normal(size=(6, K)) * 3.0
labels = rng.integers(0, K, size=6)
onehot = np.eye(K)[labels]
q = (1 - eps) * onehot + eps / K

loss = lambda z: jxent.softmax_cross_entropy_with_integer_labels(z, labels, label_smoothing=eps).sum()
np.testing.assert_allclose(jax.jit(jax.grad(loss))(Z), jxent.softmax(Z) - q, rtol=1e-10, atol=1e-14)
np.testing.assert_allclose(jax.jit(jax.jacfwd(loss))(Z), jxent.softmax(Z) - q, rtol=1e-10, atol=1e-14)

# The same loss three ways: the keyword, smoothed one-hot targets, and the mixture of two cross-entropies.
smoothed = jxent.softmax_cross_entropy_with_integer_labels(Z, labels, label_smoothing=eps)
from_smoothed_targets = jxent.softmax_cross_entropy(Z, jxent.smooth_labels(onehot, eps))
np.testing.assert_allclose(smoothed, from_smoothed_targets, rtol=1e-12)
mixture = (1 - eps) * jxent.softmax_cross_entropy_with_integer_labels(Z, labels) + eps * jxent.softmax_cross_entropy(
    Z, np.full((6, K), 1 / K)
)
np.testing.assert_allclose(smoothed, mixture, rtol=1e-12)
print("p - q checked; smoothed targets of row 0:", np.round(q[0], 3))


# %% [markdown]
# ## 4.3 Smoothing makes the optimal logits finite
#
# Without smoothing, the gradient $p - e_y$ vanishes only when $p_y = 1$, which needs
# $z_y - z_c \to \infty$: the logits grow without bound on separable training data. With smoothing the
# gradient $p - q$ is zero at $p = q$, i.e. $p_y = 1 - \varepsilon + \varepsilon/K$ and
# $p_c = \varepsilon / K$ for $c \ne y$. Since $\log p_y - \log p_c = z_y - z_c$, the optimal logits are
# determined up to a common shift by
#
# $$\boxed{z_y^\star - z_c^\star = \log\frac{1 - \varepsilon + \varepsilon / K}{\varepsilon / K}},$$
#
# a finite gap, and by 4.1 the minimum loss is $H(q)$. We check both: the gradient vanishes at
# $z^\star = \log q$, and plain gradient descent from $z = 0$ converges to the predicted gap.


# %%
def optimal_gap(eps, K):
    return np.log((1 - eps + eps / K) / (eps / K))


K, eps, y = 10, 0.1, 3
q = (1 - eps) * np.eye(K)[y] + eps / K
loss = lambda z: jxent.softmax_cross_entropy_with_integer_labels(z, y, label_smoothing=eps)

z_star = np.log(q)
np.testing.assert_allclose(jax.grad(loss)(z_star), 0.0, atol=1e-14)  # stationary at p = q
np.testing.assert_allclose(loss(z_star), jxent.entropy(q), rtol=1e-12)  # minimum value H(q)


@jax.jit
def descend(z):
    return jax.lax.fori_loop(0, 3000, lambda _, z: z - 1.0 * jax.grad(loss)(z), z)


z_opt = descend(jnp.zeros(K))
gap = float(z_opt[y] - jnp.max(jnp.delete(z_opt, y)))
print(f"K = {K}, eps = {eps}: gap after gradient descent = {gap:.5f}, formula = {optimal_gap(eps, K):.5f}")
np.testing.assert_allclose(gap, optimal_gap(eps, K), rtol=1e-6)

# %%
eps_grid = np.logspace(-4, np.log10(0.5), 300)
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for K in (2, 10, 100, 32_000):
    axes[0].plot(eps_grid, optimal_gap(eps_grid, K), lw=2, label=f"K = {K:,}")
    axes[1].plot(eps_grid, 1 - eps_grid + eps_grid / K, lw=2, label=f"K = {K:,}")
axes[0].plot([0.1], [optimal_gap(0.1, 10)], "ko", label="gradient descent, K = 10")
axes[0].set(
    xscale="log",
    xlabel="label smoothing $\\varepsilon$",
    ylabel="$z_y^\\star - z_c^\\star$",
    title="Optimal logit gap $\\log\\frac{1 - \\varepsilon + \\varepsilon/K}{\\varepsilon/K}$",
)
axes[1].set(
    xscale="log",
    xlabel="label smoothing $\\varepsilon$",
    ylabel="$p_y^\\star$",
    title="Optimal probability of the true class $1 - \\varepsilon + \\varepsilon / K$",
)
for ax in axes:
    ax.legend(fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# The gap grows only like $\log(1/\varepsilon)$ as $\varepsilon \to 0$ (the unsmoothed optimum is at
# infinity), and it grows with $\log K$: with many classes each wrong class gets little mass. This is
# why smoothed models are less over-confident, and why their predicted probabilities top out at
# $1 - \varepsilon + \varepsilon/K$ (the training demo in `examples/train_demo.py` shows the effect on
# calibration).
#
# ## 4.4 z-loss
#
# Cross-entropy is invariant to adding a constant to all logits, so nothing stops the logits from drifting,
# which can hurt numerics in low precision. PaLM (Chowdhery et al. 2022) adds
# $\lambda_z \operatorname{lse}(z)^2$, which pulls the log-normaliser $\operatorname{lse}(z)$ towards 0.
# With $\partial \operatorname{lse}/\partial z = p$:
#
# $$\frac{\partial}{\partial z}\Big[\mathrm{CE} + \lambda_z \operatorname{lse}(z)^2\Big]
#   = (p - y) + 2\lambda_z \operatorname{lse}(z)\, p .$$
#
# Along the shift direction $\mathbf{1}$, the cross-entropy part contributes $\sum_j (p_j - y_j) = 0$ and the
# z-loss $2\lambda_z \operatorname{lse}(z)$: it is the z-loss alone that fixes the shift.

# %%
K, lam = 8, 1e-2
Z = rng.normal(size=(5, K)) * 3.0 + 4.0  # shifted so that lse(z) is far from 0
labels = rng.integers(0, K, size=5)
P, lse = jxent.softmax(Z), jxent.logsumexp(Z)

loss = lambda z: jxent.softmax_cross_entropy_with_integer_labels(z, labels, z_loss=lam).sum()
by_hand = P - np.eye(K)[labels] + 2 * lam * lse[:, None] * P
grad = jax.jit(jax.grad(loss))(Z)
np.testing.assert_allclose(grad, by_hand, rtol=1e-10, atol=1e-14)
np.testing.assert_allclose(grad.sum(-1), 2 * lam * lse, rtol=1e-10)  # along the shift direction
np.testing.assert_allclose(
    jxent.softmax_cross_entropy_with_integer_labels(Z, labels, z_loss=lam),
    jxent.softmax_cross_entropy_with_integer_labels(Z, labels) + lam * lse**2,
    rtol=1e-12,
)
print("z-loss gradient checked; lse of the rows:", np.round(lse, 3))

# %% [markdown]
# ## 4.5 Logit soft-capping
#
# Gemma 2 bounds the logits smoothly with $s(z) = c \tanh(z / c)$ before the softmax: near 0 it is the
# identity, and $|s(z)| < c$. Its derivative is
#
# $$s'(z) = 1 - \tanh^2(z / c) = 1 - \big(s(z) / c\big)^2,$$
#
# so the cross-entropy gradient with respect to the raw logits is the usual one, multiplied entry by entry:
#
# $$\frac{\partial\, \mathrm{CE}(s(z), y)}{\partial z} = \big(\operatorname{softmax}(s(z)) - y\big) \odot
#   \big(1 - \tanh^2(z / c)\big).$$
#
# Logits far beyond the cap get almost no gradient, which is the price of the bound. `jxent.soft_cap` keeps
# $-\infty$ (a masked class) at $-\infty$ with zero gradient.

# %%
cap, K = 5.0, 6
Z = rng.normal(size=(4, K)) * 6.0
labels = rng.integers(0, K, size=4)

# The derivative of soft_cap, elementwise (jnp.vectorize maps the scalar derivative over the array).
soft_cap_derivative = jax.jit(jnp.vectorize(jax.grad(jxent.soft_cap), excluded={1}))
np.testing.assert_allclose(soft_cap_derivative(Z, cap), 1 - np.tanh(Z / cap) ** 2, rtol=1e-10)
np.testing.assert_allclose(jxent.soft_cap(Z, cap), cap * np.tanh(Z / cap), rtol=1e-12)

# Cross-entropy with soft_cap=: chain rule through the cap.
loss = lambda z: jxent.softmax_cross_entropy_with_integer_labels(z, labels, soft_cap=cap).sum()
by_hand = (jxent.softmax(cap * np.tanh(Z / cap)) - np.eye(K)[labels]) * (1 - np.tanh(Z / cap) ** 2)
np.testing.assert_allclose(jax.jit(jax.grad(loss))(Z), by_hand, rtol=1e-9, atol=1e-14)
np.testing.assert_allclose(jax.jit(jax.jacfwd(loss))(Z), by_hand, rtol=1e-9, atol=1e-14)

# -inf stays -inf (a masked class), +inf maps to the cap; both have derivative 0.
edge = jnp.array([-jnp.inf, jnp.inf])
np.testing.assert_array_equal(jxent.soft_cap(edge, cap), [-np.inf, cap])
np.testing.assert_array_equal(soft_cap_derivative(edge, cap), [0.0, 0.0])
print("soft-capping gradient checked")

zs = np.linspace(-60, 60, 601)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
axes[0].plot(zs, zs, color="gray", ls=":", label="no cap")
for c in (5.0, 15.0, 30.0):
    axes[0].plot(zs, jxent.soft_cap(zs, c), lw=2, label=f"cap = {c:g}")
    axes[1].plot(zs, soft_cap_derivative(zs, c), lw=2, label=f"cap = {c:g}")
axes[0].set(xlabel="logit z", ylabel="cap tanh(z / cap)", title="jxent.soft_cap", ylim=(-40, 40))
axes[1].set(xlabel="logit z", ylabel="derivative", title="$1 - \\tanh^2(z / \\mathrm{cap})$")
for ax in axes:
    ax.legend(fontsize=9)
fig.tight_layout()
plt.show()
