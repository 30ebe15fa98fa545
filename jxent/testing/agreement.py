"""Cross-backend agreement: evaluate cases on each backend (and sharded), compare with chex, tabulate.

The pieces :mod:`jxent.testing.crosscheck` is built from, usable on their own::

  cases = make_cases()
  ref = evaluate(cases, jax.devices("cpu")[0])
  out = evaluate(cases, jax.devices("gpu")[0])
  report = compare_case(case, out[case.name], ref[case.name], backend="gpu", reference="cpu")

Every evaluation is one ``jax.jit`` per group of cases, with the inputs committed to the target device (or
sharded over a 1-D mesh of a backend's devices), so the computation runs where the inputs are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jxent.testing.cases import Case
from jxent.testing.tolerances import tolerance

__all__ = [
    "OUTPUTS",
    "CaseReport",
    "RowSummary",
    "backend_devices",
    "batch_mesh",
    "compare_case",
    "evaluate",
    "evaluate_case_fn",
    "finite_where_expected",
    "format_table",
    "summarise",
    "to_host",
]

OUTPUTS = ("value", "grad", "hvp")
Results = dict[str, Any]  # {"value": array, "grad": tuple of arrays, "hvp": tuple of arrays}


def backend_devices() -> dict[str, list[jax.Device]]:
    """Devices of every backend JAX can see, by platform, CPU first (``jax.devices()`` lists only the default)."""
    found: dict[str, list[jax.Device]] = {}
    for platform in ("cpu", "gpu", "tpu"):
        try:
            devices = jax.devices(platform)
        except RuntimeError:
            continue
        if devices:
            found.setdefault(devices[0].platform, list(devices))
    for d in jax.devices():  # anything else that is the default (a plugin backend)
        found.setdefault(d.platform, list(jax.devices(d.platform)))
    return found


def evaluate_case_fn(fn: Callable[..., Any]) -> Callable[..., Results]:
    """``(diff_args, aux_args, tangents, cotangent) -> {"value", "grad", "hvp"}`` for one case function.

    The gradient is that of ``sum(cotangent * fn(*diff_args, *aux_args))`` with respect to every ``diff_args``
    entry; the Hessian-vector product is ``jax.jvp`` of that gradient along ``tangents``.
    """

    def run(diff, aux, tangents, cot):
        def objective(*d):
            return jnp.sum(cot * fn(*d, *aux).astype(cot.dtype))

        grad_fn = jax.grad(objective, argnums=tuple(range(len(diff))))
        grad, hvp = jax.jvp(grad_fn, tuple(diff), tuple(tangents))
        return {"value": fn(*diff, *aux), "grad": grad, "hvp": hvp}

    return run


def batch_mesh(devices: Sequence[jax.Device], batch: int) -> Mesh:
    """A 1-D ``("batch",)`` mesh over as many of ``devices`` as divide ``batch`` evenly (all of them usually)."""
    n = len(devices)
    while batch % n:
        n -= 1
    return Mesh(np.asarray(list(devices)[:n]), ("batch",))


def _shardings(case: Case, mesh: Mesh) -> Any:
    batched = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = NamedSharding(mesh, PartitionSpec())
    n_diff = len(case.diff_args)
    diff = tuple(batched if b else replicated for b in case.batched[:n_diff])
    aux = tuple(batched if b else replicated for b in case.batched[n_diff:])
    cot = batched if case.cotangent.ndim else replicated
    return diff, aux, diff, cot


def _group_fn(cases: Sequence[Case]) -> Callable[..., list[Results]]:
    fns = [evaluate_case_fn(c.fn) for c in cases]

    def run(all_args):
        return [f(*args) for f, args in zip(fns, all_args, strict=True)]

    return run


def evaluate(
    cases: Sequence[Case],
    device: jax.Device | None = None,
    *,
    mesh: Mesh | None = None,
    repeats: int = 1,
    perturb: Callable[[Case, int, Results], Results] | None = None,
) -> tuple[dict[str, list[Results]], dict[str, str]]:
    """Evaluates value, gradient and HVP of ``cases``, jitted, on ``device`` or sharded over ``mesh``.

    The cases of one dtype are compiled together as one ``jax.jit`` (compiling 100 small programs one by one
    costs twice as long); if that fails, each case is compiled alone so that the failure is attributed.

    Args:
      cases: The cases.
      device: Device the inputs are committed to (one of ``mesh``/``device``).
      mesh: A 1-D ``("batch",)`` mesh: batched inputs are sharded along their leading axis, others replicated.
      repeats: How many times each compiled computation runs, each time on fresh device copies of the inputs
        (the re-run check).
      perturb: Test hook ``perturb(case, run_index, results) -> results`` applied to each host result, to show
        that a mismatch is caught.

    Returns:
      ``({case.name: [results of run 1, run 2, ...]}, {case.name: error message})``: host NumPy results, and the
      cases that raised (compilation or run-time errors), which have no results.
    """
    if (device is None) == (mesh is None):
        raise ValueError("Pass exactly one of `device` and `mesh`.")
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.dtype, []).append(case)
    out: dict[str, list[Results]] = {}
    failed: dict[str, str] = {}

    def run_group(group: Sequence[Case]) -> None:
        run = jax.jit(_group_fn(group))
        placement = device if mesh is None else [_shardings(c, mesh) for c in group]
        for i in range(repeats):
            args = jax.device_put([c.args for c in group], placement)
            for case, result in zip(group, to_host(run(args)), strict=True):
                out.setdefault(case.name, []).append(perturb(case, i, result) if perturb else result)

    for group in groups.values():
        try:
            run_group(group)
        except Exception:  # attribute the failure to the case(s) that cause it
            for case in group:
                out.pop(case.name, None)
                try:
                    run_group([case])
                except Exception as e:
                    out.pop(case.name, None)
                    failed[case.name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return out, failed


def to_host(tree: Any) -> Any:
    """Blocks on and copies a result tree to host NumPy arrays."""
    return jax.tree.map(np.asarray, jax.block_until_ready(tree))


def _leaves(results: Results) -> list[tuple[str, np.ndarray]]:
    named = []
    for key in OUTPUTS:
        leaves = jax.tree.leaves(results[key])
        for i, leaf in enumerate(leaves):
            named.append((key if len(leaves) == 1 else f"{key}[{i}]", np.asarray(leaf)))
    return named


def _ok_masks(case: Case) -> list[Any]:
    masks: list[Any] = []
    for key in OUTPUTS:
        spec = case.nonfinite_ok.get(key)
        n = 1 if key == "value" else len(case.diff_args)
        per_leaf = spec if isinstance(spec, tuple) else (spec,) * n
        masks.extend(per_leaf)
    return masks


def finite_where_expected(case: Case, results: Results) -> list[str]:
    """Names of the outputs with a non-finite entry where jxent promises a finite one (empty: all good)."""
    bad = []
    for (name, leaf), ok in zip(_leaves(results), _ok_masks(case), strict=True):
        nonfinite = ~np.isfinite(leaf.astype(np.float64))
        if ok is not None:
            nonfinite = nonfinite & ~np.broadcast_to(ok, leaf.shape)
        if np.any(nonfinite):
            bad.append(f"{name} at {np.argwhere(nonfinite)[:3].tolist()}")
    return bad


@dataclasses.dataclass
class CaseReport:
    """Agreement of one case on one backend with its reference, and its finiteness."""

    case: Case
    backend: str  # "cpu", "gpu", "cpu[sharded x8]", ...
    reference: str  # what it was compared with: "cpu", "re-run", "unsharded"
    max_abs: float
    max_rel: float
    rerun: str  # "exact", "tol" (re-runs within tolerance) or "FAIL"
    finite: bool
    errors: list[str]

    @property
    def passed(self) -> bool:
        return not self.errors


def _differences(actual: np.ndarray, desired: np.ndarray, atol: float) -> tuple[float, float]:
    """Max absolute difference over entries finite in both; max relative difference over those with
    ``|desired| >= atol`` (below that the absolute tolerance decides, and a ratio means nothing)."""
    a, d = actual.astype(np.float64), desired.astype(np.float64)
    both = np.isfinite(a) & np.isfinite(d)
    if not np.any(both):
        return 0.0, 0.0
    diff = np.abs(a[both] - d[both])
    scale = np.abs(d[both])
    big = scale >= atol
    rel = float((diff[big] / scale[big]).max()) if np.any(big) else 0.0
    return float(diff.max()), rel


def _assert_close(case: Case, actual: Results, desired: Results) -> list[str]:
    """``chex.assert_trees_all_close`` per output with the dtype's tolerance, plus explicit NaN/inf positions."""
    tol = tolerance(case.dtype)
    errors = []
    for (name, a), (_, d) in zip(_leaves(actual), _leaves(desired), strict=True):
        if a.dtype != d.dtype or a.shape != d.shape:
            errors.append(f"{name}: {a.dtype}{a.shape} vs {d.dtype}{d.shape}")
            continue
        a64, d64 = a.astype(np.float64), d.astype(np.float64)
        for what, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
            mismatch = test(a64) != test(d64)
            if np.any(mismatch):
                errors.append(f"{name}: {what} positions differ at {np.argwhere(mismatch)[:3].tolist()}")
        try:
            # chex treats NaN as equal to NaN (numpy's equal_nan) and inf as equal to an inf of the same sign.
            chex.assert_trees_all_close(a64, d64, rtol=tol.rtol, atol=tol.atol)
        except AssertionError as e:
            first = next((line.strip() for line in str(e).splitlines() if "Max" in line), "")
            errors.append(f"{name}: not close (rtol={tol.rtol}, atol={tol.atol}) {first}".rstrip())
    return errors


