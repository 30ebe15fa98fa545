"""Trains small Flax models on scikit-learn's bundled data sets with jxent losses, and compares the losses.

Two experiments, each on a held-out, stratified test split (no downloads: both data sets ship with scikit-learn):

* **digits** (8x8 images, 10 classes): one MLP trained three times from the same initialisation with
  plain cross-entropy (:func:`jxent.softmax_cross_entropy_with_integer_labels`), label smoothing (``0.1``) and
  the focal loss (:func:`jxent.softmax_focal_loss`, ``gamma=2``).
* **breast cancer** (30 features, binary): a classifier for *malignant*, the minority class, trained with
  :func:`jxent.sigmoid_binary_cross_entropy` with and without ``pos_weight = n_neg / n_pos``. The data set is
  only mildly imbalanced (37% malignant), so by default the *training* split keeps 30% of its malignant cases
  (about 1 malignant per 6 benign; ``--malignant-fraction 1`` keeps them all). The test split is left as it is.

Every training step is one ``nnx.jit``-compiled function (forward pass, jxent loss, gradient, AdamW update). At
the end it prints a table with, for each run, the test loss (plain cross-entropy, so the runs are comparable whatever
they were trained on), the accuracy, the expected calibration error (ECE, 15 equal-width bins) and, for the binary
runs, the recall of the malignant class. It writes ``training_curves.png``, ``results.md`` and ``results.csv`` to
the output folder. The run is deterministic given ``--seed``. Any jxent loss fits the step as
``loss_fn(logits, labels)``: a ``functools.partial`` of the function, as here, or a loss object such as
``jxent.losses.CrossEntropy(label_smoothing=0.1)``.

Usage::

  python examples/train_demo.py                  # full run (about 11 s of training, 16 s in all, on 2 CPU cores)
  python examples/train_demo.py --fast           # a few epochs, for tests
  python examples/train_demo.py --epochs 60 --seed 1 --out /tmp/demo
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train Flax MLPs on scikit-learn's digits and breast-cancer data with jxent losses.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=40, help="training epochs per run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split, initialisation and batch order")
    parser.add_argument("--out", type=Path, default=Path("outputs"), help="folder for the plot and the tables")
    parser.add_argument("--batch-size", type=int, default=32, help="mini-batch size")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    parser.add_argument("--hidden", type=int, default=64, help="width of the two hidden layers")
    parser.add_argument(
        "--malignant-fraction",
        type=float,
        default=0.3,
        help="fraction of the malignant cases kept in the breast-cancer training split (1 keeps all)",
    )
    parser.add_argument("--fast", action="store_true", help="a quick run (8 epochs) for tests and smoke checks")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.fast:
        args.epochs = min(args.epochs, 8)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be positive")
    if not 0.0 < args.malignant_fraction <= 1.0:
        parser.error("--malignant-fraction must be in (0, 1]")
    return args


if __name__ == "__main__":
    parse_args(sys.argv[1:])  # --help and argument errors answer before JAX and Flax are imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import jxent  # noqa: E402

matplotlib.use("Agg")  # no display needed; only a PNG is written
import matplotlib.pyplot as plt  # noqa: E402

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int  # 2 means one sigmoid output


def _split_and_scale(name: str, x: np.ndarray, y: np.ndarray, num_classes: int, seed: int) -> Dataset:
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(x_train)
    return Dataset(
        name,
        scaler.transform(x_train).astype(np.float32),
        y_train,
        scaler.transform(x_test).astype(np.float32),
        y_test,
        num_classes,
    )


def load_data(seed: int, malignant_fraction: float = 1.0) -> tuple[Dataset, Dataset]:
    """Digits and breast cancer, split 75/25 (stratified) and standardised on the training split.

    ``malignant_fraction`` < 1 drops malignant cases from the *training* split only, to make it more imbalanced.
    """
    digits = load_digits()
    cancer = load_breast_cancer()
    # scikit-learn codes malignant as 0; we predict "malignant" (the minority class) as the positive class.
    malignant = (cancer.target == 0).astype(np.int32)
    cancer_data = _split_and_scale("breast cancer", cancer.data, malignant, 2, seed)
    if malignant_fraction < 1.0:
        rng = np.random.default_rng(seed)
        pos = np.flatnonzero(cancer_data.y_train == 1)
        kept = rng.choice(pos, max(1, round(malignant_fraction * len(pos))), replace=False)
        keep = np.sort(np.concatenate([np.flatnonzero(cancer_data.y_train == 0), kept]))
        cancer_data = dataclasses.replace(
            cancer_data, x_train=cancer_data.x_train[keep], y_train=cancer_data.y_train[keep]
        )
    return _split_and_scale("digits", digits.data, digits.target.astype(np.int32), 10, seed), cancer_data


# ----------------------------------------------------------------------------------------------------------------
# Model and training step
# ----------------------------------------------------------------------------------------------------------------
class MLP(nnx.Module):
    """Two hidden ReLU layers; ``out_features`` logits (1 for a binary classifier)."""

    def __init__(self, in_features: int, hidden: int, out_features: int, *, rngs: nnx.Rngs):
        self.hidden1 = nnx.Linear(in_features, hidden, rngs=rngs)
        self.hidden2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden2(nnx.relu(self.hidden1(x)))))


def make_train_step(loss_fn: LossFn, binary: bool):
    """One jit-compiled step: forward pass, jxent loss, gradient, optimizer update."""

    @nnx.jit
    def train_step(model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
        def objective(model: MLP) -> jax.Array:
            logits = model(x)
            if binary:
                logits = logits[:, 0]
                return loss_fn(logits, y.astype(logits.dtype))
            return loss_fn(logits, y)

        loss, grads = nnx.value_and_grad(objective)(model)
        optimizer.update(model, grads)
        return loss

    return train_step


@nnx.jit
def predict(model: MLP, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Class probabilities ``[N, K]`` and the mean cross-entropy of the labels ``y``.

    The binary model's single logit ``z`` is the logit of class 1, so its two-class logits are ``[0, z]``.
    """
    logits = model(x)
    if logits.shape[-1] == 1:
        logits = jnp.concatenate([jnp.zeros_like(logits), logits], axis=-1)  # softmax([0, z]) = [1 - s(z), s(z)]
    nll = jxent.softmax_cross_entropy_with_integer_labels(logits, y, reduction="mean")
    return jxent.softmax(logits), nll


