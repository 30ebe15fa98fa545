"""The cross-backend agreement check (jxent.testing): it runs clean on CPU and sharded, and it can fail.

CI has only a CPU, so "every backend" is the CPU here: the unsharded run compares each computation with its own
re-run, and the sharded run (8 fake CPU devices) compares a batch-sharded computation with the unsharded one.
"""

import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

import jxent
from jxent.testing import (
    DTYPES,
    NOT_CHECKED,
    OPTAX_TOLERANCE,
    REFERENCE_TOLERANCES,
    TOLERANCES,
    case_losses,
    compare_case,
    crosscheck,
    evaluate,
    finite_where_expected,
    make_cases,
    optax_tolerance,
    reference_tolerance,
    tolerance,
)
from tests import reference as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| loss"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _assert_every_loss_listed(text: str, backend: str, dtypes=DTYPES, losses=None) -> None:
    listed = {(r[0], r[1]) for r in _table_rows(text) if r[2] == backend}
    expected = {(loss, dtype) for loss in (losses or case_losses()) for dtype in dtypes}
    assert expected <= listed, f"missing from the {backend} table: {sorted(expected - listed)}"
    results = {r[-1] for r in _table_rows(text) if r[2] == backend}
    assert results == {"pass"}, text


def test_every_public_loss_has_a_case():
    checked = {name.split("[")[0] for name in case_losses()}
    public = set(jxent.__all__)
    if hasattr(jxent, "linear_softmax_cross_entropy"):  # being added to the public API
        public.add("linear_softmax_cross_entropy")
    assert public - set(NOT_CHECKED) == checked
    assert not checked & set(NOT_CHECKED)


def test_tolerances_are_stated_per_dtype():
    for dtype in DTYPES:
        assert tolerance(dtype) == TOLERANCES[dtype]
        assert tolerance(np.dtype(jax.numpy.dtype(dtype))) == TOLERANCES[dtype]
    with pytest.raises(ValueError, match="No agreement tolerance"):
        tolerance("int32")


def test_reference_and_optax_tolerances_are_stated_once():
    # Against a float64 reference: one row per result dtype, as assert_allclose keywords, also through
    # tests/reference.py's `tol`.
    assert set(REFERENCE_TOLERANCES) == {*DTYPES, "float64"}
    for name, row in REFERENCE_TOLERANCES.items():
        expected = {"rtol": row.rtol, "atol": row.atol}
        assert reference_tolerance(name) == expected
        assert reference_tolerance(np.zeros(2, jax.numpy.dtype(name))) == expected  # an array
        assert ref.tol(jax.numpy.dtype(name)) == expected
    with pytest.raises(ValueError, match="No reference tolerance"):
        reference_tolerance("int32")
    assert optax_tolerance() == {"rtol": OPTAX_TOLERANCE.rtol, "atol": OPTAX_TOLERANCE.atol}


def test_cases_are_fixed_and_cover_the_extremes():
    first, second = make_cases(dtypes=["float16"]), make_cases(dtypes=["float16"])
    assert [c.name for c in first] == [c.name for c in second]
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a.diff_args + a.aux_args + a.tangents, b.diff_args + b.aux_args + b.tangents, strict=True):
            np.testing.assert_array_equal(x, y)
    logits = next(c for c in first if c.label == "softmax").diff_args[0].astype(np.float64)
    assert np.isposinf(logits).any() and np.isneginf(logits).any()
    assert np.any(np.abs(logits) == 9984.0) or np.any(np.abs(logits) == 1e4)  # ±1e4 as float16 holds it
    assert np.max(np.abs(logits[np.isfinite(logits)])) >= 0.4 * 65504 * 0.99  # near float16's largest value
    assert {c.variant for c in first} == {"plain", "masked"}


# The language-model head functions: their second-order (HVP) programs are the slowest of the set to compile, so
# the CI command leaves them out and test_lm_head_cases_run_finite_on_cpu runs them in float32; tests/test_lm_head.py
# checks their values, gradients, 16-bit inputs and sharded forms. benchmarks/gpu_check.sh crosschecks them all.
LM_HEAD_CASES = (
    "linear_token_statistics",
    "linear_kl_divergence",
    "linear_js_divergence",
    "linear_sparse_kl_divergence",
)


