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
# # 3. Focal loss
#
# The focal loss (Lin et al., [*Focal Loss for Dense Object Detection*](https://arxiv.org/abs/1708.02002),
# 2017) multiplies cross-entropy by a *modulating factor* $(1 - p_t)^\gamma$ that shrinks the loss of
# examples the model already classifies well, so that a flood of easy examples (the background in object
# detection) does not drown the few hard ones:
#
# $$\mathrm{FL}(p_t) = -\alpha_t\, (1 - p_t)^\gamma \log p_t .$$
#
# This notebook derives its gradient for the sigmoid and the softmax versions and checks both against
# `jax.grad` and `jax.jacfwd`, draws the classic loss-vs-probability plot for
# $\gamma \in \{0, 0.5, 1, 2, 5\}$, and shows what the $\alpha$ balancing does.

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
# ## 3.1 The sigmoid focal loss and its derivative
#
# For a logit $z$, $p = \sigma(z)$ and a hard label $y \in \{0, 1\}$, let $s = 2y - 1 \in \{-1, +1\}$. The
# probability of the true class is $p_t = y p + (1 - y)(1 - p) = \sigma(s z)$, and (torchvision's convention,
# which `jxent` follows) $\alpha_t = \alpha y + (1 - \alpha)(1 - y)$. Since
# $\mathrm{d}p_t / \mathrm{d}z = s\, p_t (1 - p_t)$ and
#
# $$\frac{\partial \mathrm{FL}}{\partial p_t}
#   = -\alpha_t\Big[-\gamma (1 - p_t)^{\gamma - 1}\log p_t + \frac{(1 - p_t)^\gamma}{p_t}\Big],$$
#
# the chain rule gives
#
# $$\boxed{\frac{\partial \mathrm{FL}}{\partial z}
#   = \alpha_t\, s\, (1 - p_t)^{\gamma}\,\big(\gamma\, p_t \log p_t - (1 - p_t)\big).}$$
#
# Check: for $\gamma = 0$ and $\alpha_t = 1$ this is $-s(1 - p_t)$, which is $p - 1$ for $y = 1$ and $p$ for
# $y = 0$: the binary cross-entropy gradient $\sigma(z) - y$. Two effects of $\gamma > 0$: the factor
# $(1 - p_t)^\gamma$ shrinks the gradient of well-classified examples ($p_t \to 1$), and the extra term
# $\gamma p_t \log p_t \le 0$ slightly *enlarges* it for badly classified ones (small $p_t$, where
# $(1 - p_t)^\gamma \approx 1$); see the right panel of the plot in 3.3.


# %%
def sigmoid_focal_grad_by_hand(z, y, gamma, alpha=None):
    s = 2 * y - 1
    p_t = jax.nn.sigmoid(s * z)
    alpha_t = 1.0 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
    return alpha_t * s * (1 - p_t) ** gamma * (gamma * p_t * jnp.log(p_t) - (1 - p_t))


@jax.jit
def autodiff(z, y, gamma, alpha):
    loss = lambda z: jxent.sigmoid_focal_loss(z, y, alpha=alpha, gamma=gamma)
    reverse = jax.grad(lambda z: loss(z).sum())(z)  # reverse mode: gradient of the sum
    forward = jnp.diag(jax.jacfwd(loss)(z))  # forward mode: the (diagonal) Jacobian
    return reverse, forward


z = rng.normal(size=16) * 3.0
y = (rng.uniform(size=16) < 0.5).astype(float)
for gamma in (0.0, 0.5, 1.0, 2.0, 5.0):
    for alpha in (None, 0.25):
        by_hand = sigmoid_focal_grad_by_hand(z, y, gamma, alpha)
        for autodiff_grad in autodiff(z, y, gamma, alpha):
            np.testing.assert_allclose(autodiff_grad, by_hand, rtol=1e-9, atol=1e-14)

# gamma = 0, no alpha: plain binary cross-entropy, gradient sigma(z) - y.
np.testing.assert_allclose(sigmoid_focal_grad_by_hand(z, y, 0.0), jax.nn.sigmoid(z) - y, rtol=1e-12)
np.testing.assert_allclose(
    jxent.sigmoid_focal_loss(z, y, gamma=0.0), jxent.sigmoid_binary_cross_entropy(z, y), rtol=1e-12
)
print("sigmoid focal gradient checked for gamma in {0, 0.5, 1, 2, 5}, alpha in {None, 0.25}")