# ----------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------
def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """ECE with equal-width confidence bins: ``sum_b |B_b|/N * |accuracy(B_b) - confidence(B_b)|``."""
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == labels
    bins = np.minimum((confidence * num_bins).astype(int), num_bins - 1)
    ece = 0.0
    for b in range(num_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def evaluate(model: MLP, data: Dataset) -> dict[str, float]:
    probs, nll = predict(model, data.x_test, data.y_test)
    probs, labels = np.asarray(probs, dtype=np.float64), data.y_test
    metrics = {
        "loss": float(nll),
        "accuracy": float(np.mean(probs.argmax(-1) == labels)),
        "ece": expected_calibration_error(probs, labels),
    }
    if data.num_classes == 2:
        positives = labels == 1
        metrics["recall_pos"] = float(np.mean(probs[positives].argmax(-1) == 1))
    return metrics


# ----------------------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    data: Dataset
    name: str
    loss_fn: LossFn
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    final: dict[str, float] = dataclasses.field(default_factory=dict)


def make_runs(digits: Dataset, cancer: Dataset) -> list[Run]:
    n_pos = int(cancer.y_train.sum())
    n_neg = len(cancer.y_train) - n_pos
    pos_weight = n_neg / n_pos
    return [
        Run(
            digits,
            "cross-entropy",
            functools.partial(jxent.softmax_cross_entropy_with_integer_labels, reduction="mean"),
        ),
        Run(
            digits,
            "label smoothing 0.1",
            functools.partial(jxent.softmax_cross_entropy_with_integer_labels, label_smoothing=0.1, reduction="mean"),
        ),
        Run(
            digits,
            "focal gamma=2",
            functools.partial(jxent.softmax_focal_loss, gamma=2.0, reduction="mean"),
        ),
        Run(
            cancer,
            "sigmoid BCE",
            functools.partial(jxent.sigmoid_binary_cross_entropy, reduction="mean"),
        ),
        Run(
            cancer,
            f"sigmoid BCE pos_weight={pos_weight:.2f}",
            functools.partial(jxent.sigmoid_binary_cross_entropy, pos_weight=pos_weight, reduction="mean"),
        ),
    ]


def train(run: Run, *, epochs: int, batch_size: int, learning_rate: float, hidden: int, seed: int, bar) -> None:
    data = run.data
    binary = data.num_classes == 2
    # The same initialisation and the same batch order for every run of a data set: only the loss differs.
    model = MLP(data.x_train.shape[1], hidden, 1 if binary else data.num_classes, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adamw(learning_rate, weight_decay=1e-4), wrt=nnx.Param)
    train_step = make_train_step(run.loss_fn, binary)
    rng = np.random.default_rng(seed)
    n = len(data.x_train)
    run.history = {"train_objective": [], "test_loss": [], "test_accuracy": []}
    for _ in range(epochs):
        order = rng.permutation(n)
        losses = []
        for start in range(0, n - batch_size + 1, batch_size):  # drop the ragged last batch: one compiled shape
            idx = order[start : start + batch_size]
            losses.append(train_step(model, optimizer, data.x_train[idx], data.y_train[idx]))
        metrics = evaluate(model, data)
        run.history["train_objective"].append(float(np.mean(losses)))
        run.history["test_loss"].append(metrics["loss"])
        run.history["test_accuracy"].append(metrics["accuracy"])
        if "recall_pos" in metrics:
            run.history.setdefault("test_recall_pos", []).append(metrics["recall_pos"])
        bar.set_postfix_str(f"{data.name}: {run.name}, test acc {metrics['accuracy']:.3f}")
        bar.update(1)
    run.final = evaluate(model, data)


# ----------------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------------
COLUMNS = ("dataset", "run", "loss", "accuracy", "ece", "recall_pos")
HEADERS = ("data set", "loss function", "test loss (NLL)", "accuracy", "ECE", "recall (malignant)")


def table_rows(runs: Sequence[Run]) -> list[list[str]]:
    rows = []
    for run in runs:
        f = run.final
        recall = f"{f['recall_pos']:.3f}" if "recall_pos" in f else "-"
        rows.append([run.data.name, run.name, f"{f['loss']:.4f}", f"{f['accuracy']:.3f}", f"{f['ece']:.4f}", recall])
    return rows


def format_table(runs: Sequence[Run]) -> str:
    """A Markdown table (also readable as plain text)."""
    rows = [list(HEADERS), *table_rows(runs)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(rows[0]), sep, *(line(r) for r in rows[1:])])


