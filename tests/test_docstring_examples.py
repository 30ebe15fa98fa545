"""The ``Examples`` sections of the docstrings run, and print what they say (doctest, as part of the test command).

Every public name but those listed in ``NOT_YET`` has an example: the vocabulary-sharded forms need a mesh of
several devices, and are shown in the README and ``tests/test_parallel.py``/``tests/test_lm_head.py`` for now.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import jxent

MODULES = sorted(m.name for m in pkgutil.walk_packages(jxent.__path__, "jxent."))

NOT_YET = {
    "losses",  # the module; each of its classes has an example
    "sharded_linear_js_divergence",
    "sharded_linear_kl_divergence",
    "sharded_linear_softmax_cross_entropy",
    "sharded_linear_sparse_kl_divergence",
    "sharded_linear_token_statistics",
    "sharded_softmax_cross_entropy",
    "vocab_parallel_linear_js_divergence",
    "vocab_parallel_linear_kl_divergence",
    "vocab_parallel_linear_softmax_cross_entropy",
    "vocab_parallel_linear_sparse_kl_divergence",
    "vocab_parallel_linear_token_statistics",
    "vocab_parallel_softmax_cross_entropy",
}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_public_functions_have_examples():
    without = {name for name in jxent.__all__ if ">>>" not in (getattr(jxent, name).__doc__ or "")}
    assert without <= NOT_YET, f"public names without an Examples section: {sorted(without - NOT_YET)}"
    assert not (NOT_YET - set(jxent.__all__)), "NOT_YET lists names that are not public"
