"""Loss objects in jxent.losses: same numbers as the functions, usable in a jitted step, hashable."""

import dataclasses
import functools
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jxent
from jxent import losses

RNG = np.random.default_rng(0)
LOGITS = jnp.asarray(RNG.normal(size=(6, 4)) * 2, jnp.float32)
INT_LABELS = jnp.asarray(RNG.integers(0, 4, size=6))
PROBS = jnp.asarray(RNG.dirichlet(np.ones(4), size=6), jnp.float32)
BINARY = jnp.asarray(RNG.random((6, 4)), jnp.float32)

# (object, function, predictions, labels, options): the object is built from the options, and must equal the
# function called with the same options.
CASES = [
    (
        losses.CrossEntropy,
        jxent.softmax_cross_entropy,
        LOGITS,
        INT_LABELS,
        {"label_smoothing": 0.1, "z_loss": 1e-3, "soft_cap": 5.0, "temperature": 0.9, "reduction": "mean"},
    ),
    (losses.CrossEntropy, jxent.softmax_cross_entropy, LOGITS, PROBS, {"reduction": "sum"}),
    (losses.CrossEntropy, jxent.softmax_cross_entropy, LOGITS, INT_LABELS, {"ignore_index": 2, "reduction": "none"}),
    (
        losses.SigmoidBinaryCrossEntropy,
        jxent.sigmoid_binary_cross_entropy,
        LOGITS,
        BINARY,
        {"label_smoothing": 0.1, "reduction": "mean"},
    ),
    (losses.BinaryCrossEntropy, jxent.binary_cross_entropy, jax.nn.sigmoid(LOGITS), BINARY, {"reduction": "sum"}),
    (
        losses.CategoricalCrossEntropy,
        jxent.categorical_cross_entropy,
        PROBS,
        INT_LABELS,
        {"label_smoothing": 0.2, "reduction": "mean"},
    ),
    (losses.SigmoidFocalLoss, jxent.sigmoid_focal_loss, LOGITS, BINARY, {"alpha": 0.25, "gamma": 0.5}),
    (losses.SoftmaxFocalLoss, jxent.softmax_focal_loss, LOGITS, INT_LABELS, {"gamma": 2.0, "reduction": "sum"}),
    (losses.PolyLoss, jxent.poly_loss_cross_entropy, LOGITS, PROBS, {"epsilon": -1.0}),
    (losses.GeneralizedCrossEntropy, jxent.generalized_cross_entropy, LOGITS, INT_LABELS, {"q": 0.5}),
    (losses.KLDivergence, jxent.kl_divergence, jax.nn.log_softmax(LOGITS), PROBS, {"reduction": "sum"}),
]
IDS = [f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)]


@pytest.mark.parametrize(("cls", "fn", "predictions", "labels", "options"), CASES, ids=IDS)
def test_object_equals_function_and_works_in_a_jitted_step(cls, fn, predictions, labels, options):
    loss_fn = cls(**options)
    fn_options = {"reduction": "mean", **options}  # objects default to "mean"

    @jax.jit
    def step(p, y):
        return loss_fn(p, y), jax.grad(lambda p: jnp.sum(loss_fn(p, y)))(p)

    @jax.jit
    def direct(p, y):
        return fn(p, y, **fn_options), jax.grad(lambda p: jnp.sum(fn(p, y, **fn_options)))(p)

    value, grad = step(predictions, labels)
    expected, expected_grad = direct(predictions, labels)
    np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-7)


def test_objects_default_to_mean():
    for cls in (
        losses.CrossEntropy,
        losses.SigmoidBinaryCrossEntropy,
        losses.BinaryCrossEntropy,
        losses.CategoricalCrossEntropy,
        losses.SigmoidFocalLoss,
        losses.SoftmaxFocalLoss,
        losses.PolyLoss,
        losses.GeneralizedCrossEntropy,
        losses.KLDivergence,
    ):
        assert cls().reduction == "mean", cls


def test_where_is_forwarded():
    loss_fn = losses.CrossEntropy(reduction="none")
    where = jnp.array([True, False, True, True, False, True])
    out, expected = jax.jit(lambda z, y: (loss_fn(z, y, where=where), jxent.softmax_cross_entropy(z, y, where=where)))(
        LOGITS, INT_LABELS
    )
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out[1] == 0 and out[4] == 0


