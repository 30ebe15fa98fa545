"""examples/lm_large_vocab.py runs in fast mode: the transformer learns, and the fused head agrees and is smaller."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import flax  # noqa: F401  (the `test` extra installs the example's dependencies: missing must fail, not skip)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lm_large_vocab.py"


def _load():
    spec = importlib.util.spec_from_file_location("lm_large_vocab", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["lm_large_vocab"] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


def test_lm_example_fast_mode(tmp_path, capsys):
    plot = tmp_path / "curves.png"
    results = _load().main(["--fast", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert "compiled temp memory" in out and "tokens / s" in out and "held-out" in out
    assert results["held_out_initial"] > results["uniform"] - 0.5  # starts near uniform...
    assert results["held_out"] < results["uniform"] - 2.0  # ...and learns (about 6.4 against log V = 9.7)
    for fused, naive in (("loss_fused", "loss_naive"), ("held_out", "held_out_naive")):
        assert abs(results[fused] - results[naive]) < 1e-4 * abs(results[naive])
    # The whole training step, at B*T = 1024 and V = 16384: about 90 MiB of temp memory against 177 MiB.
    assert results["temp_mib_fused"] < 0.7 * results["temp_mib_naive"]
    assert results["peak_mib_fused"] < results["peak_mib_naive"]
    assert results["tokens_per_s_fused"] > 0 and results["tokens_per_s_naive"] > 0
    assert plot.is_file() and plot.stat().st_size > 1000


def test_lm_example_help_imports_nothing_heavy():
    code = (
        f"import runpy, sys; sys.argv = ['x', '--help']\ntry: runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')\n"
    )
    code += "except SystemExit: pass\nassert 'jax' not in sys.modules, 'jax imported for --help'\nprint('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--fast" in out.stdout and out.stdout.strip().endswith("ok"), out.stderr
