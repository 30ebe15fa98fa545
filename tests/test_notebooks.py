"""The notebooks: every jupytext source is paired with an executed ``.ipynb`` in sync with it, and every source runs.

A notebook is ``notebooks/NN_name.py`` (jupytext percent format, the source) plus ``NN_name.ipynb`` (the same cells
with stored outputs); ``python notebooks/execute.py`` re-runs a source and rewrites its ``.ipynb``. The kernel is
the interpreter running pytest (``sys.executable``), not whatever ``python3`` kernel spec Jupyter finds first, so a
virtual environment's tests run its own notebooks. Needs the ``test`` extra.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# The `test` extra installs these; a missing one must fail the suite, not skip it.
import ipykernel  # noqa: F401
import jupytext
import matplotlib  # noqa: F401
import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
NAMES = [
    "01_softmax_cross_entropy",
    "02_binary_cross_entropy",
    "03_focal_loss",
    "04_label_smoothing_kl_entropy",
    "05_large_vocabulary",
]


def _load_runner():
    """notebooks/execute.py (not a package): the kernel set-up the committed notebooks ran with."""
    spec = importlib.util.spec_from_file_location("execute_notebooks", NOTEBOOK_DIR / "execute.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def test_every_notebook_is_a_pair():
    assert [path.stem for path in SOURCES] == NAMES
    assert sorted(path.stem for path in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")) == NAMES
    assert not (NOTEBOOK_DIR / "build_notebooks.py").exists()


def _in_sync(source_path: Path, stored_path: Path) -> bool:
    """The ``.ipynb`` has exactly the cells (type and text) of its jupytext source."""
    return _cells(jupytext.read(source_path)) == _cells(nbformat.read(stored_path, as_version=4))


@pytest.mark.parametrize("name", NAMES)
def test_pair_is_in_sync(name):
    """The ``.ipynb`` has exactly the cells of its ``.py`` source, and both declare the pairing."""
    source, stored = NOTEBOOK_DIR / f"{name}.py", NOTEBOOK_DIR / f"{name}.ipynb"
    assert _in_sync(source, stored), f"notebooks/{name}.ipynb is stale: run python notebooks/execute.py {name[:2]}"
    for nb in (jupytext.read(source), nbformat.read(stored, as_version=4)):
        assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"


def test_sync_check_catches_an_edited_source(tmp_path):
    """A source edited after its last run, by one comment, no longer matches its ``.ipynb``."""
    source, stored = NOTEBOOK_DIR / f"{NAMES[0]}.py", NOTEBOOK_DIR / f"{NAMES[0]}.ipynb"
    edited = tmp_path / source.name
    edited.write_text(source.read_text().replace("import jxent\n", "import jxent  # edited\n", 1))
    assert edited.read_text() != source.read_text()
    assert _in_sync(source, stored) and not _in_sync(edited, stored)


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebook_has_outputs(name):
    """The committed ``.ipynb`` was executed: every code cell ran, without errors, and the plots are stored."""
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code_cells
    assert all(cell.execution_count is not None for cell in code_cells), "run python notebooks/execute.py"
    outputs = [output for cell in code_cells for output in cell.outputs]
    assert any("image/png" in output.get("data", {}) for output in outputs)
    assert not [output for output in outputs if output.output_type == "error"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_source_executes(name, tmp_path):
    nb = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    runner.execute(nb, spec_root=tmp_path / "kernels")  # raises on the first failing cell (errors and asserts)
    assert any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
