"""The public API is typed: no ``Any`` in a public signature, and a type checker accepts right calls and rejects
wrong ones (PEP 561: jxent ships ``py.typed``)."""

from __future__ import annotations

import dataclasses
import inspect
import os
import pathlib
import subprocess
import sys
import textwrap
import typing
from typing import Any

import jax
import pytest

import jxent
from jxent import _checks, _typing, losses
from jxent.fused import config

LOSS_CLASSES = [getattr(losses, name) for name in losses.__all__]


def _public_callables() -> list[tuple[str, Any]]:
    out = []
    for name in jxent.__all__:
        obj = getattr(jxent, name)
        if inspect.isfunction(obj):
            out.append((f"jxent.{name}", obj))
    for cls in LOSS_CLASSES:
        out += [(f"jxent.losses.{cls.__name__}.__init__", cls.__init__)]
        out += [(f"jxent.losses.{cls.__name__}.__call__", cls.__call__)]
    return out


def _mentions_any(hint: Any) -> bool:
    return hint is Any or any(_mentions_any(arg) for arg in typing.get_args(hint))


def test_every_public_name_is_covered():
    covered = {name.removeprefix("jxent.") for name, _ in _public_callables()}
    not_functions = {"losses", "TokenStatistics"}  # the module, and a NamedTuple (its fields are checked below)
    assert set(jxent.__all__) - not_functions <= covered


@pytest.mark.parametrize(("name", "fn"), _public_callables(), ids=lambda v: v if isinstance(v, str) else "")
def test_public_signatures_are_annotated_without_any(name, fn):
    """Every parameter is annotated and none with ``Any`` (``**options`` forwarded elsewhere may be ``Any``); the
    return annotation is there and is not ``Any``."""
    hints = typing.get_type_hints(fn)  # also fails if an annotation does not resolve
    for p in inspect.signature(fn).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        assert p.name in hints, f"{name}: `{p.name}` is not annotated"
        assert not _mentions_any(hints[p.name]), f"{name}: `{p.name}` is annotated {hints[p.name]}"
    assert "return" in hints, f"{name}: no return annotation"
    assert not _mentions_any(hints["return"]), f"{name} returns {hints['return']}"


def test_token_statistics_fields_are_arrays():
    hints = typing.get_type_hints(jxent.TokenStatistics)
    assert hints == dict.fromkeys(jxent.TokenStatistics._fields, jax.Array)


def test_loss_class_settings_are_annotated_without_any():
    for cls in LOSS_CLASSES:
        for f in dataclasses.fields(cls):
            assert not _mentions_any(typing.get_type_hints(cls)[f.name]), f"{cls.__name__}.{f.name}"


def test_literal_settings_match_the_runtime_checks():
    assert set(typing.get_args(_typing.Reduction)) == set(_checks.REDUCTIONS)
    assert set(typing.get_args(_typing.Schedule)) == set(config.SCHEDULES)
    assert set(typing.get_args(_typing.WeightLayout)) == set(config.WEIGHT_LAYOUTS)


GOOD = """
import jax
import numpy as np

import jxent

logits, probs = np.zeros((2, 3)), np.ones((2, 3)) / 3
h, w, y = np.zeros((2, 4)), np.zeros((4, 3)), np.zeros(2, dtype=np.int32)
loss: jax.Array = jxent.softmax_cross_entropy(logits, probs)
mean: jax.Array = jxent.softmax_cross_entropy_with_integer_labels(logits, y, reduction="mean", label_smoothing=0.1)
fused: jax.Array = jxent.linear_softmax_cross_entropy(h, w, y)
loss_and_lse: tuple[jax.Array, jax.Array] = jxent.linear_softmax_cross_entropy(h, w, y, return_lse=True)
stats: jxent.TokenStatistics = jxent.linear_token_statistics(h, w, y, schedule="token")
obj: jax.Array = jxent.losses.CrossEntropy(weight=[1.0, 2.0, 3.0], reduction="sum")(logits, y)
"""

# Each line must be rejected (the marker ``# E`` names the lines; mypy reports each by its line number).
BAD = """
import jax
import numpy as np

import jxent

logits, probs = np.zeros((2, 3)), np.ones((2, 3)) / 3
h, w, y = np.zeros((2, 4)), np.zeros((4, 3)), np.zeros(2, dtype=np.int32)
jxent.softmax_cross_entropy(logits, probs, reduction=3)  # E
jxent.softmax_cross_entropy(logits, probs, reduction="avg")  # E
jxent.linear_softmax_cross_entropy(h, w, y, schedule="fast")  # E
jxent.softmax_cross_entropy(logits, probs, ignore_index=0.5)  # E
fused: jax.Array = jxent.linear_softmax_cross_entropy(h, w, y, return_lse=True)  # E
name: str = jxent.softmax(logits)  # E
jxent.losses.CrossEntropy(reduction="avg")  # E
"""


def test_mypy_accepts_right_calls_and_rejects_wrong_ones(tmp_path):
    """One mypy run over two small user modules (about 10 s without a cache: it reads JAX's annotations)."""
    pytest.importorskip("mypy")
    (tmp_path / "good.py").write_text(textwrap.dedent(GOOD))
    (tmp_path / "bad.py").write_text(textwrap.dedent(BAD))
    # A neutral configuration (not the project's), and jxent's own modules checked but not reported on.
    (tmp_path / "mypy.ini").write_text("[mypy]\n\n[mypy-jxent.*]\nfollow_imports = silent\n")
    # jxent may be an editable install, whose import hook mypy does not follow: point it at the source tree.
    env = {**os.environ, "MYPYPATH": str(pathlib.Path(jxent.__file__).parent.parent)}
    args = ["--config-file", "mypy.ini", "--cache-dir", str(tmp_path / "cache"), "--no-color-output"]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", *args, "good.py", "bad.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    assert not [e for e in errors if e.startswith("good.py")], result.stdout
    expected = {i for i, line in enumerate(textwrap.dedent(BAD).splitlines(), start=1) if line.endswith("# E")}
    reported = {int(e.split(":")[1]) for e in errors if e.startswith("bad.py")}
    assert reported == expected, result.stdout + result.stderr
