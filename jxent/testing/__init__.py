"""Testing helpers for jxent: the fixed input set and the cross-backend agreement check.

``python -m jxent.testing.crosscheck`` runs every public loss, its gradient and its Hessian-vector product on every
backend JAX sees and compares them with the CPU result; the pieces are importable from here:

* :data:`TOLERANCES` / :func:`tolerance`: the per-dtype agreement tolerances, stated once (with
  :data:`REFERENCE_TOLERANCES` / :func:`reference_tolerance` against a float64 reference and
  :data:`OPTAX_TOLERANCE` / :func:`optax_tolerance` against optax, in :mod:`jxent.testing.tolerances`).
* :func:`make_cases` / :class:`Case`: the fixed, seeded inputs (float32, bfloat16, float16; masked and unmasked;
  ``±inf``, ``±1e4`` and near-``finfo.max`` logits).
* :func:`evaluate`, :func:`compare_case`, :func:`backend_devices`, :func:`batch_mesh`: evaluation on a device or
  sharded over a mesh, and the chex-based comparison.

Imports only JAX, NumPy, chex and jxent itself.
"""

from jxent.testing.agreement import (
    CaseReport,
    backend_devices,
    batch_mesh,
    compare_case,
    evaluate,
    evaluate_case_fn,
    finite_where_expected,
    format_table,
    summarise,
)
from jxent.testing.cases import DTYPES, NOT_CHECKED, VARIANTS, Case, case_losses, make_cases
from jxent.testing.tolerances import (
    OPTAX_TOLERANCE,
    REFERENCE_TOLERANCES,
    TOLERANCES,
    Tolerance,
    optax_tolerance,
    reference_tolerance,
    tolerance,
)

__all__ = [
    "DTYPES",
    "NOT_CHECKED",
    "OPTAX_TOLERANCE",
    "REFERENCE_TOLERANCES",
    "TOLERANCES",
    "VARIANTS",
    "Case",
    "CaseReport",
    "Tolerance",
    "backend_devices",
    "batch_mesh",
    "case_losses",
    "compare_case",
    "evaluate",
    "evaluate_case_fn",
    "finite_where_expected",
    "format_table",
    "make_cases",
    "optax_tolerance",
    "reference_tolerance",
    "summarise",
    "tolerance",
]
