"""examples/distill_lm.py runs in fast mode: the student learns from the teacher and the fused step is smaller."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import flax  # noqa: F401  (the `test` extra installs the example's dependencies: missing must fail, not skip)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "distill_lm.py"


def _load():
    spec = importlib.util.spec_from_file_location("distill_lm", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["distill_lm"] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


def test_distill_example_fast_mode(capsys):
    results = _load().main(["--fast"])
    out = capsys.readouterr().out
    assert "held-out cross-entropy" in out and "compiled temp memory" in out
    uniform = math.log(4096)
    for key in ("teacher", "student_labels_only", "student_distilled"):
        assert results[key] < uniform  # every model learned something
    assert results["temp_mib_fused"] < 0.5 * results["temp_mib_naive"]
    assert abs(results["loss_fused"] - results["loss_naive"]) < 1e-4 * max(1.0, abs(results["loss_naive"]))


def test_distill_example_help_imports_nothing_heavy():
    code = (
        f"import runpy, sys; sys.argv = ['x', '--help']\ntry: runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')\n"
    )
    code += "except SystemExit: pass\nassert 'jax' not in sys.modules, 'jax imported for --help'\nprint('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--fast" in out.stdout and out.stdout.strip().endswith("ok"), out.stderr
