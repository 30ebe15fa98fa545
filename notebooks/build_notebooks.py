"""Writes and executes the jxent notebooks (the notebook sources live here, as readable Python strings).

Usage::

  python notebooks/build_notebooks.py                 # write and execute all five notebooks
  python notebooks/build_notebooks.py 03 05           # only the notebooks whose names start with 03 or 05
  python notebooks/build_notebooks.py --no-execute    # write them without outputs

Executed outputs (text and PNG plots) are stored in the ``.ipynb`` files so they show on GitHub. The kernel is the
Python running this script (see :func:`kernel_manager`), so a virtual environment's notebooks run in that
environment. Needs the ``notebooks`` extra: ``pip install -e ".[notebooks]"``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 600  # per cell


def md(text: str):
    return nbformat.v4.new_markdown_cell(dedent(text).strip())


def code(text: str):
    return nbformat.v4.new_code_cell(dedent(text).strip())


def setup(x64: bool = True, extra: str = ""):
    """The first code cell of every notebook."""
    lines = [
        "import jax",
        "import jax.numpy as jnp",
        "import matplotlib.pyplot as plt",
        "import numpy as np",
        "",
        "import jxent",
        *([extra] if extra else []),
        "",
    ]
    if x64:
        lines.append("jax.config.update('jax_enable_x64', True)  # float64 keeps the gradient checks tight")
    lines += [
        "plt.rcParams.update({'figure.dpi': 100, 'axes.grid': True, 'grid.alpha': 0.3})",
        "rng = np.random.default_rng(0)",
        "print(f'jax {jax.__version__}, jxent {jxent.__version__}, backend: {jax.default_backend()}')",
    ]
    return code("\n".join(lines))


# ----------------------------------------------------------------------------------------------------------------
# 01: softmax and cross-entropy
# ----------------------------------------------------------------------------------------------------------------
def softmax_cross_entropy() -> list:
    return [
        md(r"""
        # 1. Softmax and cross-entropy

        This notebook derives, by hand, the derivatives that every softmax cross-entropy implementation relies on,
        and checks each derivation against JAX's automatic differentiation of the `jxent` functions:

        1. the Jacobian of the softmax, $\operatorname{diag}(p) - p p^\top$;
        2. the gradient of the cross-entropy with respect to the logits, $\operatorname{softmax}(z) - y$;
        3. the Hessian of log-sum-exp (and of the cross-entropy), again $\operatorname{diag}(p) - p p^\top$;
        4. why log-sum-exp is computed with a max-shift, shown with a float32 overflow;
        5. worked examples: cat/dog/horse, four students and two models, and a fruit container, in nats,
           base-10 units and bits.

        Every check is an `assert` (or `np.testing.assert_*`), so the notebook fails if a derivation and the
        library disagree. It is executed in CI by `tests/test_notebooks.py`.
        """),
        setup(),
        md(r"""
        ## 1.1 The softmax and its Jacobian

        For logits $z \in \mathbb{R}^K$ the softmax is

        $$p_i = \operatorname{softmax}(z)_i = \frac{e^{z_i}}{\sum_{k} e^{z_k}} = \frac{e^{z_i}}{S}.$$

        By the quotient rule, with $\partial S / \partial z_j = e^{z_j}$,

        $$\frac{\partial p_i}{\partial z_j}
          = \frac{\delta_{ij} e^{z_i} S - e^{z_i} e^{z_j}}{S^2}
          = p_i \delta_{ij} - p_i p_j,
          \qquad\text{i.e.}\qquad
          J = \frac{\partial p}{\partial z} = \operatorname{diag}(p) - p p^\top .$$

        Three consequences we can check too:

        * $J$ is **symmetric**;
        * $J\mathbf{1} = p - p \sum_j p_j = 0$: adding the same constant to every logit leaves $p$ unchanged
          (shift invariance), so $\mathbf{1}$ is in the null space;
        * $J$ is **positive semi-definite**: $v^\top J v = \sum_i p_i v_i^2 - (\sum_i p_i v_i)^2$ is the variance
          of $v$ under $p$, which is $\ge 0$.
        """),
        code(r"""
        z = rng.normal(size=5) * 2.0
        p = jxent.softmax(z)

        J_by_hand = jnp.diag(p) - jnp.outer(p, p)
        J_forward = jax.jit(jax.jacfwd(jxent.softmax))(z)   # forward-mode autodiff
        J_reverse = jax.jit(jax.jacrev(jxent.softmax))(z)   # reverse-mode autodiff

        np.testing.assert_allclose(J_forward, J_by_hand, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(J_reverse, J_by_hand, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(J_by_hand, J_by_hand.T)                     # symmetric
        np.testing.assert_allclose(J_by_hand @ np.ones(5), 0.0, atol=1e-15)    # shift invariance
        eigenvalues = np.linalg.eigvalsh(J_by_hand)
        assert eigenvalues.min() > -1e-15, eigenvalues                         # positive semi-definite
        print("p =", np.round(p, 4))
        print("eigenvalues of J:", np.round(eigenvalues, 5) + 0.0)
        """),
        code(r"""
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw={'width_ratios': [1, 1.25]})
        axes[0].bar(range(5), p, color='tab:blue')
        axes[0].set(title='p = softmax(z)', xlabel='class', xticks=range(5))
        lim = float(np.abs(J_by_hand).max())
        im = axes[1].imshow(J_by_hand, cmap='RdBu_r', vmin=-lim, vmax=lim)
        axes[1].set(title=r'Jacobian $\mathrm{diag}(p) - pp^\top$', xlabel='j (logit)', ylabel='i (probability)',
                    xticks=range(5), yticks=range(5))
        axes[1].grid(False)
        fig.colorbar(im, ax=axes[1])
        fig.tight_layout()
        plt.show()
        """),
        md(r"""
        ## 1.2 The gradient of the cross-entropy: $\operatorname{softmax}(z) - y$

        For a target distribution $y$ (one-hot or soft, $\sum_i y_i = 1$) the cross-entropy of the predicted
        distribution $p = \operatorname{softmax}(z)$ is

        $$\mathrm{CE}(z, y) = -\sum_i y_i \log p_i, \qquad \log p_i = z_i - \operatorname{lse}(z), \qquad
          \operatorname{lse}(z) = \log \sum_k e^{z_k},$$

        so $\mathrm{CE}(z, y) = \big(\sum_i y_i\big)\operatorname{lse}(z) - \sum_i y_i z_i$. The derivative of
        log-sum-exp is the softmax, $\partial \operatorname{lse} / \partial z_j = e^{z_j} / \sum_k e^{z_k} = p_j$,
        hence

        $$\boxed{\frac{\partial\, \mathrm{CE}}{\partial z_j} = \Big(\sum_i y_i\Big) p_j - y_j = p_j - y_j.}$$

        The same result through the chain rule and the Jacobian above:
        $\frac{\partial \mathrm{CE}}{\partial z_j} = -\sum_i \frac{y_i}{p_i} \frac{\partial p_i}{\partial z_j}
        = -\sum_i \frac{y_i}{p_i}\,(p_i\delta_{ij} - p_i p_j) = -y_j + p_j \sum_i y_i$.

        The gradient is bounded (each entry lies in $[-1, 1]$), and it is zero exactly when $p = y$.
        """),
        code(r"""
        Z = rng.normal(size=(4, 5)) * 3.0                  # 4 examples, 5 classes
        T = rng.dirichlet(np.ones(5), size=4)              # soft targets, rows sum to 1
        labels = np.array([0, 3, 1, 4])                    # integer targets
        P = jxent.softmax(Z)

        # Soft targets: d/dz sum_i CE(z_i, t_i) = softmax(z) - t. (jax.jit: compile each check once.)
        soft_loss = lambda z: jxent.softmax_cross_entropy(z, T).sum()
        grad_soft = jax.jit(jax.grad(soft_loss))(Z)
        np.testing.assert_allclose(grad_soft, P - T, rtol=1e-10, atol=1e-14)

        # Integer targets: softmax(z) - onehot(y); and "mean" divides by the number of examples.
        int_loss = lambda z: jxent.softmax_cross_entropy_with_integer_labels(z, labels, reduction='mean')
        grad_int = jax.jit(jax.grad(int_loss))(Z)
        np.testing.assert_allclose(grad_int, (P - np.eye(5)[labels]) / 4, rtol=1e-10, atol=1e-14)

        # The chain rule through the softmax Jacobian gives the same vector.
        J = jax.jit(jax.vmap(jax.jacfwd(jxent.softmax)))(Z)             # [4, 5, 5]
        grad_chain = -np.einsum('bi,bij->bj', T / P, J)
        np.testing.assert_allclose(grad_chain, P - T, rtol=1e-10, atol=1e-14)

        # Forward mode agrees with reverse mode.
        grad_fwd = jax.jit(jax.jacfwd(soft_loss))(Z)
        np.testing.assert_allclose(grad_fwd, grad_soft, rtol=1e-10, atol=1e-14)

        # Targets that do not sum to 1: (sum y) p - y.
        T2 = 3.0 * T
        grad_unnormalised = jax.jit(jax.grad(lambda z: jxent.softmax_cross_entropy(z, T2).sum()))(Z)
        np.testing.assert_allclose(grad_unnormalised, T2.sum(-1, keepdims=True) * P - T2, rtol=1e-10, atol=1e-14)
        print('softmax(z) - y checked for soft, integer and unnormalised targets')
        print(np.round(grad_int * 4, 3))
        """),
        md(r"""
        ## 1.3 The Hessian: $\nabla^2 \operatorname{lse}(z) = \operatorname{diag}(p) - p p^\top$

        The gradient of $\operatorname{lse}$ is $p = \operatorname{softmax}(z)$, so its Hessian is the Jacobian of
        the softmax from 1.1:

        $$\nabla^2 \operatorname{lse}(z) = \frac{\partial p}{\partial z} = \operatorname{diag}(p) - p p^\top .$$

        The cross-entropy $\big(\sum_i y_i\big)\operatorname{lse}(z) - y^\top z$ differs from it by a linear term, so
        it has the same Hessian (times $\sum_i y_i$). Because the Hessian is positive semi-definite, the
        cross-entropy is **convex in the logits**; it is not strictly convex, since the Hessian has the eigenvalue 0
        with eigenvector $\mathbf{1}$ (shifting all logits changes nothing). `jxent` gets second derivatives from
        its closed-form `custom_jvp`s, so `jax.hessian` works directly.
        """),
        code(r"""
        z = rng.normal(size=6) * 2.0
        p = jxent.softmax(z)
        H_by_hand = jnp.diag(p) - jnp.outer(p, p)

        H_lse = jax.jit(jax.hessian(jxent.logsumexp))(z)
        np.testing.assert_allclose(H_lse, H_by_hand, rtol=1e-10, atol=1e-15)

        label = 2
        H_ce = jax.jit(jax.hessian(lambda z: jxent.softmax_cross_entropy_with_integer_labels(z, label)))(z)
        np.testing.assert_allclose(H_ce, H_by_hand, rtol=1e-10, atol=1e-15)

        eigenvalues, eigenvectors = np.linalg.eigh(H_by_hand)
        assert abs(eigenvalues[0]) < 1e-14 and eigenvalues[1] > 0          # one zero eigenvalue, the rest positive
        np.testing.assert_allclose(np.abs(eigenvectors[:, 0]), 1 / np.sqrt(6), rtol=1e-8)  # along (1, ..., 1)
        print('eigenvalues of the Hessian:', np.round(eigenvalues, 5) + 0.0)
        """),
        md(r"""
        ## 1.4 Why log-sum-exp is max-shifted

        Computed literally, $\log \sum_k e^{z_k}$ breaks down in floating point long before the answer does.
        In float32 the largest finite number is $3.4 \times 10^{38} \approx e^{88.72}$, so $e^{z}$ **overflows** to
        `inf` for $z > 88.72$. At the other end the smallest normal float32 is $1.2 \times 10^{-38} \approx
        e^{-87.3}$; XLA (like most accelerator code) flushes smaller, subnormal results to zero, so for logits
        below about $-87$ the terms $e^{z_k}$ **underflow** to 0, one after another: the sum first loses terms
        (a wrong answer), then becomes 0 and the logarithm returns $-\infty$. The softmax
        $e^{z_i} / \sum_k e^{z_k}$ becomes $\infty/\infty$ or $0/0$: NaN.

        The fix is an exact identity. For any constant $m$,

        $$\operatorname{lse}(z) = m + \log \sum_k e^{z_k - m},
          \qquad \operatorname{softmax}(z)_i = \frac{e^{z_i - m}}{\sum_k e^{z_k - m}} .$$

        With $m = \max_k z_k$ every exponent is $\le 0$ (nothing overflows) and the largest term is exactly
        $e^0 = 1$, so the sum lies in $[1, K]$ and its logarithm is always finite. `jxent.logsumexp` does this.
        """),
        code(r"""
        def naive_logsumexp(z):
            return jnp.log(jnp.sum(jnp.exp(z), axis=-1))

        def naive_softmax(z):
            e = jnp.exp(z)
            return e / jnp.sum(e, axis=-1, keepdims=True)

        f32 = np.finfo(np.float32)
        print(f'float32: exp overflows above {np.log(f32.max):.2f}; '
              f'results below e^{np.log(f32.tiny):.2f} are subnormal and flushed to 0')
        for row in ([1.0, 2.0, 3.0], [100.0, 101.0, 102.0], [-200.0, -201.0, -202.0]):
            z32 = jnp.array(row, dtype=jnp.float32)
            exact = np.logaddexp.reduce(np.array(row, dtype=np.float64))      # float64 reference
            print(f'z = {row}:  naive lse = {float(naive_logsumexp(z32)):>10.4f}   '
                  f'jxent.logsumexp = {float(jxent.logsumexp(z32)):>10.4f}   exact = {exact:.4f}   '
                  f'naive softmax = {np.asarray(naive_softmax(z32))}')

        big = jnp.array([100.0, 101.0, 102.0], dtype=jnp.float32)
        small = jnp.array([-200.0, -201.0, -202.0], dtype=jnp.float32)
        assert jnp.isposinf(naive_logsumexp(big)) and jnp.isneginf(naive_logsumexp(small))
        assert jnp.isnan(naive_softmax(big)).all() and jnp.isnan(naive_softmax(small)).all()
        np.testing.assert_allclose(jxent.logsumexp(big), np.logaddexp.reduce([100.0, 101.0, 102.0]), rtol=1e-6)
        np.testing.assert_allclose(jxent.logsumexp(small), np.logaddexp.reduce([-200.0, -201.0, -202.0]), rtol=1e-6)
        np.testing.assert_allclose(jxent.softmax(big), jxent.softmax(big - 100.0), rtol=1e-6)   # shift invariance
        # Cross-entropy on such logits is finite too (the label is class 0 here).
        print('cross-entropy of the big logits, label 0:',
              float(jxent.softmax_cross_entropy_with_integer_labels(big, 0)))
        """),
        code(r"""
        t = np.linspace(-150, 150, 1201)
        Zt = jnp.asarray(np.stack([t, t - 1, t - 2], axis=-1), dtype=jnp.float32)   # logits (t, t-1, t-2)
        offset_exact = np.log1p(np.exp(-1.0) + np.exp(-2.0))                          # lse(z) - max(z), exactly
        naive = np.asarray(naive_logsumexp(Zt)) - t
        shifted = np.asarray(jxent.logsumexp(Zt)) - t

        overflow = np.log(f32.max) - offset_exact      # the sum of the three exponentials overflows
        underflow = np.log(f32.tiny)                    # every exponential is flushed to 0
        fig, ax = plt.subplots(figsize=(8.5, 3.8))
        ax.axvspan(overflow, t.max(), color='tab:red', alpha=0.12, label='naive: sum overflows, lse = +inf')
        ax.axvspan(t.min(), underflow, color='tab:purple', alpha=0.12, label='naive: every term is 0, lse = -inf')
        ax.axvspan(underflow, underflow + 2, color='tab:orange', alpha=0.2, label='naive: some terms are 0')
        ax.plot(t, shifted, lw=4, color='tab:green', alpha=0.6, label='jxent.logsumexp (max-shifted)')
        ax.plot(t, naive, lw=1.5, color='black', label='naive log(sum(exp(z)))')
        ax.axhline(offset_exact, ls=':', color='gray')
        ax.set(xlabel='t, where z = (t, t-1, t-2) in float32', ylabel='lse(z) - max(z)', ylim=(-0.02, 0.55),
               title='log-sum-exp in float32: the naive formula only works for about -85 < t < 88')
        ax.legend(loc='lower center', bbox_to_anchor=(0.62, 0.03), fontsize=8, ncol=2)
        fig.tight_layout()
        plt.show()

        inside = (t > underflow + 2) & (t < overflow)
        assert np.all(np.isfinite(shifted)) and np.allclose(shifted, offset_exact, atol=1e-4)
        assert np.all(~np.isfinite(naive[t > overflow])) and np.allclose(naive[inside], offset_exact, atol=1e-3)
        """),
        md(r"""
        ## 1.5 Worked examples

        ### Cat, dog, horse

        A classifier sees a picture of a **dog** and predicts $(0.4, 0.4, 0.2)$ for (cat, dog, horse). With a
        one-hot target only the true class's term survives:
        $\mathrm{CE} = -\sum_i y_i \ln p_i = -\ln 0.4 = 0.916$ nats. For a **horse** predicted as
        $(0.1, 0.2, 0.7)$ the loss is $-\ln 0.7 = 0.357$ nats: the more probability on the right class, the
        smaller the loss. `jxent.categorical_cross_entropy` takes probabilities (not logits) and one-hot or
        integer targets.
        """),
        code(r"""
        classes = ['cat', 'dog', 'horse']
        pred_dog_image = jnp.array([0.4, 0.4, 0.2])
        pred_horse_image = jnp.array([0.1, 0.2, 0.7])
        onehot_dog = jnp.array([0.0, 1.0, 0.0])
        onehot_horse = jnp.array([0.0, 0.0, 1.0])

        ce_dog = jxent.categorical_cross_entropy(pred_dog_image, onehot_dog)
        ce_horse = jxent.categorical_cross_entropy(pred_horse_image, onehot_horse)
        print(f'dog image:   CE = {float(ce_dog):.3f} nats   (-ln 0.4 = {-np.log(0.4):.3f})')
        print(f'horse image: CE = {float(ce_horse):.3f} nats   (-ln 0.7 = {-np.log(0.7):.3f})')
        assert round(float(ce_dog), 3) == 0.916 and round(float(ce_horse), 3) == 0.357

        # Integer labels give the same numbers, for a batch of both images at once.
        batch = jxent.categorical_cross_entropy(jnp.stack([pred_dog_image, pred_horse_image]),
                                                jnp.array([classes.index('dog'), classes.index('horse')]))
        np.testing.assert_allclose(batch, [ce_dog, ce_horse], rtol=1e-12)
        """),
        md(r"""
        ### Four students, two models (illustrative numbers)

        Binary cross-entropy is the $K = 2$ case: for a true outcome $y \in \{0, 1\}$ and a predicted probability
        $p$ of $y = 1$,

        $$\mathrm{BCE}(p, y) = -\big[y \ln p + (1 - y)\ln(1 - p)\big].$$

        The numbers below are **illustrative, made up for this example**: four students with their true outcome
        (1 = pass, 0 = fail) and the probability of passing predicted by two models, A and B.

        | student | passed? | model A: P(pass) | model B: P(pass) |
        |:-:|:-:|:-:|:-:|
        | 1 | 1 | 0.9 | 0.6 |
        | 2 | 0 | 0.2 | 0.4 |
        | 3 | 1 | 0.7 | 0.5 |
        | 4 | 0 | 0.4 | 0.7 |

        Model A puts more probability on what actually happened for every student, so its mean cross-entropy is
        lower. We compute it by hand in NumPy and with `jxent.binary_cross_entropy`, in three units. The unit is
        only the base of the logarithm: $\log_b x = \ln x / \ln b$, so a loss in nats divided by $\ln 10$ is the
        loss in base-10 units (hartleys), and divided by $\ln 2$ it is in bits.
        """),
        code(r"""
        passed = np.array([1.0, 0.0, 1.0, 0.0])
        model_a = np.array([0.9, 0.2, 0.7, 0.4])
        model_b = np.array([0.6, 0.4, 0.5, 0.7])

        def bce_by_hand(p, y, log=np.log):
            return -(y * log(p) + (1 - y) * log(1 - p))

        print(f"{'':>8} {'nats':>8} {'base 10':>8} {'bits':>8}   per student (nats)")
        for name, pred in [('model A', model_a), ('model B', model_b)]:
            per_student = jxent.binary_cross_entropy(pred, passed)
            mean_nats = float(jxent.binary_cross_entropy(pred, passed, reduction='mean'))
            # By hand, in NumPy, once per unit.
            np.testing.assert_allclose(per_student, bce_by_hand(pred, passed), rtol=1e-12)
            np.testing.assert_allclose(mean_nats, bce_by_hand(pred, passed).mean(), rtol=1e-12)
            np.testing.assert_allclose(mean_nats / np.log(10), bce_by_hand(pred, passed, np.log10).mean(), rtol=1e-12)
            np.testing.assert_allclose(mean_nats / np.log(2), bce_by_hand(pred, passed, np.log2).mean(), rtol=1e-12)
            # Binary CE is categorical CE over the two classes (fail, pass).
            two_class = jxent.categorical_cross_entropy(np.stack([1 - pred, pred], -1), passed.astype(int))
            np.testing.assert_allclose(two_class, per_student, rtol=1e-12)
            print(f'{name:>8} {mean_nats:8.4f} {mean_nats / np.log(10):8.4f} {mean_nats / np.log(2):8.4f}   '
                  f'{np.round(per_student, 4)}')

        loss_a = float(jxent.binary_cross_entropy(model_a, passed, reduction='mean'))
        loss_b = float(jxent.binary_cross_entropy(model_b, passed, reduction='mean'))
        assert loss_a < loss_b
        np.testing.assert_allclose(loss_a, -np.mean(np.log([0.9, 0.8, 0.7, 0.6])), rtol=1e-12)
        """),
        code(r"""
        fig, ax = plt.subplots(figsize=(7, 3.2))
        x = np.arange(1, 5)
        for offset, (name, pred) in zip((-0.18, 0.18), [('model A', model_a), ('model B', model_b)]):
            ax.bar(x + offset, jxent.binary_cross_entropy(pred, passed), width=0.36, label=name)
        ax.set(xticks=x, xticklabels=[f'student {i}\n({"pass" if y else "fail"})' for i, y in zip(x, passed)],
               ylabel='BCE (nats)', title='Per-student cross-entropy (illustrative numbers)')
        ax.legend()
        fig.tight_layout()
        plt.show()
        """),
        md(r"""
        ### A fruit container (illustrative numbers)

        Cross-entropy compares whole distributions, not only one-hot targets. **Illustrative numbers:** a container
        holds 10 fruits: 5 apples, 3 bananas and 2 cherries, so the true distribution of a randomly drawn fruit is
        $q = (0.5, 0.3, 0.2)$. A model predicts $p = (0.4, 0.4, 0.2)$. Then

        $$H(q, p) = -\sum_i q_i \log p_i = -(0.5 \log 0.4 + 0.3 \log 0.4 + 0.2 \log 0.2),$$

        which we evaluate in three bases: base-10 logarithms (as some textbook versions of this example do), natural
        logarithms (nats, what jxent returns) and base-2 logarithms (bits). For reference, the entropy $H(q) = -\sum_i q_i \log q_i$ is the smallest cross-entropy
        any prediction can reach (notebook 4 shows $H(q, p) = H(q) + \mathrm{KL}(q \,\|\, p)$).
        """),
        code(r"""
        fruits = ['apple', 'banana', 'cherry']
        q = np.array([5, 3, 2]) / 10          # true distribution in the container
        p = np.array([0.4, 0.4, 0.2])         # predicted distribution

        by_hand = {
            'base 10': -np.sum(q * np.log10(p)),
            'nats': -np.sum(q * np.log(p)),
            'bits': -np.sum(q * np.log2(p)),
        }
        ce_nats = float(jxent.categorical_cross_entropy(p, q))          # probability targets
        from_jxent = {'base 10': ce_nats / np.log(10), 'nats': ce_nats, 'bits': ce_nats / np.log(2)}
        entropy_nats = float(jxent.entropy(q))

        print(f"{'unit':>8} {'by hand':>9} {'jxent':>9} {'H(q)':>9}")
        for unit, scale in [('base 10', np.log(10)), ('nats', 1.0), ('bits', np.log(2))]:
            np.testing.assert_allclose(from_jxent[unit], by_hand[unit], rtol=1e-12)
            print(f'{unit:>8} {by_hand[unit]:9.4f} {from_jxent[unit]:9.4f} {entropy_nats / scale:9.4f}')
        assert ce_nats > entropy_nats
        np.testing.assert_allclose(by_hand['base 10'], 0.4581, atol=5e-5)
        """),
    ]


# ----------------------------------------------------------------------------------------------------------------
# 02: binary cross-entropy and the sigmoid
# ----------------------------------------------------------------------------------------------------------------
def binary_cross_entropy() -> list:
    return [
        md(r"""
        # 2. Binary cross-entropy and the sigmoid

        1. The sigmoid, and the gradient of binary cross-entropy on a logit: $\sigma(z) - y$ (also with
           `pos_weight`, and for the probability form).
        2. Why cross-entropy beats mean squared error on a sigmoid output: its gradient does not vanish when the
           model is confidently wrong.
        3. Hinge loss next to cross-entropy (logistic loss), as functions of the margin.
        4. Exact limits at logits $\pm\infty$: `jxent` returns $0$ or $+\infty$ where `optax` returns NaN.

        Every derivation is checked against `jax.grad` with assertions.
        """),
        setup(extra="import optax"),
        md(r"""
        ## 2.1 The gradient of binary cross-entropy: $\sigma(z) - y$

        The sigmoid $\sigma(z) = 1 / (1 + e^{-z})$ satisfies $\sigma(-z) = 1 - \sigma(z)$ and
        $\sigma'(z) = \sigma(z)\,(1 - \sigma(z))$. For a logit $z$ and a label $y \in [0, 1]$,

        $$\ell(z, y) = -\big[y \log \sigma(z) + (1 - y) \log(1 - \sigma(z))\big]
                     = y\, \operatorname{softplus}(-z) + (1 - y)\, \operatorname{softplus}(z)
                     = \operatorname{softplus}(z) - y z,$$

        using $-\log\sigma(z) = \log(1 + e^{-z}) = \operatorname{softplus}(-z)$ and
        $\operatorname{softplus}(-z) = \operatorname{softplus}(z) - z$. Since
        $\operatorname{softplus}'(z) = \sigma(z)$,

        $$\boxed{\frac{\partial \ell}{\partial z} = \sigma(z) - y.}$$

        The same form as softmax cross-entropy ($p - y$), and for the same reason: the sigmoid is the softmax of
        the two logits $(0, z)$.

        **`pos_weight`** $w_+$ scales the positive term, $\ell = -[w_+ y \log\sigma(z) + (1-y)\log(1-\sigma(z))]$,
        so $\partial\ell/\partial z = -w_+ y\,(1 - \sigma(z)) + (1 - y)\,\sigma(z)
        = (1 - y)\,\sigma(z) - w_+ y\, \sigma(-z)$.

        **On probabilities** ($p = \sigma(z)$ given directly, `jxent.binary_cross_entropy`),
        $\partial\ell/\partial p = -y/p + (1-y)/(1-p) = (p - y) / (p(1-p))$; multiplied by
        $\mathrm{d}p/\mathrm{d}z = p(1-p)$ it gives $\sigma(z) - y$ again.
        """),
        code(r"""
        sigmoid = jax.nn.sigmoid
        z = rng.normal(size=12) * 4.0
        y = rng.uniform(size=12)                      # soft labels in [0, 1]
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
        print('sigma(z) - y checked (soft labels, pos_weight, probability form)')
        """),
        md(r"""
        ## 2.2 Cross-entropy vs mean squared error on a sigmoid

        Why not train a sigmoid output with squared error, $\ell_{\text{MSE}} = (\sigma(z) - y)^2$? By the chain
        rule,

        $$\frac{\partial \ell_{\text{MSE}}}{\partial z} = 2\,(\sigma(z) - y)\,\sigma(z)\,(1 - \sigma(z)),
          \qquad
          \frac{\partial \ell_{\text{CE}}}{\partial z} = \sigma(z) - y .$$

        Take a positive example ($y = 1$) that the model gets confidently wrong, $z \to -\infty$: then
        $\sigma(z) \to 0$ and the MSE gradient $\approx -2\sigma(z) \to 0$. **The worse the mistake, the weaker the
        signal to fix it**: the factor $\sigma'(z)$ of the saturated sigmoid kills it. Cross-entropy's $\log$
        cancels that factor exactly, so its gradient tends to $-1$, its largest magnitude. (This is the argument of
        Goodfellow, Bengio and Courville, *Deep Learning*, §6.2.2.)
        """),
        code(r"""
        def mse(z, y):
            return (sigmoid(z) - y) ** 2

        zs = np.linspace(-10, 10, 401)
        ones = np.ones_like(zs)
        ce_grad = jax.jit(jax.vmap(jax.grad(lambda z: jxent.sigmoid_binary_cross_entropy(z, 1.0))))(zs)
        mse_grad = jax.jit(jax.vmap(jax.grad(lambda z: mse(z, 1.0))))(zs)
        np.testing.assert_allclose(ce_grad, sigmoid(zs) - 1, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(mse_grad, 2 * (sigmoid(zs) - 1) * sigmoid(zs) * (1 - sigmoid(zs)),
                                   rtol=1e-10, atol=1e-15)
        for z0 in (-2.0, -5.0, -10.0):
            i = np.argmin(np.abs(zs - z0))
            print(f'y = 1, z = {z0:6.1f}:  dCE/dz = {float(ce_grad[i]):+.4f}   dMSE/dz = {float(mse_grad[i]):+.6f}')
        i = np.argmin(np.abs(zs + 10))
        assert abs(ce_grad[i]) > 0.99 and abs(mse_grad[i]) < 1e-3

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        axes[0].plot(zs, jxent.sigmoid_binary_cross_entropy(zs, ones), label='cross-entropy')
        axes[0].plot(zs, mse(zs, ones), label='squared error $(\\sigma(z) - 1)^2$')
        axes[0].set(xlabel='logit z (true label y = 1)', ylabel='loss', title='Loss for a positive example',
                    ylim=(0, 5))
        axes[1].plot(zs, np.abs(ce_grad), label='cross-entropy: $|\\sigma(z) - 1|$')
        axes[1].plot(zs, np.abs(mse_grad), label='squared error: $|2(\\sigma - 1)\\sigma(1 - \\sigma)|$')
        axes[1].set(xlabel='logit z (true label y = 1)', ylabel='|d loss / dz|', title='Gradient magnitude')
        for ax in axes:
            ax.axvspan(-10, -3, color='tab:red', alpha=0.08)
            ax.legend(fontsize=9)
        axes[1].annotate('confidently wrong:\nMSE gradient vanishes', xy=(-7, 0.02), xytext=(-9.5, 0.45), fontsize=9,
                         arrowprops=dict(arrowstyle='->'))
        fig.tight_layout()
        plt.show()
        """),
        md(r"""
        ## 2.3 Hinge loss and cross-entropy, side by side

        Write the label as $t = 2y - 1 \in \{-1, +1\}$ and the **margin** as $m = t z$ (positive when the sign of
        the logit is right). Then binary cross-entropy is the *logistic loss* of the margin,

        $$\ell_{\text{CE}} = \log(1 + e^{-m}) = \operatorname{softplus}(-m),\qquad
          \frac{\partial \ell_{\text{CE}}}{\partial m} = -\sigma(-m),$$

        while the hinge loss of support-vector machines is

        $$\ell_{\text{hinge}} = \max(0,\, 1 - m), \qquad
          \frac{\partial \ell_{\text{hinge}}}{\partial m} = \begin{cases} -1 & m < 1 \\ 0 & m > 1. \end{cases}$$

        Both are convex upper bounds of the 0-1 loss (cross-entropy after dividing by $\ln 2$, i.e. in bits).
        The hinge loss is exactly 0 beyond the margin, so well-classified points stop contributing (sparse
        support vectors) but it yields no probabilities; cross-entropy never reaches 0, keeps a small push on every
        example, and its minimiser is the true conditional probability $\sigma(z) = P(y = 1 \mid x)$.
        """),
        code(r"""
        margins = np.linspace(-3, 4, 701)
        z = margins                      # take t = +1 (y = 1), so m = z
        ce = jxent.sigmoid_binary_cross_entropy(z, np.ones_like(z))
        hinge = optax.losses.hinge_loss(z, np.ones_like(z))

        # CE as a function of the margin, for both signs of the label.
        for y in (0.0, 1.0):
            t = 2 * y - 1
            zz = rng.normal(size=50) * 3
            np.testing.assert_allclose(jxent.sigmoid_binary_cross_entropy(zz, np.full(50, y)),
                                       jax.nn.softplus(-t * zz), rtol=1e-12)
        np.testing.assert_allclose(hinge, np.maximum(0.0, 1.0 - margins), atol=1e-15)
        ce_grad = jax.jit(jax.vmap(jax.grad(lambda m: jxent.sigmoid_binary_cross_entropy(m, 1.0))))(margins)
        hinge_grad = jax.jit(jax.vmap(jax.grad(lambda m: optax.losses.hinge_loss(m, 1.0))))(margins)
        np.testing.assert_allclose(ce_grad, -sigmoid(-margins), rtol=1e-10)
        np.testing.assert_allclose(hinge_grad[margins < 0.99], -1.0)
        np.testing.assert_allclose(hinge_grad[margins > 1.01], 0.0)

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        axes[0].plot(margins, (margins <= 0).astype(float), color='gray', lw=1, label='0-1 loss')
        axes[0].plot(margins, hinge, label='hinge  max(0, 1 - m)')
        axes[0].plot(margins, ce, label='cross-entropy (nats)  log(1 + e$^{-m}$)')
        axes[0].plot(margins, ce / np.log(2), ls='--', label='cross-entropy (bits)')
        axes[0].set(xlabel='margin m = t z', ylabel='loss', title='Losses', ylim=(-0.1, 4.2))
        axes[1].plot(margins, hinge_grad, label='hinge')
        axes[1].plot(margins, ce_grad, label='cross-entropy: $-\\sigma(-m)$')
        axes[1].set(xlabel='margin m = t z', ylabel='d loss / dm', title='Gradients')
        for ax in axes:
            ax.axvline(0, color='k', lw=0.5)
            ax.legend(fontsize=9)
        fig.tight_layout()
        plt.show()
        """),
        md(r"""
        ## 2.4 Exact limits at logits $\pm\infty$

        Infinite logits show up in practice (a masked output, an overflowing activation). The limits are clear:
        with $y = 0$ and $z \to -\infty$ the model is certain and right, so the loss is $0$; with $y = 1$ it is
        certain and wrong, so the loss is $+\infty$. Computing $y \log\sigma(z) + (1 - y)\log\sigma(-z)$ literally
        hits $0 \cdot (-\infty) = \mathrm{NaN}$ on the term whose label weight is 0. `jxent` treats that term as
        absent ($0 \cdot \log 0 = 0$), so it returns the limit, and its gradient $\sigma(z) - y$ is finite
        everywhere. (The `optax` column shows what the installed `optax` returns.)

        Large *finite* logits are the same story in float32: $1 - \sigma(100)$ rounds to $0$, so the naive
        $-\log(1 - \sigma(z))$ is `inf`, while the exact loss is $\operatorname{softplus}(100) = 100$.
        """),
        code(r"""
        print(f'optax {optax.__version__}')
        print(f"{'logit':>6} {'label':>6} {'jxent loss':>11} {'optax loss':>11} {'jxent grad':>11}")
        z = jnp.array([-jnp.inf, -jnp.inf, jnp.inf, jnp.inf])
        y = jnp.array([0.0, 1.0, 0.0, 1.0])
        ours = jxent.sigmoid_binary_cross_entropy(z, y)
        theirs = optax.losses.sigmoid_binary_cross_entropy(z, y)
        grads = jax.grad(lambda z: jxent.sigmoid_binary_cross_entropy(z, y).sum())(z)
        for row in zip(z, y, ours, theirs, grads):
            print('{:>6} {:>6} {:>11} {:>11} {:>11}'.format(*(str(float(v)) for v in row)))

        np.testing.assert_array_equal(ours, [0.0, np.inf, np.inf, 0.0])     # the exact limits, no NaN
        np.testing.assert_array_equal(grads, [0.0, -1.0, 1.0, 0.0])          # sigma(z) - y at z = -inf, +inf
        focal = jxent.sigmoid_focal_loss(z, y)                                # the focal loss inherits the limits
        np.testing.assert_array_equal(focal, [0.0, np.inf, np.inf, 0.0])

        z32 = jnp.array([100.0, -100.0], dtype=jnp.float32)
        y32 = jnp.array([0.0, 1.0], dtype=jnp.float32)
        naive = -(y32 * jnp.log(sigmoid(z32)) + (1 - y32) * jnp.log(1 - sigmoid(z32)))
        stable = jxent.sigmoid_binary_cross_entropy(z32, y32)
        print(f'\nfloat32, z = +-100, wrong label:  naive = {np.asarray(naive)},  jxent = {np.asarray(stable)}')
        assert np.isinf(naive).any() and np.allclose(stable, 100.0)
        """),
    ]


# ----------------------------------------------------------------------------------------------------------------
# 03: focal loss
# ----------------------------------------------------------------------------------------------------------------
def focal_loss() -> list:
    return [
        md(r"""
        # 3. Focal loss

        The focal loss (Lin et al., [*Focal Loss for Dense Object Detection*](https://arxiv.org/abs/1708.02002),
        2017) multiplies cross-entropy by a *modulating factor* $(1 - p_t)^\gamma$ that shrinks the loss of
        examples the model already classifies well, so that a flood of easy examples (the background in object
        detection) does not drown the few hard ones:

        $$\mathrm{FL}(p_t) = -\alpha_t\, (1 - p_t)^\gamma \log p_t .$$

        This notebook derives its gradient for the sigmoid and the softmax versions and checks both against
        `jax.grad` and `jax.jacfwd`, draws the classic loss-vs-probability plot for
        $\gamma \in \{0, 0.5, 1, 2, 5\}$, and shows what the $\alpha$ balancing does.
        """),
        setup(),
        md(r"""
        ## 3.1 The sigmoid focal loss and its derivative

        For a logit $z$, $p = \sigma(z)$ and a hard label $y \in \{0, 1\}$, let $s = 2y - 1 \in \{-1, +1\}$. The
        probability of the true class is $p_t = y p + (1 - y)(1 - p) = \sigma(s z)$, and (torchvision's convention,
        which `jxent` follows) $\alpha_t = \alpha y + (1 - \alpha)(1 - y)$. Since
        $\mathrm{d}p_t / \mathrm{d}z = s\, p_t (1 - p_t)$ and

        $$\frac{\partial \mathrm{FL}}{\partial p_t}
          = -\alpha_t\Big[-\gamma (1 - p_t)^{\gamma - 1}\log p_t + \frac{(1 - p_t)^\gamma}{p_t}\Big],$$

        the chain rule gives

        $$\boxed{\frac{\partial \mathrm{FL}}{\partial z}
          = \alpha_t\, s\, (1 - p_t)^{\gamma}\,\big(\gamma\, p_t \log p_t - (1 - p_t)\big).}$$

        Check: for $\gamma = 0$ and $\alpha_t = 1$ this is $-s(1 - p_t)$, which is $p - 1$ for $y = 1$ and $p$ for
        $y = 0$: the binary cross-entropy gradient $\sigma(z) - y$. Two effects of $\gamma > 0$: the factor
        $(1 - p_t)^\gamma$ shrinks the gradient of well-classified examples ($p_t \to 1$), and the extra term
        $\gamma p_t \log p_t \le 0$ slightly *enlarges* it for badly classified ones (small $p_t$, where
        $(1 - p_t)^\gamma \approx 1$); see the right panel of the plot in 3.3.
        """),
        code(r"""
        def sigmoid_focal_grad_by_hand(z, y, gamma, alpha=None):
            s = 2 * y - 1
            p_t = jax.nn.sigmoid(s * z)
            alpha_t = 1.0 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
            return alpha_t * s * (1 - p_t) ** gamma * (gamma * p_t * jnp.log(p_t) - (1 - p_t))

        @jax.jit
        def autodiff(z, y, gamma, alpha):
            loss = lambda z: jxent.sigmoid_focal_loss(z, y, alpha=alpha, gamma=gamma)
            reverse = jax.grad(lambda z: loss(z).sum())(z)         # reverse mode: gradient of the sum
            forward = jnp.diag(jax.jacfwd(loss)(z))                 # forward mode: the (diagonal) Jacobian
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
        np.testing.assert_allclose(jxent.sigmoid_focal_loss(z, y, gamma=0.0), jxent.sigmoid_binary_cross_entropy(z, y),
                                   rtol=1e-12)
        print('sigmoid focal gradient checked for gamma in {0, 0.5, 1, 2, 5}, alpha in {None, 0.25}')
        """),
        md(r"""
        ## 3.2 The softmax (multi-class) focal loss

        For logits $z \in \mathbb{R}^K$, $p = \operatorname{softmax}(z)$ and an integer label $y$,
        $\ell = -\alpha_y (1 - p_y)^\gamma \log p_y$. The only dependence on $z$ is through $p_y$, and from the
        softmax Jacobian (notebook 1) $\partial p_y / \partial z_j = p_y(\delta_{jy} - p_j)$. With the same
        $\partial \ell / \partial p_y$ as above,

        $$\frac{\partial \ell}{\partial z_j}
          = -\alpha_y\Big[(1 - p_y)^\gamma - \gamma (1 - p_y)^{\gamma - 1} p_y \log p_y\Big](\delta_{jy} - p_j)
          = \boxed{\alpha_y (1 - p_y)^{\gamma}\Big(1 - \frac{\gamma\, p_y \log p_y}{1 - p_y}\Big)(p_j - \delta_{jy}).}$$

        It is the cross-entropy gradient $p - e_y$ scaled by one positive number per example. $\alpha$ may be a
        vector of per-class weights.
        """),
        code(r"""
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
            forward = jnp.einsum('iik->ik', jax.jacfwd(loss)(z))   # [8, 8, K]: example i only moves loss i
            return reverse, forward

        for gamma in (0.0, 0.5, 1.0, 2.0, 5.0):
            for alpha in (None, class_alpha):
                by_hand = softmax_focal_grad_by_hand(Z, labels, gamma, alpha)
                for autodiff_grad in autodiff(Z, labels, gamma, alpha):
                    np.testing.assert_allclose(autodiff_grad, by_hand, rtol=1e-9, atol=1e-14)

        # gamma = 0 without alpha is softmax cross-entropy.
        np.testing.assert_allclose(jxent.softmax_focal_loss(Z, labels, gamma=0.0),
                                   jxent.softmax_cross_entropy_with_integer_labels(Z, labels), rtol=1e-12)
        print('softmax focal gradient checked for gamma in {0, 0.5, 1, 2, 5}, with and without per-class alpha')
        """),
        md(r"""
        ## 3.3 Loss against the probability of the true class

        The classic figure of the paper: $\mathrm{FL}(p_t) = -(1 - p_t)^\gamma \log p_t$ for several $\gamma$
        ($\gamma = 0$ is cross-entropy). We compute each curve with `jxent.sigmoid_focal_loss` at the logit
        $z = \log(p_t / (1 - p_t))$ and label 1. With $\gamma = 2$, an example classified with $p_t = 0.9$ has
        a loss 100 times smaller than under cross-entropy, while a badly classified one ($p_t = 0.1$) keeps 81% of
        it. The right panel shows the same effect on the gradient with respect to the logit.
        """),
        code(r"""
        p_t = np.linspace(1e-3, 1 - 1e-4, 2000)
        logit = np.log(p_t) - np.log1p(-p_t)
        gammas = (0.0, 0.5, 1.0, 2.0, 5.0)

        @jax.jit
        def loss_and_grad(z, gamma):
            loss = lambda z: jxent.sigmoid_focal_loss(z, jnp.ones_like(z), gamma=gamma)
            return loss(z), jax.grad(lambda z: loss(z).sum())(z)     # elementwise loss, so this is d loss_i / d z_i

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        for gamma in gammas:
            loss, grad = loss_and_grad(logit, gamma)
            np.testing.assert_allclose(loss, -(1 - p_t) ** gamma * np.log(p_t), rtol=1e-8)
            label = 'CE ($\\gamma = 0$)' if gamma == 0 else f'$\\gamma = {gamma:g}$'
            axes[0].plot(p_t, loss, lw=2, label=label)
            axes[1].plot(p_t, np.abs(grad), lw=2, label=label)
        axes[0].set(xlabel='probability of the true class $p_t$', ylabel='loss', ylim=(0, 5), xlim=(0, 1),
                    title='$\\mathrm{FL}(p_t) = -(1 - p_t)^\\gamma \\log p_t$')
        axes[0].axvspan(0.6, 1.0, color='tab:green', alpha=0.08)
        axes[0].text(0.8, 3.0, 'well-classified\nexamples', ha='center', fontsize=10)
        axes[1].set(xlabel='probability of the true class $p_t$', ylabel='|d loss / d logit|', xlim=(0, 1),
                    title='Gradient with respect to the logit')
        for ax in axes:
            ax.legend()
        fig.tight_layout()
        plt.show()

        ratio = lambda p, g: float(jxent.sigmoid_focal_loss(np.log(p / (1 - p)), 1.0, gamma=g)
                                   / jxent.sigmoid_focal_loss(np.log(p / (1 - p)), 1.0, gamma=0.0))
        np.testing.assert_allclose([ratio(0.9, 2.0), ratio(0.1, 2.0)], [0.01, 0.81], rtol=1e-10)
        """),
        md(r"""
        ## 3.4 $\alpha$ balancing

        $\alpha_t$ weights the positive class by $\alpha$ and the negative class by $1 - \alpha$. It balances the
        *number* of examples per class, while $\gamma$ balances *easy* against *hard* ones. The two interact: the
        paper's best setting is $\gamma = 2$ with $\alpha = 0.25$, which weights the rare positives *less*, because
        the modulating factor has already removed most of the loss of the abundant easy negatives.

        A toy batch shows this: 1000 easy negatives (predicted $p = 0.05$, so $p_t = 0.95$) and 10 hard positives
        ($p = 0.3$). Under cross-entropy the negatives carry most of the total loss, although each is nearly
        correct; with $\gamma = 2$ the positives dominate.
        """),
        code(r"""
        n_neg, n_pos = 1000, 10
        z = np.concatenate([np.full(n_neg, np.log(0.05 / 0.95)), np.full(n_pos, np.log(0.3 / 0.7))])
        y = np.concatenate([np.zeros(n_neg), np.ones(n_pos)])

        # alpha_t multiplies the unweighted loss: alpha for y = 1, 1 - alpha for y = 0.
        for gamma in (0.0, 2.0):
            np.testing.assert_allclose(jxent.sigmoid_focal_loss(z, y, alpha=0.25, gamma=gamma),
                                       np.where(y == 1, 0.25, 0.75) * jxent.sigmoid_focal_loss(z, y, gamma=gamma),
                                       rtol=1e-12)

        settings = [('CE', 0.0, None), ('CE, $\\alpha$=0.25', 0.0, 0.25),
                    ('FL $\\gamma$=2', 2.0, None), ('FL $\\gamma$=2, $\\alpha$=0.25', 2.0, 0.25)]
        shares = []
        print(f"{'setting':<24} {'negatives':>10} {'positives':>10} {'positive share':>15}")
        for name, gamma, alpha in settings:
            loss = jxent.sigmoid_focal_loss(z, y, alpha=alpha, gamma=gamma)
            neg, pos = float(loss[:n_neg].sum()), float(loss[n_neg:].sum())
            shares.append(pos / (neg + pos))
            print(f'{name.replace("$", "").replace(chr(92), ""):<24} {neg:10.3f} {pos:10.3f} {shares[-1]:15.1%}')
        assert shares[0] < 0.25 and shares[2] > 0.9

        fig, ax = plt.subplots(figsize=(7.5, 3.4))
        names = [s[0] for s in settings]
        ax.barh(names, 1 - np.array(shares), color='tab:gray', label='1000 easy negatives')
        ax.barh(names, shares, left=1 - np.array(shares), color='tab:red', label='10 hard positives')
        ax.set(xlim=(0, 1), xlabel='share of the total loss', title='Who contributes the loss?')
        ax.invert_yaxis()
        ax.legend(loc='lower left', fontsize=9)
        fig.tight_layout()
        plt.show()
        """),
        md(r"""
        `jxent.softmax_focal_loss` takes `alpha` as one weight per class (or a scalar), the multi-class analogue
        of $\alpha_t$; the gradient check in 3.2 covered it. Both functions are drop-in replacements for the
        same-named `optax` loss where `optax` has one, and take `reduction="mean"` for a training step.
        """),
    ]


# ----------------------------------------------------------------------------------------------------------------
# 04: label smoothing, KL divergence and entropy, z-loss, soft-capping
# ----------------------------------------------------------------------------------------------------------------
def label_smoothing_kl_entropy() -> list:
    return [
        md(r"""
        # 4. Label smoothing, KL divergence and entropy

        1. $\mathrm{CE} = H + \mathrm{KL}$: cross-entropy is entropy plus Kullback-Leibler divergence.
        2. The gradient of label-smoothed cross-entropy, and what smoothing does to the **optimal logits**: they
           become finite, with a gap of $\log\frac{1 - \varepsilon + \varepsilon/K}{\varepsilon/K}$.
        3. Two regularisers of the logits used in large models: the **z-loss** (PaLM) and **soft-capping**
           (Gemma 2), with their gradients.

        Each derivation is checked numerically against `jax.grad` or `jax.jacfwd`.
        """),
        setup(),
        md(r"""
        ## 4.1 Cross-entropy = entropy + KL divergence

        For a target distribution $t$ and a predicted distribution $q$ (here $q = \operatorname{softmax}(z)$):

        $$H(t) = -\sum_c t_c \log t_c, \qquad
          \mathrm{KL}(t \,\|\, q) = \sum_c t_c \log\frac{t_c}{q_c}, \qquad
          \mathrm{CE}(t, q) = -\sum_c t_c \log q_c .$$

        Adding and subtracting $\sum_c t_c \log t_c$:

        $$\mathrm{CE}(t, q) = -\sum_c t_c \log t_c + \sum_c t_c (\log t_c - \log q_c)
          = H(t) + \mathrm{KL}(t \,\|\, q).$$

        $H(t)$ does not depend on the model, so minimising cross-entropy *is* minimising the KL divergence, and
        since $\mathrm{KL} \ge 0$ with equality iff $q = t$ (Gibbs' inequality), the smallest achievable
        cross-entropy is $H(t)$, reached at $q = t$. Terms with $t_c = 0$ count as $0 \log 0 = 0$.
        """),
        code(r"""
        K = 7
        Z = rng.normal(size=(5, K)) * 2.0
        T = rng.dirichlet(np.ones(K) * 0.7, size=5)
        T[0] = np.eye(K)[3]                             # a one-hot row: H = 0, CE = KL
        T[1, :3] = 0.0
        T[1] /= T[1].sum()                              # a row with some zero probabilities
        log_q = jxent.log_softmax(Z)

        ce = jxent.softmax_cross_entropy(Z, T)
        h = jxent.entropy(T)
        kl = jxent.kl_divergence(log_q, T)              # optax's argument order: log-predictions, then targets
        np.testing.assert_allclose(ce, h + kl, rtol=1e-12)
        np.testing.assert_allclose(kl, np.sum(np.where(T > 0, T * (np.log(np.where(T > 0, T, 1.0)) - log_q), 0.0), -1),
                                   rtol=1e-12)
        assert np.all(kl >= 0) and h[0] == 0.0
        np.testing.assert_allclose(jxent.kl_divergence(jnp.log(T[2]), T[2]), 0.0, atol=1e-15)   # KL(t || t) = 0
        np.testing.assert_allclose(jxent.softmax_cross_entropy(jnp.log(T[2]), T[2]), h[2], rtol=1e-12)  # min CE = H(t)
        # Gradient of the entropy: -(log p + 1).
        np.testing.assert_allclose(jax.grad(jxent.entropy)(T[2]), -(np.log(T[2]) + 1), rtol=1e-12)
        for row in zip(ce, h, kl):
            print('CE = {:.4f} = H {:.4f} + KL {:.4f}'.format(*map(float, row)))
        """),
        md(r"""
        ## 4.2 Label smoothing and its gradient

        Label smoothing (Szegedy et al. 2016; Müller, Kornblith and Hinton,
        [*When does label smoothing help?*](https://arxiv.org/abs/1906.02629), 2019) trains against the mixture of
        the one-hot target and the uniform distribution over the $K$ classes:

        $$q_c = (1 - \varepsilon)\,[c = y] + \frac{\varepsilon}{K}, \qquad
          \mathrm{CE}_\varepsilon(z) = -\sum_c q_c \log p_c
          = (1 - \varepsilon)\,\mathrm{CE}(e_y, p)
          + \varepsilon\, \underbrace{\frac1K \sum_c (-\log p_c)}_{\text{CE against uniform}} .$$

        $q$ sums to 1, so the result of notebook 1 applies unchanged:

        $$\boxed{\frac{\partial\, \mathrm{CE}_\varepsilon}{\partial z} = p - q
          = p - (1 - \varepsilon)\, e_y - \frac{\varepsilon}{K}\mathbf{1}.}$$

        In `jxent` this is the `label_smoothing=` argument (torch's semantics), or `jxent.smooth_labels` applied to
        a one-hot target (optax's function).
        """),
        code(r"""
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
        mixture = ((1 - eps) * jxent.softmax_cross_entropy_with_integer_labels(Z, labels)
                   + eps * jxent.softmax_cross_entropy(Z, np.full((6, K), 1 / K)))
        np.testing.assert_allclose(smoothed, mixture, rtol=1e-12)
        print('p - q checked; smoothed targets of row 0:', np.round(q[0], 3))
        """),
        md(r"""
        ## 4.3 Smoothing makes the optimal logits finite

        Without smoothing, the gradient $p - e_y$ vanishes only when $p_y = 1$, which needs
        $z_y - z_c \to \infty$: the logits grow without bound on separable training data. With smoothing the
        gradient $p - q$ is zero at $p = q$, i.e. $p_y = 1 - \varepsilon + \varepsilon/K$ and
        $p_c = \varepsilon / K$ for $c \ne y$. Since $\log p_y - \log p_c = z_y - z_c$, the optimal logits are
        determined up to a common shift by

        $$\boxed{z_y^\star - z_c^\star = \log\frac{1 - \varepsilon + \varepsilon / K}{\varepsilon / K}},$$

        a finite gap, and by 4.1 the minimum loss is $H(q)$. We check both: the gradient vanishes at
        $z^\star = \log q$, and plain gradient descent from $z = 0$ converges to the predicted gap.
        """),
        code(r"""
        def optimal_gap(eps, K):
            return np.log((1 - eps + eps / K) / (eps / K))

        K, eps, y = 10, 0.1, 3
        q = (1 - eps) * np.eye(K)[y] + eps / K
        loss = lambda z: jxent.softmax_cross_entropy_with_integer_labels(z, y, label_smoothing=eps)

        z_star = np.log(q)
        np.testing.assert_allclose(jax.grad(loss)(z_star), 0.0, atol=1e-14)            # stationary at p = q
        np.testing.assert_allclose(loss(z_star), jxent.entropy(q), rtol=1e-12)          # minimum value H(q)

        @jax.jit
        def descend(z):
            return jax.lax.fori_loop(0, 3000, lambda _, z: z - 1.0 * jax.grad(loss)(z), z)

        z_opt = descend(jnp.zeros(K))
        gap = float(z_opt[y] - jnp.max(jnp.delete(z_opt, y)))
        print(f'K = {K}, eps = {eps}: gap after gradient descent = {gap:.5f}, formula = {optimal_gap(eps, K):.5f}')
        np.testing.assert_allclose(gap, optimal_gap(eps, K), rtol=1e-6)
        """),
        code(r"""
        eps_grid = np.logspace(-4, np.log10(0.5), 300)
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        for K in (2, 10, 100, 32_000):
            axes[0].plot(eps_grid, optimal_gap(eps_grid, K), lw=2, label=f'K = {K:,}')
            axes[1].plot(eps_grid, 1 - eps_grid + eps_grid / K, lw=2, label=f'K = {K:,}')
        axes[0].plot([0.1], [optimal_gap(0.1, 10)], 'ko', label='gradient descent, K = 10')
        axes[0].set(xscale='log', xlabel='label smoothing $\\varepsilon$', ylabel='$z_y^\\star - z_c^\\star$',
                    title='Optimal logit gap $\\log\\frac{1 - \\varepsilon + \\varepsilon/K}{\\varepsilon/K}$')
        axes[1].set(xscale='log', xlabel='label smoothing $\\varepsilon$', ylabel='$p_y^\\star$',
                    title='Optimal probability of the true class $1 - \\varepsilon + \\varepsilon / K$')
        for ax in axes:
            ax.legend(fontsize=9)
        fig.tight_layout()
        plt.show()
        """),
        md(r"""
        The gap grows only like $\log(1/\varepsilon)$ as $\varepsilon \to 0$ (the unsmoothed optimum is at
        infinity), and it grows with $\log K$: with many classes each wrong class gets little mass. This is
        why smoothed models are less over-confident, and why their predicted probabilities top out at
        $1 - \varepsilon + \varepsilon/K$ (the training demo in `examples/train_demo.py` shows the effect on
        calibration).

        ## 4.4 z-loss

        Cross-entropy is invariant to adding a constant to all logits, so nothing stops the logits from drifting,
        which can hurt numerics in low precision. PaLM (Chowdhery et al. 2022) adds
        $\lambda_z \operatorname{lse}(z)^2$, which pulls the log-normaliser $\operatorname{lse}(z)$ towards 0.
        With $\partial \operatorname{lse}/\partial z = p$:

        $$\frac{\partial}{\partial z}\Big[\mathrm{CE} + \lambda_z \operatorname{lse}(z)^2\Big]
          = (p - y) + 2\lambda_z \operatorname{lse}(z)\, p .$$

        Along the shift direction $\mathbf{1}$, the cross-entropy part contributes $\sum_j (p_j - y_j) = 0$ and the
        z-loss $2\lambda_z \operatorname{lse}(z)$: it is the z-loss alone that fixes the shift.
        """),
        code(r"""
        K, lam = 8, 1e-2
        Z = rng.normal(size=(5, K)) * 3.0 + 4.0          # shifted so that lse(z) is far from 0
        labels = rng.integers(0, K, size=5)
        P, lse = jxent.softmax(Z), jxent.logsumexp(Z)

        loss = lambda z: jxent.softmax_cross_entropy_with_integer_labels(z, labels, z_loss=lam).sum()
        by_hand = P - np.eye(K)[labels] + 2 * lam * lse[:, None] * P
        grad = jax.jit(jax.grad(loss))(Z)
        np.testing.assert_allclose(grad, by_hand, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(grad.sum(-1), 2 * lam * lse, rtol=1e-10)   # along the shift direction
        np.testing.assert_allclose(
            jxent.softmax_cross_entropy_with_integer_labels(Z, labels, z_loss=lam),
            jxent.softmax_cross_entropy_with_integer_labels(Z, labels) + lam * lse**2, rtol=1e-12)
        print('z-loss gradient checked; lse of the rows:', np.round(lse, 3))
        """),
        md(r"""
        ## 4.5 Logit soft-capping

        Gemma 2 bounds the logits smoothly with $s(z) = c \tanh(z / c)$ before the softmax: near 0 it is the
        identity, and $|s(z)| < c$. Its derivative is

        $$s'(z) = 1 - \tanh^2(z / c) = 1 - \big(s(z) / c\big)^2,$$

        so the cross-entropy gradient with respect to the raw logits is the usual one, multiplied entry by entry:

        $$\frac{\partial\, \mathrm{CE}(s(z), y)}{\partial z} = \big(\operatorname{softmax}(s(z)) - y\big) \odot
          \big(1 - \tanh^2(z / c)\big).$$

        Logits far beyond the cap get almost no gradient, which is the price of the bound. `jxent.soft_cap` keeps
        $-\infty$ (a masked class) at $-\infty$ with zero gradient.
        """),
        code(r"""
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
        print('soft-capping gradient checked')

        zs = np.linspace(-60, 60, 601)
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
        axes[0].plot(zs, zs, color='gray', ls=':', label='no cap')
        for c in (5.0, 15.0, 30.0):
            axes[0].plot(zs, jxent.soft_cap(zs, c), lw=2, label=f'cap = {c:g}')
            axes[1].plot(zs, soft_cap_derivative(zs, c), lw=2, label=f'cap = {c:g}')
        axes[0].set(xlabel='logit z', ylabel='cap tanh(z / cap)', title='jxent.soft_cap', ylim=(-40, 40))
        axes[1].set(xlabel='logit z', ylabel='derivative', title='$1 - \\tanh^2(z / \\mathrm{cap})$')
        for ax in axes:
            ax.legend(fontsize=9)
        fig.tight_layout()
        plt.show()
        """),
    ]


# ----------------------------------------------------------------------------------------------------------------
# 05: large vocabularies
# ----------------------------------------------------------------------------------------------------------------
def large_vocabulary() -> list:
    return [
        md(r"""
        # 5. Large vocabularies: cross-entropy without the $[N, V]$ logits

        The last layer of a language model maps hidden states $h \in \mathbb{R}^{N \times D}$ ($N$ tokens) through
        an output embedding $W \in \mathbb{R}^{D \times V}$ to logits $Z = hW \in \mathbb{R}^{N \times V}$, and the
        loss is the softmax cross-entropy of $Z$. With a modern vocabulary the logits are by far the largest
        tensor of the step: for $N = 8192$ tokens and $V = 128\,256$ (Llama 3) they take **4.2 GB in float32**,
        and the backward pass needs another array of the same shape, $\partial L / \partial Z$, while $h$ itself
        is only $N \times D$.

        A *fused* linear cross-entropy computes the loss and the gradients with respect to $h$ and $W$ without
        ever holding the full $[N, V]$ matrix. This notebook derives why that is possible, checks a fused
        computation against the naive one, and measures the memory with XLA's compiled memory analysis
        (`jax.jit(f).lower(...).compile().memory_analysis()`), which only compiles: the large shapes are never
        allocated, so it runs on a laptop CPU.
        """),
        setup(x64=False, extra="from jax import lax"),
        md(r"""
        ## 5.1 Why the logits need not exist all at once

        For token $i$ with label $y_i$, writing $w_j$ for column $j$ of $W$,

        $$\ell_i = \operatorname{lse}_j(h_i^\top w_j) - h_i^\top w_{y_i}, \qquad L = \frac1N \sum_i \ell_i .$$

        **Forward.** The label term is a gather ($N$ dot products). The log-sum-exp can be accumulated over
        vocabulary chunks $C_1, C_2, \dots$ with a running maximum $m_i$ and a running sum $s_i$ (the
        "online softmax"):

        $$m_i' = \max\big(m_i, \max_{j \in C} z_{ij}\big), \qquad
          s_i' = s_i\, e^{m_i - m_i'} + \sum_{j \in C} e^{z_{ij} - m_i'}, \qquad
          \operatorname{lse}_i = m_i + \log s_i ,$$

        which needs only one $[N, |C|]$ block of logits at a time, and keeps the max-shift of notebook 1.

        **Backward.** From notebook 1, $G = \partial L/\partial Z = (P - Y)/N$ with $P_{ij} = e^{z_{ij} -
        \operatorname{lse}_i}$. Every block of $P$ can be recomputed from the saved $\operatorname{lse}$ (a vector
        of length $N$), so

        $$\frac{\partial L}{\partial h} = G\,W^\top = \sum_{C} G_{:,C}\, W_{:,C}^\top, \qquad
          \frac{\partial L}{\partial W_{:,C}} = h^\top G_{:,C},$$

        again one block at a time. The cost is recomputing $Z$ in the backward pass (one more matmul), the gain is
        memory that no longer grows with $N \times V$.

        The same idea works along the token axis: tokens are independent, so the loss of a chunk of $n$ tokens
        can be computed from its own $[n, V]$ logits, with `jax.checkpoint` so that the backward pass recomputes
        them instead of storing them. That version is five lines of JAX, and we use it below as an
        **illustration** (it is not jxent's implementation).
        """),
        code(r"""
        def naive_loss(h, W, labels):
            # Materialises the [N, V] logits.
            return jxent.softmax_cross_entropy_with_integer_labels(h @ W, labels, reduction='mean')

        def chunked_loss_illustration(h, W, labels, chunk=256):
            # ILLUSTRATION: token-chunked loss; each [chunk, V] block is recomputed in the backward pass.
            n, d = h.shape
            blocks = (h.reshape(n // chunk, chunk, d), labels.reshape(n // chunk, chunk))

            @jax.checkpoint
            def block_loss(block):
                h_block, labels_block = block
                return jxent.softmax_cross_entropy_with_integer_labels(h_block @ W, labels_block, reduction='sum')

            return jnp.sum(lax.map(block_loss, blocks)) / n

        HAS_FUSED = hasattr(jxent, 'linear_softmax_cross_entropy')
        print('jxent.linear_softmax_cross_entropy available:', HAS_FUSED)
        if HAS_FUSED:
            print(jxent.linear_softmax_cross_entropy.__doc__.strip().splitlines()[0])
        """),
        md(r"""
        When this version of `jxent` has `jxent.linear_softmax_cross_entropy(hidden, weight, labels, *,
        reduction=..., chunk_size=...)` (hidden states $[N, D]$, weight $[D, V]$, integer labels $[N]$), the cells
        below check and measure it next to the naive version and the illustration; otherwise they show the naive
        version and the illustration only.
        """),
        code(r"""
        fused_loss = None
        if HAS_FUSED:
            def fused_loss(h, W, labels):
                return jxent.linear_softmax_cross_entropy(h, W, labels, reduction='mean')
        """),
        md(r"""
        ## 5.2 Same loss, same gradients

        On a small problem, every version must agree with the naive one, in value and in both gradients.
        """),
        code(r"""
        N, D, V = 512, 32, 3000
        key_h, key_w, key_y = jax.random.split(jax.random.key(0), 3)
        h = jax.random.normal(key_h, (N, D), jnp.float32)
        W = jax.random.normal(key_w, (D, V), jnp.float32) / np.sqrt(D)
        labels = jax.random.randint(key_y, (N,), 0, V)

        versions = {'naive': naive_loss, 'chunked (illustration)': chunked_loss_illustration}
        if fused_loss is not None:
            versions['jxent fused'] = fused_loss
        results = {name: jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(h, W, labels) for name, fn in versions.items()}

        ref_loss, (ref_dh, ref_dW) = results['naive']
        for name, (loss, (dh, dW)) in results.items():
            np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
            np.testing.assert_allclose(dh, ref_dh, rtol=1e-4, atol=1e-7)
            np.testing.assert_allclose(dW, ref_dW, rtol=1e-4, atol=1e-7)
            print(f'{name:>24}: loss {float(loss):.6f}  |dL/dh| {float(jnp.linalg.norm(dh)):.6f}  '
                  f'|dL/dW| {float(jnp.linalg.norm(dW)):.6f}')
        # dL/dZ = (softmax(Z) - onehot) / N, so dL/dh = G W^T and dL/dW = h^T G.
        G = (jxent.softmax(h @ W) - jax.nn.one_hot(labels, V)) / N
        np.testing.assert_allclose(ref_dh, G @ W.T, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(ref_dW, h.T @ G, rtol=1e-4, atol=1e-7)
        """),
        md(r"""
        ## 5.3 Memory, measured by the compiler

        For each vocabulary size we compile the training computation (loss and gradients with respect to $h$ and
        $W$) for abstract inputs (`jax.ShapeDtypeStruct`), and read `temp_size_in_bytes` from the compiled
        executable's memory analysis: the scratch memory XLA allocates beyond the inputs and outputs. Nothing of
        that size is ever allocated, so $N = 4096$ tokens and $V$ up to $262\,144$ are fine on a CPU.
        The dotted line is the size of one float32 $[N, V]$ array.
        """),
        code(r"""
        def temp_bytes(loss_fn, n, d, v):
            args = (jax.ShapeDtypeStruct((n, d), jnp.float32),
                    jax.ShapeDtypeStruct((d, v), jnp.float32),
                    jax.ShapeDtypeStruct((n,), jnp.int32))
            compiled = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1))).lower(*args).compile()
            return compiled.memory_analysis().temp_size_in_bytes

        N, D = 4096, 256
        vocab_sizes = [8_192, 32_768, 131_072, 262_144]
        memory = {name: [temp_bytes(fn, N, D, v) for v in vocab_sizes] for name, fn in versions.items()}
        logits_bytes = [N * v * 4 for v in vocab_sizes]

        GiB = 2**30
        print(f"{'V':>8} " + ' '.join(f'{name:>24}' for name in memory) + f" {'one [N, V] array':>18}")
        for i, v in enumerate(vocab_sizes):
            print(f'{v:>8,} ' + ' '.join(f'{memory[name][i] / GiB:>20.3f} GiB' for name in memory)
                  + f' {logits_bytes[i] / GiB:>14.3f} GiB')

        # The naive step holds at least one [N, V] array; the chunked ones stay well below it.
        assert all(m >= b for m, b in zip(memory['naive'], logits_bytes))
        assert memory['chunked (illustration)'][-1] < memory['naive'][-1] / 4
        if 'jxent fused' in memory:
            assert memory['jxent fused'][-1] < memory['naive'][-1] / 4
        """),
        code(r"""
        fig, ax = plt.subplots(figsize=(8, 4.5))
        styles = {'naive': ('tab:red', 'o'), 'chunked (illustration)': ('tab:blue', 's'),
                  'jxent fused': ('tab:green', '^')}
        for name, values in memory.items():
            color, marker = styles[name]
            ax.plot(vocab_sizes, np.array(values) / GiB, marker=marker, color=color, lw=2, label=name)
        ax.plot(vocab_sizes, np.array(logits_bytes) / GiB, ls=':', color='gray', label='one float32 [N, V] array')
        ax.set(xscale='log', yscale='log', xlabel='vocabulary size V', ylabel='XLA temporary memory (GiB)',
               title=f'Loss + gradients of a linear softmax cross-entropy, N = {N:,} tokens, D = {D}')
        ax.set_xticks(vocab_sizes, [f'{v // 1024}k' for v in vocab_sizes])
        ax.minorticks_off()
        ax.legend()
        fig.tight_layout()
        plt.show()
        """),
        md(r"""
        The naive step needs several $[N, V]$ arrays (the logits, the softmax, the gradient), so its memory grows
        with $N \times V$. The chunked versions hold one block at a time. The token-chunked illustration works on
        $[256, V]$ blocks, $N / 256 = 16$ times smaller than the full logits, but its memory still grows with $V$.
        Chunking along both axes, $[\text{token chunk}, \text{vocabulary chunk}]$ blocks with the online
        log-sum-exp of 5.1, removes the dependence on $V$ altogether; that is what
        `jxent.linear_softmax_cross_entropy` does (when it is present, its curve is the flat one). What still grows
        with $V$ is $\partial L / \partial W$, which has the size of $W$ and is an output, not a temporary.

        What is not measured here is time: the fused versions recompute the logits in the backward pass, one
        extra $N \times D \times V$ matmul, which is usually a good trade when the alternative does not fit.
        """),
        md(r"""
        ## 5.4 The language-model head: entropy, KL and JS, and the gradients the kernels use

        RL fine-tuning needs each token's log-probability and entropy; distillation needs a divergence between a
        teacher's and a student's softmax. jxent computes them blockwise like the cross-entropy
        (`jxent.linear_token_statistics`, `linear_kl_divergence`, `linear_js_divergence`,
        `linear_sparse_kl_divergence`), and each backward pass applies a closed form per logit block. With
        $p = \operatorname{softmax}(z)$, $\log p_c = z_c - \operatorname{lse}(z)$ and
        $\partial \log p_j / \partial z_c = [j = c] - p_c$:

        **Entropy.** $H = -\sum_j p_j \log p_j$, so
        $$\frac{\partial H}{\partial z_c} = -\sum_j \frac{\partial p_j}{\partial z_c}(\log p_j + 1)
          = -\sum_j p_j([j=c] - p_c)(\log p_j + 1) = -p_c(\log p_c + 1) + p_c(1 - H)
          = -p_c(\log p_c + H).$$
        The forward pass never forms $\log p$ for the whole row: with the running maximum $m$ it keeps
        $s = \sum_j e^{z_j - m}$ and the *shifted moment* $\mu = \sum_j e^{z_j - m}(z_j - m)$; then
        $H = \log s - \mu / s$. Each term of $\mu$ lies in $[-1/e, 0]$, so nothing cancels even when the logits are
        $10^4$. When the maximum grows from $m$ to $M$, $\mu \to e^{m - M}(\mu + (m - M)s)$, the same online step
        as $s \to e^{m-M} s$.

        **KL.** For $\mathrm{KL}(p^t \| p^s) = \sum_j p^t_j(\log p^t_j - \log p^s_j)$,
        $$\frac{\partial\,\mathrm{KL}}{\partial z^s_c} = -\sum_j p^t_j([j = c] - p^s_c) = p^s_c - p^t_c, \qquad
          \frac{\partial\,\mathrm{KL}}{\partial z^t_c} = p^t_c\,(r_c - \mathrm{KL}),\quad
          r_c = \log p^t_c - \log p^s_c,$$
        the second because $\partial/\partial z^t_c$ of $\sum_j p^t_j r_j$ is $\sum_j p^t_j([j=c] - p^t_c)(r_j +
        1)$. The kernel computes $\mathrm{KL}$ in a second pass over the vocabulary, once both normalisers are known,
        from the shifted logits: $r_c = (z^t_c - m^t) - (z^s_c - m^s) - \log s^t + \log s^s$.

        **Generalized JS.** With $m = \beta p^t + (1-\beta)p^s$ and
        $J = \beta\,\mathrm{KL}(p^t \| m) + (1 - \beta)\,\mathrm{KL}(p^s \| m) = \sum_j [\beta p^t_j \log p^t_j +
        (1-\beta)p^s_j \log p^s_j - m_j \log m_j]$, the derivative in $p^s_j$ is $(1-\beta)(\log p^s_j - \log m_j)$
        (the $+1$ terms cancel), and through the softmax
        $$\frac{\partial J}{\partial z^s_c} = (1-\beta)\,p^s_c\big(\log p^s_c - \log m_c - \mathrm{KL}(p^s \| m)\big),
          \qquad
          \frac{\partial J}{\partial z^t_c} = \beta\,p^t_c\big(\log p^t_c - \log m_c - \mathrm{KL}(p^t \| m)\big).$$

        The cell below checks each closed form against `jax.grad` of the plain formula, and against the fused
        functions themselves: with $W = I$ (so $D = V$ and the logits are $h$), the gradient of a fused function
        with respect to `hidden` *is* its gradient with respect to the logits.
        """),
        code(r"""
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
                'dH/dz': -ps * (lps + H[:, None]),
                'dKL/dz_s': ps - pt,
                'dKL/dz_t': pt * (lpt - lps - KL[:, None]),
                'dJS/dz_s': (1 - beta) * ps * (lps - log_m - kl_sm[:, None]),
                'dJS/dz_t': beta * pt * (lpt - log_m - kl_tm[:, None]),
            }
            autodiff = {
                'dH/dz': jax.grad(lambda z: entropy(z).sum())(zs),
                'dKL/dz_s': jax.grad(lambda z: kl(z, zt).sum())(zs),
                'dKL/dz_t': jax.grad(lambda z: kl(zs, z).sum())(zt),
                'dJS/dz_s': jax.grad(lambda z: js(z, zt).sum())(zs),
                'dJS/dz_t': jax.grad(lambda z: js(zs, z).sum())(zt),
            }
            y4 = jnp.zeros(4, jnp.int32)
            fused = {  # W = I: d/d hidden is d/d logits
                'dH/dz': jax.grad(lambda h: jxent.linear_token_statistics(h, eye, y4).entropy.sum())(zs),
                'dKL/dz_s': jax.grad(lambda h: jxent.linear_kl_divergence(h, eye, zt, eye, reduction='sum'))(zs),
                'dKL/dz_t': jax.grad(lambda h: jxent.linear_kl_divergence(zs, eye, h, eye, reduction='sum'))(zt),
                'dJS/dz_s': jax.grad(lambda h: jxent.linear_js_divergence(h, eye, zt, eye, beta=beta,
                                                                         reduction='sum'))(zs),
                'dJS/dz_t': jax.grad(lambda h: jxent.linear_js_divergence(zs, eye, h, eye, beta=beta,
                                                                         reduction='sum'))(zt),
            }
            for name in closed:
                err_autodiff = float(jnp.max(jnp.abs(closed[name] - autodiff[name])))
                err_fused = float(jnp.max(jnp.abs(closed[name] - fused[name])))
                print(f'{name:>9}: closed form vs jax.grad {err_autodiff:.1e}, vs the fused kernel {err_fused:.1e}')
                assert err_autodiff < 1e-12 and err_fused < 1e-12
        """),
        md(r"""
        All five agree to rounding in float64. The sparse KL against a teacher's stored top-$k$ log-probabilities
        adds one more idea: the mass outside the top-$k$ is a single *tail bin* on both sides, and the student's tail
        $q_\text{tail} = \sum_{c \notin K} q_c$ is summed over those classes directly (its own running maximum), never
        as $1 - \sum_{j} q_{i_j}$, which would lose all precision when the top-$k$ hold nearly all the mass.
        """),
    ]


NOTEBOOKS: dict[str, Callable[[], list]] = {
    "01_softmax_cross_entropy": softmax_cross_entropy,
    "02_binary_cross_entropy": binary_cross_entropy,
    "03_focal_loss": focal_loss,
    "04_label_smoothing_kl_entropy": label_smoothing_kl_entropy,
    "05_large_vocabulary": large_vocabulary,
}


# ----------------------------------------------------------------------------------------------------------------
# Writing and executing
# ----------------------------------------------------------------------------------------------------------------
def make_notebook(cells: list) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def kernel_manager(spec_root: Path):
    """A kernel manager whose ``python3`` kernel is *this* interpreter (``sys.executable``).

    Without this, ``python3`` resolves to the first kernel spec on Jupyter's search path, which can be a user-wide
    spec pointing at another Python. A throw-away spec in ``spec_root`` makes the choice explicit.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = spec_root / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_root)], ensure_native_kernel=False)
    return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


def execute(nb: nbformat.NotebookNode, *, cwd: Path = HERE, timeout: int = TIMEOUT_S) -> nbformat.NotebookNode:
    """Executes ``nb`` in place with a kernel running this interpreter; raises on the first failing cell."""
    with tempfile.TemporaryDirectory() as spec_root:
        client = NotebookClient(
            nb,
            km=kernel_manager(Path(spec_root)),
            timeout=timeout,
            record_timing=False,
            resources={"metadata": {"path": str(cwd)}},
        )
        client.execute()
    return nb


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--no-execute", action="store_true", help="write the notebooks without running them")
    args = parser.parse_args(argv)
    selected = [n for n in NOTEBOOKS if not args.names or any(n.startswith(p) for p in args.names)]
    if not selected:
        parser.error(f"no notebook matches {args.names}; have {list(NOTEBOOKS)}")
    total = 0.0
    for name in selected:
        nb = make_notebook(NOTEBOOKS[name]())
        start = time.perf_counter()
        if not args.no_execute:
            execute(nb)
        elapsed = time.perf_counter() - start
        total += elapsed
        path = HERE / f"{name}.ipynb"
        nbformat.validate(nb)
        nbformat.write(nb, path)
        print(
            f"{path.relative_to(HERE.parent)}: {len(nb.cells)} cells"
            + ("" if args.no_execute else f", {elapsed:.1f} s")
        )
    if not args.no_execute:
        print(f"executed {len(selected)} notebooks in {total:.1f} s")


if __name__ == "__main__":
    main()