def test_hashable_and_usable_as_a_static_argument():
    a = losses.CrossEntropy(label_smoothing=0.1, reduction="mean")
    b = losses.CrossEntropy(label_smoothing=0.1, reduction="mean")
    c = losses.CrossEntropy(label_smoothing=0.2, reduction="mean")
    assert a == b and hash(a) == hash(b) and a != c
    assert len({a, b, c}) == 2

    traces = []

    @functools.partial(jax.jit, static_argnums=0)
    def step(loss_fn, logits, labels):
        traces.append(loss_fn)
        return loss_fn(logits, labels)

    step(a, LOGITS, INT_LABELS)
    step(b, LOGITS + 1.0, INT_LABELS)  # equal options: the cached trace is reused
    assert len(traces) == 1
    np.testing.assert_allclose(
        step(c, LOGITS, INT_LABELS),
        jxent.softmax_cross_entropy(LOGITS, INT_LABELS, label_smoothing=0.2, reduction="mean"),
        rtol=1e-6,
    )
    assert len(traces) == 2


def test_array_options_are_stored_as_tuples_and_stay_hashable():
    """Class weights given as a NumPy/JAX array or a list: the object hashes and compares by value."""
    weights = [1.0, 2.0, 0.5]
    objs = [losses.CrossEntropy(weight=w) for w in (jnp.asarray(weights), np.asarray(weights), weights)]
    assert all(o.weight == (1.0, 2.0, 0.5) for o in objs)
    assert len({*objs}) == 1 and hash(objs[0]) == hash(objs[1])
    step = jax.jit(lambda loss_fn, z, y: loss_fn(z, y), static_argnums=0)
    np.testing.assert_allclose(
        step(objs[0], LOGITS[:, :3], INT_LABELS % 3),
        jxent.softmax_cross_entropy(LOGITS[:, :3], INT_LABELS % 3, weight=jnp.asarray(weights), reduction="mean"),
        rtol=1e-6,
    )


def test_array_alpha_in_softmax_focal_loss_object():
    """A per-class ``alpha`` array is stored as a tuple; the loss checks it without NumPy-on-tuple deprecations."""
    loss_fn = losses.SoftmaxFocalLoss(alpha=jnp.array([0.2, 0.3, 0.5]))
    z, y = LOGITS[:, :3], INT_LABELS % 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = loss_fn(z, y)
    expected = jxent.softmax_focal_loss(z, y, alpha=jnp.array([0.2, 0.3, 0.5]), reduction="mean")
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_traced_options_are_kept_as_they_are():
    """Inside ``jit`` an option may hold tracers (e.g. weights being tuned): it is passed on unchanged."""
    z, y = LOGITS[:, :3], INT_LABELS % 3

    def with_list(w0):
        return losses.CrossEntropy(weight=[w0, 1.0, 2.0])(z, y)

    def with_array(w):
        return losses.CrossEntropy(weight=w)(z, y)

    expected = jxent.softmax_cross_entropy(z, y, weight=jnp.array([0.5, 1.0, 2.0]), reduction="mean")
    np.testing.assert_allclose(jax.jit(with_list)(0.5), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(with_array)(jnp.array([0.5, 1.0, 2.0])), expected, rtol=1e-6)


def test_frozen():
    loss_fn = losses.CrossEntropy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        loss_fn.label_smoothing = 0.5  # type: ignore[misc]


def test_bad_options_raise_when_called():
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.CrossEntropy(label_smoothing=2.0)(LOGITS, INT_LABELS)
    with pytest.raises(ValueError, match="reduction"):
        losses.SigmoidFocalLoss(reduction="avg")(LOGITS, BINARY)


LOSS_CLASSES = sorted({c[0] for c in CASES}, key=lambda cls: cls.__name__)
# One valid call of each class's function, to compare the object's messages with the function's.
CALLS = {cls: (fn, p, y) for cls, fn, p, y, _ in reversed(CASES)}

