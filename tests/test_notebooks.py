"""Executes every notebook in notebooks/ and fails on any error or failed assertion in a cell.

The kernel is the interpreter running pytest (``sys.executable``), not whatever ``python3`` kernel spec Jupyter
finds first, so a virtual environment's tests run its own notebooks. Needs the ``test`` extra.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# The `test` extra installs these; a missing one must fail the suite, not skip it.
import ipykernel  # noqa: F401
import matplotlib  # noqa: F401
import nbclient
import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
TIMEOUT_S = 600  # per cell


def _load_builder():
    """notebooks/build_notebooks.py (not a package): its kernel set-up is the one the committed notebooks ran with."""
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOK_DIR / "build_notebooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kernel_manager = _load_builder().kernel_manager


def test_all_notebooks_are_present():
    names = [path.stem for path in NOTEBOOKS]
    assert names == [
        "01_softmax_cross_entropy",
        "02_binary_cross_entropy",
        "03_focal_loss",
        "04_label_smoothing_kl_entropy",
        "05_large_vocabulary",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_outputs(path):
    """The committed notebooks were executed: every code cell ran, and the plots are stored as PNG."""
    nb = nbformat.read(path, as_version=4)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code_cells
    assert all(cell.execution_count is not None for cell in code_cells), "re-run notebooks/build_notebooks.py"
    outputs = [output for cell in code_cells for output in cell.outputs]
    assert any("image/png" in output.get("data", {}) for output in outputs)
    assert not [output for output in outputs if output.output_type == "error"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        km=kernel_manager(tmp_path / "kernels"),
        timeout=TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell (errors and failed asserts alike)
    # The kernel really was this interpreter.
    assert nb.metadata["language_info"]["name"] == "python"
    assert client.km.kernel_spec.argv[0] == sys.executable
