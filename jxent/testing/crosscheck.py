"""Cross-backend agreement of every jxent loss: ``python -m jxent.testing.crosscheck [--sharded]``.

Runs each public loss and softmax primitive, its gradient and its Hessian-vector product (``jax.jvp`` of
``jax.grad``) on the fixed input set of :mod:`jxent.testing.cases` (float32, bfloat16, float16; plain and
masked; ``±inf``, ``±1e4`` and near-``finfo.max`` logits), jitted on every backend JAX sees with the inputs
committed to that backend's device, and compares each backend with the CPU result using
``chex.assert_trees_all_close`` and the per-dtype tolerances of :data:`jxent.testing.TOLERANCES`. Every
computation runs twice on fresh copies of its inputs; the re-run must match exactly or within tolerance.

``--sharded`` also runs the batch sharded over all devices of each backend (a 1-D ``NamedSharding`` mesh on the
batch axis) and compares with the unsharded result. On a CPU-only machine, ``--fake-devices 8`` gives the CPU
backend 8 devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``) so the sharded path runs there too.

Prints a Markdown table (loss x dtype x backend: max abs / max rel difference, re-run, finite where expected,
pass/fail), the details of every failure, and exits with status 1 on any mismatch (0 when all agree).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

_FAKE_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def _request_fake_devices(n: int) -> None:
    """Gives the CPU backend ``n`` devices; must run before JAX initialises its backends."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_FAKE_DEVICES_FLAG)]
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"{_FAKE_DEVICES_FLAG}={n}"])
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", n)
    except Exception:  # older JAX without the option, or backends already initialised: XLA_FLAGS decides
        pass


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from jxent.testing.cases import DTYPES, VARIANTS

    parser = argparse.ArgumentParser(
        prog="python -m jxent.testing.crosscheck",
        description="Cross-backend agreement of jxent's losses, gradients and Hessian-vector products.",
    )
    parser.add_argument("--sharded", action="store_true", help="also run the batch sharded over each backend")
    parser.add_argument(
        "--fake-devices", type=int, default=0, metavar="N", help="give the CPU backend N devices (before JAX starts)"
    )
    parser.add_argument(
        "--dtypes", default=",".join(DTYPES), help="comma-separated input dtypes (default: %(default)s)"
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated variants (default: %(default)s)"
    )
    parser.add_argument("--sharded-dtypes", default="", help="dtypes of the sharded run (default: --dtypes)")
    parser.add_argument("--losses", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per backend, compared with each other")
    parser.add_argument("--output", default="", help="also write the table to this file")
    parser.add_argument("--list", action="store_true", help="list the case names and exit")
    parser.add_argument(
        "--inject-mismatch",
        default="",
        metavar="LOSS",
        help="testing the checker: perturb the first run's results of LOSS, which must then fail",
    )
    return parser.parse_args(argv)


def _perturbation(loss: str) -> Callable[[Any, int, dict[str, Any]], dict[str, Any]] | None:
    if not loss:
        return None
    import jax
    import numpy as np

    def perturb(case, run_index, results):
        if case.label != loss or run_index != 0:
            return results
        return jax.tree.map(lambda a: (np.asarray(a, np.float64) * 1.01 + 0.01).astype(a.dtype), results)

    return perturb


def _cpu_time(since: float) -> float:
    return time.process_time() - since


def run(args: argparse.Namespace, out: Any = None) -> int:
    """Runs the check described by parsed ``args``, prints the report to ``out`` (stdout); returns the exit status."""
    out = sys.stdout if out is None else out
    import jax

    import jxent
    from jxent.testing import agreement
    from jxent.testing.cases import NUM_ROWS, case_losses, make_cases
    from jxent.testing.tolerances import TOLERANCES

    if args.list:
        print("\n".join(case_losses()), file=out)
        return 0
    # GPUs run float32 matmuls as TF32 at JAX's default precision (so would a plain `hidden @ weight`); the check
    # compares jxent's own arithmetic across backends, so matmuls (only linear_softmax_cross_entropy has any) are
    # asked for at full precision everywhere.
    jax.config.update("jax_default_matmul_precision", "highest")
    print("matmul precision: highest (float32 matmuls are not run as TF32 on GPUs)", file=out)
    losses = [s for s in args.losses.split(",") if s] or None
    cases = make_cases(
        dtypes=[s for s in args.dtypes.split(",") if s],
        variants=[s for s in args.variants.split(",") if s],
        losses=losses,
    )
    backends = agreement.backend_devices()
    if "cpu" not in backends:
        print("error: no CPU backend, which is the reference (set JAX_PLATFORMS to include cpu)", file=out)
        return 2
    if args.fake_devices and len(backends["cpu"]) != args.fake_devices:
        print(
            f"error: asked for {args.fake_devices} CPU devices, got {len(backends['cpu'])}: JAX was initialised "
            f"before the flag could be set; run with XLA_FLAGS={_FAKE_DEVICES_FLAG}={args.fake_devices}",
            file=out,
        )
        return 2
    print(f"jax {jax.__version__}, jxent {jxent.__version__}; {len(cases)} cases", file=out)
    for platform, devices in backends.items():
        print(f"  {platform}: {len(devices)} x {devices[0].device_kind}", file=out)

    perturb = _perturbation(args.inject_mismatch)
    reports = []
    failed_to_run: list[str] = []
    unsharded: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for platform, devices in backends.items():
        t, c = time.perf_counter(), time.process_time()
        results, failed = agreement.evaluate(cases, devices[0], repeats=args.repeats, perturb=perturb)
        unsharded[platform] = results
        failed_to_run += [f"{platform}: {name}: {msg}" for name, msg in failed.items()]
        for case in cases:
            if case.name in results:
                ref = None if platform == "cpu" else unsharded["cpu"].get(case.name)
                if platform != "cpu" and ref is None:
                    continue  # the CPU reference failed to run; reported already
                reports.append(
                    agreement.compare_case(
                        case,
                        results[case.name],
                        ref,
                        backend=platform,
                        reference_name="re-run" if ref is None else "cpu",
                    )
                )
        print(f"  {platform}: evaluated in {time.perf_counter() - t:.1f} s ({_cpu_time(c):.1f} s CPU)", file=out)
    if args.sharded:
        sharded_dtypes = {s for s in args.sharded_dtypes.split(",") if s} or {c.dtype for c in cases}
        sharded_cases = [c for c in cases if c.dtype in sharded_dtypes]
        for platform, devices in backends.items():
            t, c = time.perf_counter(), time.process_time()
            mesh = agreement.batch_mesh(devices, NUM_ROWS)
            name = f"{platform}[sharded x{mesh.size}]"
            results, failed = agreement.evaluate(sharded_cases, mesh=mesh, repeats=args.repeats)
            failed_to_run += [f"{name}: {case}: {msg}" for case, msg in failed.items()]
            for case in sharded_cases:
                ref_runs = unsharded[platform].get(case.name)
                if case.name in results and ref_runs is not None:
                    reports.append(
                        agreement.compare_case(
                            case, results[case.name], ref_runs, backend=name, reference_name="unsharded"
                        )
                    )
            print(f"  {name}: evaluated in {time.perf_counter() - t:.1f} s ({_cpu_time(c):.1f} s CPU)", file=out)

    rows = agreement.summarise(reports)
    table = agreement.format_table(rows)
    dtypes = args.dtypes.split(",")
    tolerances = ", ".join(f"{k} rtol={t.rtol:g} atol={t.atol:g}" for k, t in TOLERANCES.items() if k in dtypes)
    print(f"\ntolerances (jxent.testing.TOLERANCES): {tolerances}", file=out)
    print("max rel diff is over entries with |reference| >= atol; NaN/inf positions must match exactly\n", file=out)
    print(table, file=out)
    failures = [r for r in reports if not r.passed]
    if failures or failed_to_run:
        print("\nFailures:", file=out)
        for r in failures:
            for e in r.errors:
                print(f"  {r.case.name} on {r.backend} (vs {r.reference}): {e}", file=out)
        for line in failed_to_run:
            print(f"  did not run: {line}", file=out)
    n_failed_rows = sum(not r.passed for r in rows)
    print(
        f"\n{len(rows)} rows ({len(reports)} case comparisons) in {time.perf_counter() - t0:.1f} s: "
        f"{len(rows) - n_failed_rows} passed, {n_failed_rows} failed"
        + (f", {len(failed_to_run)} cases did not run" if failed_to_run else ""),
        file=out,
    )
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            f.write(table + "\n")
    return 1 if failures or failed_to_run else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    if args.fake_devices:
        _request_fake_devices(args.fake_devices)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
