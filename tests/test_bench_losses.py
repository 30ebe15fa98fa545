"""Smoke test of the dense-loss benchmark (benchmarks/bench_losses.py --quick): it runs and tabulates every row.

Timings are not checked (CI machines are shared and noisy); only that the table is complete and well-formed,
that the bandwidth floor compiles to a real operation, and that each function was traced once per shape.
"""

import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_losses", os.path.join(ROOT, "benchmarks", "bench_losses.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_produces_the_full_table(bench, tmp_path, capsys):
    output = tmp_path / "dense.md"
    assert bench.main(["--quick", "--no-progress", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    text = output.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| loss")]
    expected = {(loss.name, dtype) for loss in bench.LOSSES for dtype in ("float32", "bfloat16")}
    listed = {(cells[0], cells[1]) for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)}
    assert listed == expected
    assert len(rows) == len(bench.LOSSES) * 2 * len(bench.QUICK_SHAPES)
    header = [c.strip() for c in text.splitlines()[4].strip("|").split("|")]
    for row in rows:
        cells = dict(zip(header, (c.strip() for c in row.strip("|").split("|")), strict=True))
        for column in ("jxent ms", "optax ms", "plain ms", "floor ms", "jxent/optax", "jxent/floor"):
            assert float(cells[column]) > 0, row
        assert cells["traces"] == "1", row
    assert text.strip() in printed  # the same table goes to stdout


def test_hlo_pass_counter_sees_the_copy(bench):
    import jax
    import jax.numpy as jnp

    x = jax.ShapeDtypeStruct((8, 16), jnp.float32)
    text = jax.jit(lambda x: -x).lower(x).compile().as_text()
    bench._check_floor_is_real(text)
    assert bench.hlo_passes(text, 8, 16)[:2] == (1, 1)
