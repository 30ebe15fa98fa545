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
# # 2. Binary cross-entropy and the sigmoid
#
# 1. The sigmoid, and the gradient of binary cross-entropy on a logit: $\sigma(z) - y$ (also with
#    `pos_weight`, and for the probability form).
# 2. Why cross-entropy beats mean squared error on a sigmoid output: its gradient does not vanish when the
#    model is confidently wrong.
# 3. Hinge loss next to cross-entropy (logistic loss), as functions of the margin.
# 4. Exact limits at logits $\pm\infty$: `jxent` returns $0$ where the label agrees, where `optax` returns NaN.
#
# Every derivation is checked against `jax.grad` with assertions.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jxent

jax.config.update("jax_enable_x64", True)  # float64 keeps the gradient checks tight
plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3})
rng = np.random.default_rng(0)
print(f"jax {jax.__version__}, jxent {jxent.__version__}, backend: {jax.default_backend()}")

# %% [markdown]
# ## 2.1 The gradient of binary cross-entropy: $\sigma(z) - y$
#
# The sigmoid $\sigma(z) = 1 / (1 + e^{-z})$ satisfies $\sigma(-z) = 1 - \sigma(z)$ and
# $\sigma'(z) = \sigma(z)\,(1 - \sigma(z))$. For a logit $z$ and a label $y \in [0, 1]$,
#
# $$\ell(z, y) = -\big[y \log \sigma(z) + (1 - y) \log(1 - \sigma(z))\big]
#              = y\, \operatorname{softplus}(-z) + (1 - y)\, \operatorname{softplus}(z)
#              = \operatorname{softplus}(z) - y z,$$
#
# using $-\log\sigma(z) = \log(1 + e^{-z}) = \operatorname{softplus}(-z)$ and
# $\operatorname{softplus}(-z) = \operatorname{softplus}(z) - z$. Since
# $\operatorname{softplus}'(z) = \sigma(z)$,
#
# $$\boxed{\frac{\partial \ell}{\partial z} = \sigma(z) - y.}$$
#
# The same form as softmax cross-entropy ($p - y$), and for the same reason: the sigmoid is the softmax of
# the two logits $(0, z)$.
#
# **`pos_weight`** $w_+$ scales the positive term, $\ell = -[w_+ y \log\sigma(z) + (1-y)\log(1-\sigma(z))]$,
# so $\partial\ell/\partial z = -w_+ y\,(1 - \sigma(z)) + (1 - y)\,\sigma(z)
# = (1 - y)\,\sigma(z) - w_+ y\, \sigma(-z)$.
#
# **On probabilities** ($p = \sigma(z)$ given directly, `jxent.binary_cross_entropy`),
# $\partial\ell/\partial p = -y/p + (1-y)/(1-p) = (p - y) / (p(1-p))$; multiplied by
# $\mathrm{d}p/\mathrm{d}z = p(1-p)$ it gives $\sigma(z) - y$ again.

# %%
sigmoid = jax.nn.sigmoid
z = rng.normal(size=12) * 4.0
y = rng.uniform(size=12)  # soft labels in [0, 1]
y_hard = (rng.uniform(size=12) < 0.5).astype(float)

# sigma'(z) = sigma(z) (1 - sigma(z))
np.testing.assert_allclose(jax.jit(jax.vmap(jax.grad(sigmoid)))(z), sigmoid(z) * (1 - sigmoid(z)), rtol=1e-12)

# The loss is softplus(z) - y z, and its gradient is sigma(z) - y.
loss = jxent.sigmoid_binary_cross_entropy(z, y)
np.testing.assert_allclose(loss, jax.nn.softplus(z) - y * z, rtol=1e-12)
grad = jax.jit(jax.grad(lambda z: jxent.sigmoid_binary_cross_entropy(z, y).sum()))(z)
np.testing.assert_allclose(grad, sigmoid(z) - y, rtol=1e-10, atol=1e-15)

# pos_weight: (1 - y) sigma(z) - w y sigma(-z)
w = 3.0
grad_w = jax.jit(jax.grad(lambda z: jxent.sigmoid_binary_cross_entropy(z, y_hard, pos_weight=w).sum()))(z)
np.testing.assert_allclose(grad_w, (1 - y_hard) * sigmoid(z) - w * y_hard * sigmoid(-z), rtol=1e-10, atol=1e-15)

# On probabilities: d/dp = (p - y) / (p (1 - p)); through p = sigma(z) it is sigma(z) - y again.
p = sigmoid(z)
grad_p = jax.jit(jax.grad(lambda p: jxent.binary_cross_entropy(p, y).sum()))(p)
np.testing.assert_allclose(grad_p, (p - y) / (p * (1 - p)), rtol=1e-8)
grad_chain = jax.jit(jax.grad(lambda z: jxent.binary_cross_entropy(sigmoid(z), y).sum()))(z)
np.testing.assert_allclose(grad_chain, sigmoid(z) - y, rtol=1e-8, atol=1e-12)