# %% [markdown]
# ## 3.2 The softmax (multi-class) focal loss
#
# For logits $z \in \mathbb{R}^K$, $p = \operatorname{softmax}(z)$ and an integer label $y$,
# $\ell = -\alpha_y (1 - p_y)^\gamma \log p_y$. The only dependence on $z$ is through $p_y$, and from the
# softmax Jacobian (notebook 1) $\partial p_y / \partial z_j = p_y(\delta_{jy} - p_j)$. With the same
# $\partial \ell / \partial p_y$ as above,
#
# $$\frac{\partial \ell}{\partial z_j}
#   = -\alpha_y\Big[(1 - p_y)^\gamma - \gamma (1 - p_y)^{\gamma - 1} p_y \log p_y\Big](\delta_{jy} - p_j)
#   = \boxed{\alpha_y (1 - p_y)^{\gamma}\Big(1 - \frac{\gamma\, p_y \log p_y}{1 - p_y}\Big)(p_j - \delta_{jy}).}$$
#
# It is the cross-entropy gradient $p - e_y$ scaled by one positive number per example. $\alpha$ may be a
# vector of per-class weights.


# %%
def softmax_focal_grad_by_hand(z, labels, gamma, alpha=None):
    p = jxent.softmax(z)
    onehot = np.eye(z.shape[-1])[labels]
    p_y = jnp.sum(p * onehot, axis=-1, keepdims=True)
    alpha_y = 1.0 if alpha is None else jnp.asarray(alpha)[labels][:, None]
    scale = alpha_y * (1 - p_y) ** gamma * (1 - gamma * p_y * jnp.log(p_y) / (1 - p_y))
    return scale * (p - onehot)


K = 6
Z = rng.normal(size=(8, K)) * 2.0
labels = rng.integers(0, K, size=8)
class_alpha = rng.uniform(0.2, 1.0, size=K)


@jax.jit
def autodiff(z, labels, gamma, alpha):
    loss = lambda z: jxent.softmax_focal_loss(z, labels, alpha=alpha, gamma=gamma)
    reverse = jax.grad(lambda z: loss(z).sum())(z)
    forward = jnp.einsum("iik->ik", jax.jacfwd(loss)(z))  # [8, 8, K]: example i only moves loss i
    return reverse, forward


for gamma in (0.0, 0.5, 1.0, 2.0, 5.0):
    for alpha in (None, class_alpha):
        by_hand = softmax_focal_grad_by_hand(Z, labels, gamma, alpha)
        for autodiff_grad in autodiff(Z, labels, gamma, alpha):
            np.testing.assert_allclose(autodiff_grad, by_hand, rtol=1e-9, atol=1e-14)

# gamma = 0 without alpha is softmax cross-entropy.
np.testing.assert_allclose(
    jxent.softmax_focal_loss(Z, labels, gamma=0.0),
    jxent.softmax_cross_entropy_with_integer_labels(Z, labels),
    rtol=1e-12,
)
print("softmax focal gradient checked for gamma in {0, 0.5, 1, 2, 5}, with and without per-class alpha")

# %% [markdown]
# ## 3.3 Loss against the probability of the true class
#
# The classic figure of the paper: $\mathrm{FL}(p_t) = -(1 - p_t)^\gamma \log p_t$ for several $\gamma$
# ($\gamma = 0$ is cross-entropy). We compute each curve with `jxent.sigmoid_focal_loss` at the logit
# $z = \log(p_t / (1 - p_t))$ and label 1. With $\gamma = 2$, an example classified with $p_t = 0.9$ has
# a loss 100 times smaller than under cross-entropy, while a badly classified one ($p_t = 0.1$) keeps 81% of
# it. The right panel shows the same effect on the gradient with respect to the logit.

# %%
p_t = np.linspace(1e-3, 1 - 1e-4, 2000)
logit = np.log(p_t) - np.log1p(-p_t)
gammas = (0.0, 0.5, 1.0, 2.0, 5.0)


@jax.jit
def loss_and_grad(z, gamma):
    loss = lambda z: jxent.sigmoid_focal_loss(z, jnp.ones_like(z), gamma=gamma)
    return loss(z), jax.grad(lambda z: loss(z).sum())(z)  # elementwise loss, so this is d loss_i / d z_i


fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
for gamma in gammas:
    loss, grad = loss_and_grad(logit, gamma)
    np.testing.assert_allclose(loss, -((1 - p_t) ** gamma) * np.log(p_t), rtol=1e-8)
    label = "CE ($\\gamma = 0$)" if gamma == 0 else f"$\\gamma = {gamma:g}$"
    axes[0].plot(p_t, loss, lw=2, label=label)
    axes[1].plot(p_t, np.abs(grad), lw=2, label=label)
