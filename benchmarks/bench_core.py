"""The dataset derivative against its floor: one ``Z^T Z`` GEMM of the same shape.

For each size N x d (float32, K = 10 classes, the primal form) this times, in
one run and interleaved:

- ``gemm``: ``Z.T @ Z`` jitted, the reference (MATH.md: the closed form costs
  about four such products plus a d x d factorisation);
- ``gemm_nn``: ``Z @ B`` with B (d, d), the same FLOPs in the operand layout
  XLA's CPU backend runs fastest, to show how far ``Z.T @ Z`` is from the
  machine's best GEMM;
- ``closed``: ``diva_jax.value_and_dataset_derivative(Z, y, lam)``, the public
  entry point with its input checks (value and (N,) gradient of the LOO loss).

It checks the answer against ``method="autodiff"`` (``jax.grad`` through the
fit) where that fits the time budget, checks in the compiled program that no
N x N array exists, and records XLA's temporary memory (O(N d + d^2)).
Results: ``benchmarks/results/bench_core.json`` (updated after every size, so
an interrupted run keeps what it measured) and ``bench_core.png``.

    python benchmarks/bench_core.py                       # the grid, CPU
    python benchmarks/bench_core.py --quick               # seconds, smoke test
    python benchmarks/bench_core.py --gpu --out benchmarks/results/bench_core_gpu.json
"""

from __future__ import annotations

import _common  # noqa: F401  (sets OPENBLAS_NUM_THREADS before numpy)

import argparse  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

logger = logging.getLogger("bench_core")

GRID = [(n, d) for n in (10_000, 50_000, 200_000) for d in (128, 512, 2048)]
QUICK = [(2_000, 32), (4_000, 64)]
GPU = [(n, d) for n in (50_000, 200_000, 1_000_000) for d in (128, 512, 2048)]
NUM_CLASSES = 10


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"10000x128,50000x512"`` -> ``[(10000, 128), (50000, 512)]``."""
    try:
        return [tuple(int(v) for v in item.split("x")) for item in text.split(",")]
    except ValueError as err:
        raise SystemExit(f"--sizes must look like 10000x128,50000x512: {err}") from err


def make_problem(n: int, d: int, seed: int = 0):
    """Features (n, d) float32 made on the default device, int labels, ``lam``."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.key(seed), 3)
    Z = jax.random.normal(keys[0], (n, d), jnp.float32)
    teacher = jax.random.normal(keys[1], (d, NUM_CLASSES), jnp.float32) / d**0.5
    noise = jax.random.normal(keys[2], (n, NUM_CLASSES), jnp.float32)
    y = jnp.argmax(Z @ teacher + noise, 1).astype(jnp.int32)
    return jax.block_until_ready(Z), jax.block_until_ready(y), 1e-2 * n


def compiled_facts(Z, y, lam) -> dict:
    """Whether an N x N array appears in the compiled program; its temp bytes."""
    import jax.numpy as jnp

    from diva_jax._checks import check_mask, check_problem
    from diva_jax._derivative import _closed_loo
    from diva_jax._losses import squared

    Zc, Y, alpha, lam = check_problem(Z, y, None, lam)
    mask = check_mask(None, Z.shape[0], Z.dtype)
    compiled = _closed_loo.lower(alpha, Zc, Y, jnp.asarray(lam, Z.dtype), mask,
                                 solver="auto", loss=squared).compile()
    n = Z.shape[0]
    has_nn = re.search(rf"\[{n},{n}\]", compiled.as_text()) is not None
    memory = compiled.memory_analysis()
    temp = getattr(memory, "temp_size_in_bytes", None)
    return {"has_n_by_n_array": has_nn, "temp_bytes": temp,
            "temp_over_Z_bytes": None if temp is None else temp / Z.nbytes}


def check_answer(Z, y, lam, closed) -> dict:
    """Max relative difference of the closed form from ``jax.grad``."""
    import numpy as np

    import diva_jax

    value, grad = diva_jax.value_and_dataset_derivative(Z, y, lam, method="autodiff")
    g_closed, g_auto = np.asarray(closed[1], np.float64), np.asarray(grad, np.float64)
    error = float(np.max(np.abs(g_closed - g_auto)) / np.max(np.abs(g_auto)))
    return {"autodiff_max_rel_diff": error,
            "value_rel_diff": abs(float(closed[0]) / float(value) - 1.0),
            "ok": error < 1e-2}


def bench_size(n: int, d: int, repeats: int, check: bool) -> dict:
    """Times ``gemm``, ``gemm_nn`` and ``closed`` at one size; returns a row."""
    import jax
    import jax.numpy as jnp

    import diva_jax
    from _common import time_interleaved

    Z, y, lam = make_problem(n, d)
    B = jnp.eye(d, dtype=Z.dtype) + 0.01
    gemm, gemm_nn = jax.jit(lambda Z: Z.T @ Z), jax.jit(lambda Z, B: Z @ B)
    closed = lambda: diva_jax.value_and_dataset_derivative(Z, y, lam)  # noqa: E731
    times = time_interleaved({"gemm": lambda: gemm(Z), "gemm_nn": lambda: gemm_nn(Z, B),
                              "closed": closed}, repeats)
    row = {"N": n, "d": d, "K": NUM_CLASSES, "dtype": "float32", "lam": lam,
           "repeats": repeats, "times": times, **compiled_facts(Z, y, lam)}
    for ref in ("gemm", "gemm_nn"):
        row[f"ratio_to_{ref}"] = times["closed"]["wall_s"] / times[ref]["wall_s"]
        row[f"cpu_ratio_to_{ref}"] = times["closed"]["cpu_s"] / times[ref]["cpu_s"]
    row["check"] = check_answer(Z, y, lam, closed()) if check else None
    return row