# (class, bad settings, exception, message): the object raises when it is built, and the function called with the
# same settings raises the same (the temperature bound is "(0, inf)" in CrossEntropyOptions, "(0, inf]" in the
# functions' older check).
BAD_SETTINGS = [
    (
        losses.CrossEntropy,
        {"reduction": "avg"},
        ValueError,
        "`reduction` must be one of ('none', 'mean', 'sum'); got 'avg'.",
    ),
    (losses.CrossEntropy, {"label_smoothing": 1.5}, ValueError, "`label_smoothing` must lie in [0, 1]; got 1.5."),
    (losses.CrossEntropy, {"temperature": 0}, ValueError, "`temperature` must lie in (0, inf"),
    (losses.CrossEntropy, {"z_loss": -1.0}, ValueError, "`z_loss` must lie in [0, inf]; got -1.0."),
    (losses.CrossEntropy, {"soft_cap": 0.0}, ValueError, "`soft_cap` must lie in (0, inf]; got 0.0."),
    (losses.CrossEntropy, {"ignore_index": 1.5}, TypeError, "`ignore_index` must be a Python int or None; got 1.5."),
    (losses.CrossEntropy, {"label_smoothing": np.array([0.1, 0.2])}, ValueError, "`label_smoothing` must be a scalar"),
    (losses.SigmoidBinaryCrossEntropy, {"label_smoothing": -0.1}, ValueError, "`label_smoothing` must lie in [0, 1]"),
    (
        losses.SigmoidBinaryCrossEntropy,
        {"label_smoothing": [0.1]},
        ValueError,
        "`label_smoothing` must be a scalar; got list [0.1].",
    ),
    (losses.BinaryCrossEntropy, {"reduction": "avg"}, ValueError, "`reduction` must be one of"),
    (
        losses.CategoricalCrossEntropy,
        {"ignore_index": True},
        TypeError,
        "`ignore_index` must be a Python int or None; got True.",
    ),
    (
        losses.CategoricalCrossEntropy,
        {"label_smoothing": float("nan")},
        ValueError,
        "`label_smoothing` must lie in [0, 1]; got nan.",
    ),
    (losses.SigmoidFocalLoss, {"gamma": -1}, ValueError, "`gamma` must lie in [0, inf]; got -1.0."),
    (losses.SigmoidFocalLoss, {"alpha": 1.5}, ValueError, "`alpha` must lie in [0, 1]; got 1.5."),
    (losses.SigmoidFocalLoss, {"reduction": "avg"}, ValueError, "`reduction` must be one of"),
    (losses.SoftmaxFocalLoss, {"alpha": -0.5}, ValueError, "`alpha` must lie in [0, 1]; got -0.5."),
    (losses.SoftmaxFocalLoss, {"label_smoothing": 2.0}, ValueError, "`label_smoothing` must lie in [0, 1]; got 2.0."),
    (losses.SoftmaxFocalLoss, {"ignore_index": "x"}, TypeError, "`ignore_index` must be a Python int or None"),
    (losses.PolyLoss, {"reduction": "x"}, ValueError, "`reduction` must be one of ('none', 'mean', 'sum'); got 'x'."),
    (losses.PolyLoss, {"ignore_index": 1.5}, TypeError, "`ignore_index` must be a Python int or None; got 1.5."),
    (losses.GeneralizedCrossEntropy, {"q": 0}, ValueError, "`q` must lie in (0, 1]; got 0.0."),
    (losses.GeneralizedCrossEntropy, {"ignore_index": 2.0}, TypeError, "`ignore_index` must be a Python int or None"),
    (
        losses.KLDivergence,
        {"reduction": None},
        ValueError,
        "`reduction` must be one of ('none', 'mean', 'sum'); got None.",
    ),
]


@pytest.mark.parametrize(
    ("cls", "settings", "error", "message"),
    BAD_SETTINGS,
    ids=[f"{c[0].__name__}-{next(iter(c[1]))}" for c in BAD_SETTINGS],
)
def test_bad_settings_raise_when_built_with_the_functions_message(cls, settings, error, message):
    with pytest.raises(error, match=re.escape(message)):
        cls(**settings)
    fn, p, y = CALLS[cls]
    with pytest.raises(error, match=re.escape(message)):
        fn(p, y, **settings)


def test_bad_settings_raise_in_replace():
    loss_fn = losses.SoftmaxFocalLoss(gamma=1.0)
    with pytest.raises(ValueError, match="`gamma` must lie in"):
        dataclasses.replace(loss_fn, gamma=-0.5)
    with pytest.raises(ValueError, match="`temperature` must lie in"):
        dataclasses.replace(losses.CrossEntropy(), temperature=-1.0)


