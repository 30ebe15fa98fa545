"""The documentation site's sources: every public name has an API page, and the guides' code runs.

Each ```` ```python ```` block of a page in ``docs/`` runs, in order, in one namespace per page (a page's blocks
build on each other); the blocks assert what the text says. The site itself is built with warnings as errors by
``.ci/run`` (``python -m sphinx -W --keep-going -b html docs docs/_build/html``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import jxent
import jxent.losses

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_the_guides_exist():
    assert {page.stem for page in PAGES} >= {
        "index",
        "coming_from_optax",
        "coming_from_pytorch",
        "numerics",
        "large_vocabularies",
    }


def test_api_reference_lists_every_public_name_once():
    listed = re.findall(r"^   ([\w.]+)$", (DOCS / "api.rst").read_text(), re.M)
    public = [name for name in jxent.__all__ if name != "losses"]
    public += [f"losses.{name}" for name in jxent.losses.__all__]
    assert sorted(listed) == sorted(public)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_page_code_runs(page):
    blocks = FENCE.findall(page.read_text())
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for index, block in enumerate(blocks):
        code = compile(block, f"{page.name} (python block {index + 1})", "exec")
        exec(code, namespace)  # an exception or a failed assert fails the test, naming the page and block