def test_crosscheck_on_cpu_and_sharded_on_8_fake_cpu_devices():
    """The command as CI runs it: every case on CPU (vs its re-run), and float32 sharded over 8 fake devices.

    The sharded run is limited to float32 to keep CI short (compiling the whole set costs about 30 s of CPU per
    placement); ``python -m jxent.testing.crosscheck --sharded --fake-devices 8`` shards every dtype.
    """
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the command sets the flag itself
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, "-m", "jxent.testing.crosscheck", "--sharded", "--fake-devices", "8"]
    cmd += ["--sharded-dtypes", "float32", "--losses", ",".join(_ci_losses())]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "cpu: 8 x" in out
    assert "finite where expected" in out
    _assert_every_loss_listed(out, "cpu", losses=_ci_losses())
    _assert_every_loss_listed(out, "cpu[sharded x8]", dtypes=["float32"], losses=_ci_losses())


def _ci_losses() -> list[str]:
    return [name for name in case_losses() if name not in LM_HEAD_CASES]


def test_lm_head_cases_run_finite_on_cpu():
    cases = make_cases(dtypes=["float32"], losses=list(LM_HEAD_CASES))
    assert {c.loss for c in cases} == set(LM_HEAD_CASES)
    results, failed = evaluate(cases, jax.devices("cpu")[0], repeats=1)
    assert not failed, failed
    for case in cases:
        assert finite_where_expected(case, results[case.name][0]) == [], case.name


def test_crosscheck_fails_on_an_injected_mismatch(capsys):
    status = crosscheck.main(["--losses", "softmax", "--dtypes", "float32", "--inject-mismatch", "softmax"])
    out = capsys.readouterr().out
    assert status == 1, out
    assert re.search(r"\| softmax \| float32 \| cpu \|.*\| FAIL \|", out), out
    assert "not close" in out


def _softmax_case():
    (case,) = make_cases(dtypes=["float32"], variants=["plain"], losses=["softmax"])
    results, failed = evaluate([case], jax.devices("cpu")[0], repeats=2)
    assert not failed
    return case, results[case.name]


def _perturbed(runs, fn):
    return [jax.tree.map(fn, runs[0]), *runs[1:]]


def test_compare_case_passes_identical_and_catches_perturbations():
    case, runs = _softmax_case()
    ok = compare_case(case, runs, runs, backend="cpu", reference_name="cpu")
    assert ok.passed and ok.rerun == "exact" and ok.finite and ok.max_abs == 0.0

    tol = tolerance("float32")
    small = _perturbed(runs, lambda a: a + 0.1 * tol.atol)  # within tolerance: passes, but not exactly
    report = compare_case(case, small, runs, backend="cpu", reference_name="cpu")
    assert report.passed and report.max_abs > 0

    big = _perturbed(runs, lambda a: a * 1.01 + 0.01)
    report = compare_case(case, big, runs, backend="cpu", reference_name="cpu")
    assert not report.passed and any("not close" in e for e in report.errors)

    rerun = compare_case(case, big, None, backend="cpu", reference_name="re-run")  # run 1 vs run 2
    assert not rerun.passed and rerun.rerun == "FAIL"


def test_nan_positions_must_match():
    case, runs = _softmax_case()

    def with_nan(a):
        a = a.copy()
        a.flat[0] = np.nan
        return a

    nan_runs = [jax.tree.map(with_nan, r) for r in runs]
    both_nan = compare_case(case, nan_runs, nan_runs, backend="cpu", reference_name="cpu")
    assert not any("differ" in e or "not close" in e for e in both_nan.errors)  # NaN == NaN
    assert not both_nan.finite  # ... but a NaN where a finite value is promised is reported
    assert finite_where_expected(case, nan_runs[0])

    one_nan = compare_case(case, nan_runs, runs, backend="cpu", reference_name="cpu")
    assert not one_nan.passed and any("NaN positions differ" in e for e in one_nan.errors)