# optax gives the same numbers on finite logits (jxent is a drop-in replacement).
np.testing.assert_allclose(loss, optax.losses.sigmoid_binary_cross_entropy(z, y), rtol=1e-12)
print("sigma(z) - y checked (soft labels, pos_weight, probability form)")


# %% [markdown]
# ## 2.2 Cross-entropy vs mean squared error on a sigmoid
#
# Why not train a sigmoid output with squared error, $\ell_{\text{MSE}} = (\sigma(z) - y)^2$? By the chain
# rule,
#
# $$\frac{\partial \ell_{\text{MSE}}}{\partial z} = 2\,(\sigma(z) - y)\,\sigma(z)\,(1 - \sigma(z)),
#   \qquad
#   \frac{\partial \ell_{\text{CE}}}{\partial z} = \sigma(z) - y .$$
#
# Take a positive example ($y = 1$) that the model gets confidently wrong, $z \to -\infty$: then
# $\sigma(z) \to 0$ and the MSE gradient $\approx -2\sigma(z) \to 0$. **The worse the mistake, the weaker the
# signal to fix it**: the factor $\sigma'(z)$ of the saturated sigmoid kills it. Cross-entropy's $\log$
# cancels that factor exactly, so its gradient tends to $-1$, its largest magnitude. (This is the argument of
# Goodfellow, Bengio and Courville, *Deep Learning*, §6.2.2.)


# %%
def mse(z, y):
    return (sigmoid(z) - y) ** 2


zs = np.linspace(-10, 10, 401)
ones = np.ones_like(zs)
ce_grad = jax.jit(jax.vmap(jax.grad(lambda z: jxent.sigmoid_binary_cross_entropy(z, 1.0))))(zs)
mse_grad = jax.jit(jax.vmap(jax.grad(lambda z: mse(z, 1.0))))(zs)
np.testing.assert_allclose(ce_grad, sigmoid(zs) - 1, rtol=1e-10, atol=1e-15)
np.testing.assert_allclose(mse_grad, 2 * (sigmoid(zs) - 1) * sigmoid(zs) * (1 - sigmoid(zs)), rtol=1e-10, atol=1e-15)
for z0 in (-2.0, -5.0, -10.0):
    i = np.argmin(np.abs(zs - z0))
    print(f"y = 1, z = {z0:6.1f}:  dCE/dz = {float(ce_grad[i]):+.4f}   dMSE/dz = {float(mse_grad[i]):+.6f}")
i = np.argmin(np.abs(zs + 10))
assert abs(ce_grad[i]) > 0.99 and abs(mse_grad[i]) < 1e-3

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].plot(zs, jxent.sigmoid_binary_cross_entropy(zs, ones), label="cross-entropy")
axes[0].plot(zs, mse(zs, ones), label="squared error $(\\sigma(z) - 1)^2$")
axes[0].set(xlabel="logit z (true label y = 1)", ylabel="loss", title="Loss for a positive example", ylim=(0, 5))
axes[1].plot(zs, np.abs(ce_grad), label="cross-entropy: $|\\sigma(z) - 1|$")
axes[1].plot(zs, np.abs(mse_grad), label="squared error: $|2(\\sigma - 1)\\sigma(1 - \\sigma)|$")
axes[1].set(xlabel="logit z (true label y = 1)", ylabel="|d loss / dz|", title="Gradient magnitude")
for ax in axes:
    ax.axvspan(-10, -3, color="tab:red", alpha=0.08)
    ax.legend(fontsize=9)
axes[1].annotate(
    "confidently wrong:\nMSE gradient vanishes",
    xy=(-7, 0.02),
    xytext=(-9.5, 0.45),
    fontsize=9,
    arrowprops=dict(arrowstyle="->"),
)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2.3 Hinge loss and cross-entropy, side by side
#
# Write the label as $t = 2y - 1 \in \{-1, +1\}$ and the **margin** as $m = t z$ (positive when the sign of
# the logit is right). Then binary cross-entropy is the *logistic loss* of the margin,
#
# $$\ell_{\text{CE}} = \log(1 + e^{-m}) = \operatorname{softplus}(-m),\qquad
#   \frac{\partial \ell_{\text{CE}}}{\partial m} = -\sigma(-m),$$
#
# while the hinge loss of support-vector machines is
#
# $$\ell_{\text{hinge}} = \max(0,\, 1 - m), \qquad
#   \frac{\partial \ell_{\text{hinge}}}{\partial m} = \begin{cases} -1 & m < 1 \\ 0 & m > 1. \end{cases}$$
#
# Both are convex upper bounds of the 0-1 loss (cross-entropy after dividing by $\ln 2$, i.e. in bits).
# The hinge loss is exactly 0 beyond the margin, so well-classified points stop contributing (sparse
# support vectors) but it yields no probabilities; cross-entropy never reaches 0, keeps a small push on every
# example, and its minimiser is the true conditional probability $\sigma(z) = P(y = 1 \mid x)$.

