"""Executes the jxent notebooks from their jupytext sources and stores the outputs in the paired ``.ipynb`` files.

Each notebook is a pair (``notebooks/jupytext.toml``): ``NN_name.py`` in jupytext's percent format is the source you
edit, and ``NN_name.ipynb`` holds the same cells with their executed outputs (text and PNG plots), which GitHub and
the documentation site show. Usage::

  python notebooks/execute.py           # run all five notebooks
  python notebooks/execute.py 03 05     # only those whose names start with 03 or 05

The kernel is the Python running this script (see :func:`kernel_manager`), so a virtual environment's notebooks
run in that environment. Needs the ``notebooks`` extra: ``pip install -e ".[notebooks]"``. ``tests/test_notebooks.py``
checks that every pair is in sync and that the sources execute.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
SOURCES = sorted(HERE.glob("[0-9][0-9]_*.py"))
TIMEOUT_S = 600  # per cell


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


def execute(nb: nbformat.NotebookNode, *, spec_root: Path, timeout: int = TIMEOUT_S) -> nbformat.NotebookNode:
    """Executes ``nb`` in place, in ``notebooks/``, with a kernel running this interpreter; raises on the first
    failing cell (an exception or a failed ``assert``)."""
    client = NotebookClient(
        nb,
        km=kernel_manager(spec_root),
        timeout=timeout,
        record_timing=False,
        resources={"metadata": {"path": str(HERE)}},
    )
    client.execute()
    return nb


def stable_ids(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Cell ids from each cell's position and text (not random), so re-running a notebook leaves unchanged cells'
    ids unchanged in the ``.ipynb`` diff."""
    for index, cell in enumerate(nb.cells):
        cell.id = hashlib.sha1(f"{index}:{cell.source}".encode()).hexdigest()[:8]
    return nb


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook name prefixes (default: all)")
    args = parser.parse_args(argv)
    selected = [p for p in SOURCES if not args.names or any(p.name.startswith(n) for n in args.names)]
    if not selected:
        parser.error(f"no notebook matches {args.names}; have {[p.stem for p in SOURCES]}")
    total = 0.0
    for source in selected:
        nb = jupytext.read(source)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as spec_root:
            execute(nb, spec_root=Path(spec_root))
        elapsed = time.perf_counter() - start
        total += elapsed
        target = source.with_suffix(".ipynb")
        jupytext.write(stable_ids(nb), target)
        print(f"{target.relative_to(HERE.parent)}: {len(nb.cells)} cells, {elapsed:.1f} s")
    print(f"executed {len(selected)} notebooks in {total:.1f} s")


if __name__ == "__main__":
    main()
