"""Sphinx configuration for the jxent documentation site.

Build it with ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (the ``docs`` extra installs the
toolchain). The notebooks are rendered from their stored outputs (``notebooks/*.ipynb``); they are not re-executed
here (``tests/test_notebooks.py`` executes them).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import jxent  # noqa: E402

project = "jxent"
author = "the jxent developers"
copyright = "2026, the jxent developers"
release = version = jxent.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

# API reference: one page per public name, generated from the docstrings (Google style, read by napoleon).
autosummary_generate = True
autodoc_typehints = "signature"
TYPE_ALIASES = ("ArrayLike", "Reduction", "Schedule", "WeightLayout", "MeshAxes")  # documented in api.rst
autodoc_type_aliases = {name: name for name in TYPE_ALIASES}
autodoc_member_order = "bysource"
autodoc_default_options = {"members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
add_module_names = False
python_use_unqualified_type_names = True

# Markdown pages and notebooks (MyST). The notebooks keep the outputs they were executed with.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"
nb_merge_streams = True
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# Every cross-reference to jxent must resolve (-W makes a broken one an error). References to jax, optax, NumPy and
# the standard library stay plain text: CI has no network for intersphinx inventories.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(jax|jaxlib|optax|numpy|collections|typing|flax)\..*"),
    (r"py:class", r"(Array|ndarray|Mesh|Sequence|Literal)"),
]

html_theme = "sphinx_book_theme"
html_title = f"jxent {release}"
html_theme_options = {"show_toc_level": 2, "use_download_button": True}
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "README.md"]


def _copy_notebooks() -> None:
    """The executed notebooks live in ``notebooks/``; Sphinx reads documents only below ``docs/``."""
    target = DOCS / "notebooks"
    target.mkdir(exist_ok=True)
    sources = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for stale in set(target.glob("*.ipynb")) - {target / notebook.name for notebook in sources}:
        stale.unlink()  # a renamed or removed notebook
    for notebook in sources:
        destination = target / notebook.name
        if not destination.exists() or destination.read_bytes() != notebook.read_bytes():
            shutil.copyfile(notebook, destination)


_copy_notebooks()


def _readable_types(app, what, name, obj, options, signature, return_annotation):
    """Writes the public type names in signatures: ``ArrayLike`` where the ``jxent.losses`` dataclasses' evaluated
    annotations spell out its union, ``Reduction`` for its ``Literal``, ``jax.Array`` for jax's private path, and
    the alias itself where autodoc shows ``TypeAliasForwardRef('ArrayLike')``."""
    from jax.typing import ArrayLike
    from sphinx.util.typing import stringify_annotation

    from jxent._typing import Reduction

    names = {"ArrayLike": ArrayLike, "Reduction": Reduction}
    replacements = {
        stringify_annotation(value, mode): name
        for name, value in names.items()
        for mode in ("smart", "fully-qualified-except-typing")
    }
    replacements.update({f"TypeAliasForwardRef('{alias}')": alias for alias in TYPE_ALIASES})
    replacements["jax.jaxlib._jax.Array"] = "jax.Array"

    def rewrite(text):
        for spelled, short in sorted(replacements.items(), key=lambda item: -len(item[0])):
            text = text.replace(spelled, short)
        return text

    return (signature and rewrite(signature)), (return_annotation and rewrite(return_annotation))


def setup(app):
    app.connect("autodoc-process-signature", _readable_types)
