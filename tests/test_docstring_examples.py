"""The ``Examples`` sections of the docstrings run, and print what they say (doctest, as part of the test command).

Every public name has an example. Those of the vocabulary-sharded forms build a mesh over every device, so they
run on one device as on the tests' eight (``conftest.py``).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import jxent

MODULES = sorted(m.name for m in pkgutil.walk_packages(jxent.__path__, "jxent."))

import jxent.losses  # noqa: E402

PUBLIC = {f"jxent.{name}": getattr(jxent, name) for name in jxent.__all__ if name != "losses"} | {
    f"jxent.losses.{name}": getattr(jxent.losses, name) for name in jxent.losses.__all__
}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_every_public_name_has_an_example():
    without = sorted(name for name, obj in PUBLIC.items() if ">>>" not in (obj.__doc__ or ""))
    assert not without, f"public names without an Examples section: {without}"
