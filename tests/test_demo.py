"""The training demo (examples/train_demo.py) runs in fast mode, learns, and writes its outputs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# The `test` extra installs the demo's dependencies; a missing one must fail the suite, not skip it.
import flax  # noqa: F401
import matplotlib  # noqa: F401
import pytest
import sklearn  # noqa: F401
import tqdm as _tqdm  # noqa: F401

DEMO = Path(__file__).resolve().parents[1] / "examples" / "train_demo.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("train_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_demo"] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("train_demo", None)


@pytest.fixture(scope="module")
def fast_run(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    runs = demo.main(["--fast", "--no-progress", "--out", str(out)])
    return runs, out


def test_demo_learns(fast_run):
    runs, _ = fast_run
    assert len(runs) == 5
    for run in runs:
        final = run.final
        chance = 1.0 / run.data.num_classes
        threshold = 0.85 if run.data.name == "digits" else 0.88  # chance: 0.10 (digits), 0.63 (majority class)
        assert final["accuracy"] > threshold, (run.data.name, run.name, final)
        assert final["accuracy"] > 3 * chance or run.data.num_classes == 2
        assert 0.0 <= final["ece"] <= 1.0
        assert 0.0 < final["loss"] < 1.0, (run.name, final)
        # The training objective went down.
        objective = run.history["train_objective"]
        assert objective[-1] < objective[0], (run.name, objective)
    binary = [run for run in runs if run.data.num_classes == 2]
    assert {("pos_weight" in run.name) for run in binary} == {True, False}
    for run in binary:
        assert run.final["recall_pos"] > 0.7, (run.name, run.final)


def test_demo_writes_outputs(fast_run):
    runs, out = fast_run
    png = out / "training_curves.png"
    assert png.is_file() and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "results.md").read_text()
    for run in runs:
        assert run.name in table
    assert "accuracy" in table and "ECE" in table
    csv_lines = (out / "results.csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("dataset,run,loss,accuracy,ece")
    assert len(csv_lines) == 1 + len(runs)


def test_demo_is_deterministic(demo):
    from tqdm import tqdm

    digits, cancer = demo.load_data(seed=3)
    histories = []
    for _ in range(2):
        run = demo.make_runs(digits, cancer)[0]
        with tqdm(disable=True) as bar:
            demo.train(run, epochs=2, batch_size=64, learning_rate=1e-3, hidden=32, seed=3, bar=bar)
        histories.append((run.history, run.final))
    assert histories[0] == histories[1]


def test_demo_help(demo, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--epochs", "--seed", "--out", "--fast"):
        assert option in text


def test_demo_help_imports_nothing_heavy():
    """`python examples/train_demo.py --help` answers before JAX, Flax or scikit-learn are imported."""
    import subprocess

    code = (
        "import runpy, sys\n"
        "sys.argv = ['train_demo.py', '--help']\n"
        f"try: runpy.run_path({str(DEMO)!r}, run_name='__main__')\n"
        "except SystemExit: pass\n"
        "heavy = [m for m in ('jax', 'flax', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--epochs" in out.stdout and out.stdout.strip().endswith("ok")


def test_quickstart_runs_and_agrees_with_optax():
    """examples/quickstart.py runs as a user would run it, and its jxent and optax lines print the same losses."""
    import subprocess

    script = DEMO.parent / "quickstart.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    lines = result.stdout.splitlines()
    ours = next(line for line in lines if line.strip().startswith("jxent"))
    theirs = next(line for line in lines if line.strip().startswith("optax"))
    values = [[float(x) for x in line.split("[")[1].rstrip("]").split()] for line in (ours, theirs)]
    assert len(values[0]) == 3 and values[0] == pytest.approx(values[1], rel=1e-5)