def write_csv(runs: Sequence[Run], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for run in runs:
            writer.writerow(
                [run.data.name, run.name, *(f"{run.final[k]:.6f}" if k in run.final else "" for k in COLUMNS[2:])]
            )


def plot_curves(runs: Sequence[Run], path: Path) -> None:
    datasets = list(dict.fromkeys(run.data.name for run in runs))
    panels = [
        ("train_objective", "training objective (own loss)"),
        ("test_loss", "test loss (cross-entropy)"),
        ("test_accuracy", "test accuracy"),
    ]
    fig, axes = plt.subplots(len(datasets), len(panels), figsize=(13, 3.6 * len(datasets)), squeeze=False)
    for row, name in enumerate(datasets):
        for col, (key, title) in enumerate(panels):
            ax = axes[row, col]
            for run in runs:
                if run.data.name == name:
                    epochs = np.arange(1, len(run.history[key]) + 1)
                    (line,) = ax.plot(epochs, run.history[key], label=run.name, lw=1.8)
                    if key == "test_accuracy" and "test_recall_pos" in run.history:
                        ax.plot(epochs, run.history["test_recall_pos"], ls="--", lw=1.4, color=line.get_color())
                        title = "test accuracy; malignant recall dashed"
            ax.set_title(f"{name}: {title}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if key != "test_accuracy":
                ax.set_yscale("log")
            else:  # from the lowest accuracy or recall of any epoch, so that no curve starts below the axis
                keys = ("test_accuracy", "test_recall_pos")
                curves = [r.history[k] for r in runs if r.data.name == name for k in keys if k in r.history]
                lowest = min(min(c) for c in curves)
                ax.set_ylim(max(0.0, float(np.floor(lowest * 20) / 20)), 1.0)
        axes[row, -1].legend(fontsize=8, loc="lower right")
    fig.suptitle("jxent losses in a Flax/Optax training loop", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> list[Run]:
    """Runs the demo; returns the runs (with ``final`` metrics) for tests."""
    args = parse_args(argv)
    start = time.perf_counter()
    digits, cancer = load_data(args.seed, args.malignant_fraction)
    runs = make_runs(digits, cancer)
    with tqdm(total=args.epochs * len(runs), desc="training", unit="epoch", disable=args.no_progress) as bar:
        for run in runs:
            train(
                run,
                epochs=args.epochs,
                batch_size=args.batch_size,
                learning_rate=args.lr,
                hidden=args.hidden,
                seed=args.seed,
                bar=bar,
            )
    elapsed = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    table = format_table(runs)
    (args.out / "results.md").write_text(
        f"Held-out test split (25%), {args.epochs} epochs, seed {args.seed}; breast-cancer training split with "
        f"{args.malignant_fraction:.0%} of its malignant cases ({int(cancer.y_train.sum())} malignant, "
        f"{int((cancer.y_train == 0).sum())} benign). Test loss is plain cross-entropy for every run; "
        "ECE uses 15 equal-width bins.\n\n" + table + "\n"
    )
    write_csv(runs, args.out / "results.csv")
    plot_curves(runs, args.out / "training_curves.png")
    print()
    print(table)
    print(f"\n{args.epochs} epochs per run, {elapsed:.1f} s of training on {jax.devices()[0].platform.upper()}.")
    print(f"Wrote {args.out / 'training_curves.png'}, {args.out / 'results.md'} and {args.out / 'results.csv'}.")
    return runs


if __name__ == "__main__":
    main()