# %%
margins = np.linspace(-3, 4, 701)
z = margins  # take t = +1 (y = 1), so m = z
ce = jxent.sigmoid_binary_cross_entropy(z, np.ones_like(z))
hinge = optax.losses.hinge_loss(z, np.ones_like(z))

# CE as a function of the margin, for both signs of the label.
for y in (0.0, 1.0):
    t = 2 * y - 1
    zz = rng.normal(size=50) * 3
    np.testing.assert_allclose(
        jxent.sigmoid_binary_cross_entropy(zz, np.full(50, y)), jax.nn.softplus(-t * zz), rtol=1e-12
    )
np.testing.assert_allclose(hinge, np.maximum(0.0, 1.0 - margins), atol=1e-15)
ce_grad = jax.jit(jax.vmap(jax.grad(lambda m: jxent.sigmoid_binary_cross_entropy(m, 1.0))))(margins)
hinge_grad = jax.jit(jax.vmap(jax.grad(lambda m: optax.losses.hinge_loss(m, 1.0))))(margins)
np.testing.assert_allclose(ce_grad, -sigmoid(-margins), rtol=1e-10)
np.testing.assert_allclose(hinge_grad[margins < 0.99], -1.0)
np.testing.assert_allclose(hinge_grad[margins > 1.01], 0.0)

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].plot(margins, (margins <= 0).astype(float), color="gray", lw=1, label="0-1 loss")
axes[0].plot(margins, hinge, label="hinge  max(0, 1 - m)")
axes[0].plot(margins, ce, label="cross-entropy (nats)  log(1 + e$^{-m}$)")
axes[0].plot(margins, ce / np.log(2), ls="--", label="cross-entropy (bits)")
axes[0].set(xlabel="margin m = t z", ylabel="loss", title="Losses", ylim=(-0.1, 4.2))
axes[1].plot(margins, hinge_grad, label="hinge")
axes[1].plot(margins, ce_grad, label="cross-entropy: $-\\sigma(-m)$")
axes[1].set(xlabel="margin m = t z", ylabel="d loss / dm", title="Gradients")
for ax in axes:
    ax.axvline(0, color="k", lw=0.5)
    ax.legend(fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2.4 Exact limits at logits $\pm\infty$
#
# Infinite logits show up in practice (a masked output, an overflowing activation). The limits are clear:
# with $y = 0$ and $z \to -\infty$ the model is certain and right, so the loss is $0$; with $y = 1$ it is
# certain and wrong, so the loss is $+\infty$. Computing $y \log\sigma(z) + (1 - y)\log\sigma(-z)$ literally
# hits $0 \cdot (-\infty) = \mathrm{NaN}$ on the term whose label weight is 0. `jxent` treats that term as
# absent ($0 \cdot \log 0 = 0$), so it returns the limit, and its gradient $\sigma(z) - y$ is finite
# everywhere. (The `optax` column shows what the installed `optax` returns.)
#
# Large *finite* logits are the same story in float32: $1 - \sigma(100)$ rounds to $0$, so the naive
# $-\log(1 - \sigma(z))$ is `inf`, while the exact loss is $\operatorname{softplus}(100) = 100$.

# %%
print(f"optax {optax.__version__}")
print(f"{'logit':>6} {'label':>6} {'jxent loss':>11} {'optax loss':>11} {'jxent grad':>11}")
z = jnp.array([-jnp.inf, -jnp.inf, jnp.inf, jnp.inf])
y = jnp.array([0.0, 1.0, 0.0, 1.0])
ours = jxent.sigmoid_binary_cross_entropy(z, y)
theirs = optax.losses.sigmoid_binary_cross_entropy(z, y)
grads = jax.grad(lambda z: jxent.sigmoid_binary_cross_entropy(z, y).sum())(z)
for row in zip(z, y, ours, theirs, grads, strict=True):
    print("{:>6} {:>6} {:>11} {:>11} {:>11}".format(*(str(float(v)) for v in row)))

np.testing.assert_array_equal(ours, [0.0, np.inf, np.inf, 0.0])  # the exact limits, no NaN
np.testing.assert_array_equal(grads, [0.0, -1.0, 1.0, 0.0])  # sigma(z) - y at z = -inf, +inf
focal = jxent.sigmoid_focal_loss(z, y)  # the focal loss inherits the limits
np.testing.assert_array_equal(focal, [0.0, np.inf, np.inf, 0.0])

z32 = jnp.array([100.0, -100.0], dtype=jnp.float32)
y32 = jnp.array([0.0, 1.0], dtype=jnp.float32)
naive = -(y32 * jnp.log(sigmoid(z32)) + (1 - y32) * jnp.log(1 - sigmoid(z32)))
stable = jxent.sigmoid_binary_cross_entropy(z32, y32)
print(f"\nfloat32, z = +-100, wrong label:  naive = {np.asarray(naive)},  jxent = {np.asarray(stable)}")
assert np.isinf(naive).any() and np.allclose(stable, 100.0)