def _rerun_status(case: Case, runs: Sequence[Results]) -> tuple[str, list[str]]:
    status, errors = "exact", []
    for later in runs[1:]:
        same = all(
            np.array_equal(a, d, equal_nan=True)
            for (_, a), (_, d) in zip(_leaves(later), _leaves(runs[0]), strict=True)
        )
        if not same:
            errs = _assert_close(case, later, runs[0])
            status = "FAIL" if errs else ("tol" if status == "exact" else status)
            errors += [f"re-run {e}" for e in errs]
    return status, errors


def compare_case(
    case: Case,
    runs: Sequence[Results],
    reference: Sequence[Results] | None,
    *,
    backend: str,
    reference_name: str,
) -> CaseReport:
    """Compares the first of ``runs`` with the first of ``reference`` (or the re-runs with each other if ``None``)."""
    rerun, errors = _rerun_status(case, runs)
    actual = runs[0]
    if reference is not None:
        desired = reference[0]
    else:
        desired = runs[1] if len(runs) > 1 else runs[0]
    errors = _assert_close(case, actual, desired) + errors
    max_abs = max_rel = 0.0
    for (_, a), (_, d) in zip(_leaves(actual), _leaves(desired), strict=True):
        if a.shape == d.shape:
            ab, rl = _differences(a, d, tolerance(case.dtype).atol)
            max_abs, max_rel = max(max_abs, ab), max(max_rel, rl)
    not_finite = finite_where_expected(case, actual)
    errors += [f"not finite: {b}" for b in not_finite]
    return CaseReport(case, backend, reference_name, max_abs, max_rel, rerun, not not_finite, errors)