axes[0].set(
    xlabel="probability of the true class $p_t$",
    ylabel="loss",
    ylim=(0, 5),
    xlim=(0, 1),
    title="$\\mathrm{FL}(p_t) = -(1 - p_t)^\\gamma \\log p_t$",
)
axes[0].axvspan(0.6, 1.0, color="tab:green", alpha=0.08)
axes[0].text(0.8, 3.0, "well-classified\nexamples", ha="center", fontsize=10)
axes[1].set(
    xlabel="probability of the true class $p_t$",
    ylabel="|d loss / d logit|",
    xlim=(0, 1),
    title="Gradient with respect to the logit",
)
for ax in axes:
    ax.legend()
fig.tight_layout()
plt.show()

ratio = lambda p, g: float(
    jxent.sigmoid_focal_loss(np.log(p / (1 - p)), 1.0, gamma=g)
    / jxent.sigmoid_focal_loss(np.log(p / (1 - p)), 1.0, gamma=0.0)
)
np.testing.assert_allclose([ratio(0.9, 2.0), ratio(0.1, 2.0)], [0.01, 0.81], rtol=1e-10)

# %% [markdown]
# ## 3.4 $\alpha$ balancing
#
# $\alpha_t$ weights the positive class by $\alpha$ and the negative class by $1 - \alpha$. It balances the
# *number* of examples per class, while $\gamma$ balances *easy* against *hard* ones. The two interact: the
# paper's best setting is $\gamma = 2$ with $\alpha = 0.25$, which weights the rare positives *less*, because
# the modulating factor has already removed most of the loss of the abundant easy negatives.
#
# A toy batch shows this: 1000 easy negatives (predicted $p = 0.05$, so $p_t = 0.95$) and 10 hard positives
# ($p = 0.3$). Under cross-entropy the negatives carry most of the total loss, although each is nearly
# correct; with $\gamma = 2$ the positives dominate.

# %%
n_neg, n_pos = 1000, 10
z = np.concatenate([np.full(n_neg, np.log(0.05 / 0.95)), np.full(n_pos, np.log(0.3 / 0.7))])
y = np.concatenate([np.zeros(n_neg), np.ones(n_pos)])

# alpha_t multiplies the unweighted loss: alpha for y = 1, 1 - alpha for y = 0.
for gamma in (0.0, 2.0):
    np.testing.assert_allclose(
        jxent.sigmoid_focal_loss(z, y, alpha=0.25, gamma=gamma),
        np.where(y == 1, 0.25, 0.75) * jxent.sigmoid_focal_loss(z, y, gamma=gamma),
        rtol=1e-12,
    )

settings = [
    ("CE", 0.0, None),
    ("CE, $\\alpha$=0.25", 0.0, 0.25),
    ("FL $\\gamma$=2", 2.0, None),
    ("FL $\\gamma$=2, $\\alpha$=0.25", 2.0, 0.25),
]
shares = []
print(f"{'setting':<24} {'negatives':>10} {'positives':>10} {'positive share':>15}")
for name, gamma, alpha in settings:
    loss = jxent.sigmoid_focal_loss(z, y, alpha=alpha, gamma=gamma)
    neg, pos = float(loss[:n_neg].sum()), float(loss[n_neg:].sum())
    shares.append(pos / (neg + pos))
    print(f"{name.replace('$', '').replace(chr(92), ''):<24} {neg:10.3f} {pos:10.3f} {shares[-1]:15.1%}")
assert shares[0] < 0.25 and shares[2] > 0.9

fig, ax = plt.subplots(figsize=(7.5, 3.4))
names = [s[0] for s in settings]
ax.barh(names, 1 - np.array(shares), color="tab:gray", label="1000 easy negatives")
ax.barh(names, shares, left=1 - np.array(shares), color="tab:red", label="10 hard positives")
ax.set(xlim=(0, 1), xlabel="share of the total loss", title="Who contributes the loss?")
ax.invert_yaxis()
ax.legend(loc="lower left", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# `jxent.softmax_focal_loss` takes `alpha` as one weight per class (or a scalar), the multi-class analogue
# of $\alpha_t$; the gradient check in 3.2 covered it. Both functions are drop-in replacements for the
# same-named `optax` loss where `optax` has one, and take `reduction="mean"` for a training step.