def plot(rows: list[dict], path: Path) -> None:
    """Ratio to one GEMM against N, one line per d, with the 4x floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for d in sorted({r["d"] for r in rows}):
        pts = sorted((r["N"], r["ratio_to_gemm"]) for r in rows if r["d"] == d)
        ax.plot(*zip(*pts, strict=True), marker="o", label=f"d = {d}")
    ax.axhline(4.0, color="gray", ls="--", lw=1, label="4 full GEMMs (MATH.md count)")
    ax.set(xscale="log", xlabel="N samples", ylabel="time / one Z^T Z GEMM",
           title="LOO value + dataset derivative, float32")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(rows: list[dict]) -> str:
    """The Markdown table printed at the end and pasted in the README."""
    lines = ["| N | d | Z^T Z GEMM (s) | derivative (s) | ratio | ratio, CPU time "
             "| vs best GEMM | jax.grad agrees |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, chk = r["times"], r.get("check") or {}
        agree = f"{chk['autodiff_max_rel_diff']:.1e}" if chk else "not run"
        lines.append(f"| {r['N']:,} | {r['d']} | {t['gemm']['wall_s']:.3f} | "
                     f"{t['closed']['wall_s']:.3f} | {r['ratio_to_gemm']:.2f} | "
                     f"{r['cpu_ratio_to_gemm']:.2f} | {r['ratio_to_gemm_nn']:.2f} | "
                     f"{agree} |")
    return "\n".join(lines)


def save(out: Path, rows: dict, skipped: list, precision: str) -> dict:
    """Writes the rows measured so far, sorted by d then N; returns the result."""
    from _common import machine, write_json

    result = {"benchmark": "bench_core", "machine": machine(), "precision": precision,
              "rows": sorted(rows.values(), key=lambda r: (r["d"], r["N"])),
              "skipped": skipped}
    write_json(out, result)
    return result


def main(argv=None) -> int:
    from _common import RESULTS, add_common_args, read_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--sizes", type=parse_sizes, default=None,
                        help="NxD list, e.g. 10000x128,50000x512 (default: the grid)")
    parser.add_argument("--quick", action="store_true", help="two tiny sizes")
    parser.add_argument("--gpu", action="store_true",
                        help="require a GPU and use larger sizes (N up to 1M)")
    parser.add_argument("--max-gflop", type=float, default=None,
                        help="skip sizes whose one GEMM exceeds this many GFLOP "
                             "(default 1000 on CPU, 20000 with --gpu)")
    parser.add_argument("--check-gflop", type=float, default=300.0,
                        help="check against jax.grad up to this GEMM size")
    parser.add_argument("--precision", default="highest",
                        help="jax_default_matmul_precision (TF32 on GPUs otherwise)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import jax

    jax.config.update("jax_default_matmul_precision", args.precision)
    if args.gpu and not args.quick and jax.default_backend() != "gpu":
        raise SystemExit(f"--gpu needs a GPU; jax's backend is {jax.default_backend()}")
    if args.max_gflop is None:
        args.max_gflop = 20000.0 if args.gpu else 1000.0
    sizes = args.sizes or (QUICK if args.quick else GPU if args.gpu else GRID)
    name = "bench_core_quick" if args.quick else "bench_core_gpu" if args.gpu \
        else "bench_core"
    out = args.out or RESULTS / f"{name}.json"
    result = read_json(out) if not args.quick else {}
    rows = {(r["N"], r["d"]): r for r in result.get("rows", [])}
    skipped = []
    for n, d in sizes:
        gflop = 2 * n * d * d / 1e9
        if gflop > args.max_gflop:
            skipped.append({"N": n, "d": d, "gemm_gflop": gflop,
                            "reason": f"one GEMM is {gflop:.0f} GFLOP > --max-gflop"})
            continue
        logger.info("N=%d d=%d (%.0f GFLOP per GEMM)", n, d, gflop)
        rows[(n, d)] = bench_size(n, d, args.repeats, gflop <= args.check_gflop)
        logger.info("  ratio to one GEMM: %.2f", rows[(n, d)]["ratio_to_gemm"])
        result = save(out, rows, skipped, args.precision)
    if not rows:
        return 0
    result = save(out, rows, skipped, args.precision)
    plot(result["rows"], out.with_suffix(".png"))
    sys.stdout.write(table(result["rows"]) + "\n")
    for s in skipped:
        sys.stdout.write(f"skipped N={s['N']} d={s['d']}: {s['reason']}\n")
    failed = [r for r in result["rows"] if r["check"] and not r["check"]["ok"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