@dataclasses.dataclass
class RowSummary:
    """One table row: a loss, a dtype and a backend, over the loss's variants."""

    label: str
    dtype: str
    backend: str
    reference: str
    variants: int
    max_abs: float
    max_rel: float
    rerun: str
    finite: bool
    passed: bool


def summarise(reports: Iterable[CaseReport]) -> list[RowSummary]:
    """Groups case reports into table rows (loss x dtype x backend), keeping the worst of the variants."""
    rows: dict[tuple[str, str, str], RowSummary] = {}
    order = {"exact": 0, "tol": 1, "FAIL": 2}
    for r in reports:
        key = (r.case.label, r.case.dtype, r.backend)
        row = rows.get(key)
        if row is None:
            rows[key] = RowSummary(
                r.case.label, r.case.dtype, r.backend, r.reference, 1, r.max_abs, r.max_rel, r.rerun, r.finite, r.passed
            )
            continue
        row.variants += 1
        row.max_abs = max(row.max_abs, r.max_abs)
        row.max_rel = max(row.max_rel, r.max_rel)
        row.rerun = max(row.rerun, r.rerun, key=order.__getitem__)
        row.finite &= r.finite
        row.passed &= r.passed
    return list(rows.values())


def format_table(rows: Sequence[RowSummary]) -> str:
    """The agreement table in Markdown."""
    columns = ["loss", "dtype", "backend", "vs", "variants", "max abs diff", "max rel diff", "re-run"]
    header = "| " + " | ".join([*columns, "finite where expected", "result"]) + " |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.dtype} | {r.backend} | {r.reference} | {r.variants} | {r.max_abs:.3g} | "
            f"{r.max_rel:.3g} | {r.rerun} | {'yes' if r.finite else 'NO'} | {'pass' if r.passed else 'FAIL'} |"
        )
    return "\n".join(lines)