def test_cross_entropy_settings_are_stored_normalised():
    """CrossEntropy keeps what CrossEntropyOptions makes of its settings: Python numbers, ``soft_cap=inf`` as
    ``None`` (the limit of no capping), so equal settings give equal objects."""
    loss_fn = losses.CrossEntropy(
        label_smoothing=np.float32(0.5), temperature=jnp.asarray(2.0), ignore_index=np.int64(3)
    )
    assert type(loss_fn.label_smoothing) is float and type(loss_fn.temperature) is float
    assert type(loss_fn.ignore_index) is int and loss_fn.ignore_index == 3
    assert loss_fn == losses.CrossEntropy(label_smoothing=0.5, temperature=2.0, ignore_index=3)
    capped = losses.CrossEntropy(soft_cap=float("inf"))
    assert capped.soft_cap is None and capped == losses.CrossEntropy() and hash(capped) == hash(losses.CrossEntropy())
    np.testing.assert_allclose(capped(LOGITS, INT_LABELS), losses.CrossEntropy()(LOGITS, INT_LABELS), rtol=1e-6)


def test_traced_settings_are_accepted_unchecked():
    """Objects built inside ``jit`` from traced settings are not range-checked (their values are unknown) and give
    the function's values."""
    z, y = LOGITS, INT_LABELS

    def objects(t):
        return [
            losses.CrossEntropy(label_smoothing=t / 10, z_loss=t / 100, soft_cap=t * 5, temperature=t)(z, y),
            losses.SigmoidBinaryCrossEntropy(label_smoothing=t / 10)(z, BINARY),
            losses.CategoricalCrossEntropy(label_smoothing=t / 10)(PROBS, y),
            losses.SigmoidFocalLoss(alpha=t / 4, gamma=t)(z, BINARY),
            losses.SoftmaxFocalLoss(alpha=t / 4, gamma=t, label_smoothing=t / 10)(z, y),
            losses.PolyLoss(epsilon=t)(z, y),
            losses.GeneralizedCrossEntropy(q=t / 2)(z, y),
        ]

    def functions(t):
        mean = {"reduction": "mean"}
        return [
            jxent.softmax_cross_entropy(
                z, y, label_smoothing=t / 10, z_loss=t / 100, soft_cap=t * 5, temperature=t, **mean
            ),
            jxent.sigmoid_binary_cross_entropy(z, BINARY, label_smoothing=t / 10, **mean),
            jxent.categorical_cross_entropy(PROBS, y, label_smoothing=t / 10, **mean),
            jxent.sigmoid_focal_loss(z, BINARY, alpha=t / 4, gamma=t, **mean),
            jxent.softmax_focal_loss(z, y, alpha=t / 4, gamma=t, label_smoothing=t / 10, **mean),
            jxent.poly_loss_cross_entropy(z, y, epsilon=t, **mean),
            jxent.generalized_cross_entropy(z, y, q=t / 2, **mean),
        ]

    for got, expected in zip(jax.jit(objects)(0.9), functions(0.9), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("cls", LOSS_CLASSES, ids=lambda cls: cls.__name__)
def test_settings_are_keyword_only(cls):
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(TypeError, match="positional"):
        cls(getattr(cls(), first))
    assert cls(**{first: getattr(cls(), first)}) == cls()


def test_module_lists_only_the_loss_classes():
    public = [name for name in dir(losses) if not name.startswith("_")]
    assert public == sorted(losses.__all__)
    assert public == [cls.__name__ for cls in LOSS_CLASSES]
    assert all(isinstance(getattr(losses, name), type) and callable(getattr(losses, name)()) for name in public)


@pytest.mark.parametrize("cls", LOSS_CLASSES, ids=lambda cls: cls.__name__)
def test_docstrings_describe_every_setting(cls):
    doc = cls.__doc__
    assert f":func:`jxent.{cls.fn.__name__}`" in doc and ">>> " in doc.split("Examples:")[1]
    attributes = doc.split("Attributes:")[1]
    for f in dataclasses.fields(cls):
        assert f"\n      {f.name}: " in attributes, f.name
