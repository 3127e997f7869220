"""Speed of the empirical NTK: per-leaf Jacobian contraction vs JVP-of-VJP.

Times ``diva_jax.features.empirical_ntk`` on fully connected ReLU networks,
the architecture of neural-tangents' published ``empirical_ntk_fcn`` notebook
(input 3072, three hidden layers, O = 8 outputs, N1 = N2 = 16 inputs, full
(16, 16, 8, 8) kernel), at two widths:

- width 512: both of our methods, and a baseline that ravels the per-sample
  Jacobians (``jacobian_features``) and multiplies them as one matrix;
- width 2048 (the notebook's network, P = 14.7M): only ``method="ntvp"`` fits
  here, since the Jacobians of both batches take 2 x 16 x 8 x P floats = 15 GB.

Each method compiles first, blocks until ready, is checked against the others,
and reports the median of ``--repeats`` runs, its FLOPs by the cost model in
``empirical_ntk``'s docstring (F = one forward pass, from XLA), the achieved
GFLOP/s, and the time of a ``W x W`` matrix product measured in the same run
as a yardstick of what the machine delivers.
Results go to ``benchmarks/results/bench_ntk.json``.

neural-tangents' notebook recorded, on one NVIDIA T4 for the width-2048
network: Jacobian contraction 243 ms, NTK-vector products 81.4 ms, structured
derivatives 3.46 ms. The package no longer imports on current JAX, so it is
not run here; see the README for how our numbers compare.

    python benchmarks/bench_ntk.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from diva_jax._io import atomic_write_json
from diva_jax.features import empirical_ntk, jacobian_features
from diva_jax.features._jacobian import ntk_method

RESULTS = Path(__file__).resolve().parent / "results"
NEURAL_TANGENTS_T4_MS = {"jacobian contraction": 243.0, "ntk-vector products": 81.4,
                         "structured derivatives": 3.46}


def fcn_params(width: int, depth: int = 3, d_in: int = 3072, K: int = 8, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [d_in] + [width] * depth + [K]
    return [{"w": (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
             "b": np.zeros(b, np.float32)}
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)]


def fcn(params, x):
    """ReLU network ``(n, 3072) -> (n, K)``."""
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"][None])
    return x @ params[-1]["w"] + params[-1]["b"][None]


def ntk_by_raveled_jacobians(params, x1, x2):
    """Baseline: flat per-sample Jacobians (n, K, P), then one einsum."""
    J1 = jacobian_features(fcn, params, x1, batch_size=len(x1), progress=False)
    J2 = jacobian_features(fcn, params, x2, batch_size=len(x2), progress=False)
    return jnp.einsum("iap,jbp->ijab", J1, J2)


def timed(fn, repeats: int) -> tuple[np.ndarray, float]:
    out = np.asarray(jax.block_until_ready(fn()))  # compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def flops(fn, *args) -> float:
    """XLA's FLOP count of ``fn(*args)`` (F, one forward pass, for the models)."""
    return float(jax.jit(fn).lower(*args).cost_analysis()["flops"])


def run_width(width: int, methods: list[str], n: int, repeats: int) -> dict:
    params = fcn_params(width)
    rng = np.random.default_rng(1)
    x1 = rng.standard_normal((n, 3072)).astype(np.float32)
    x2 = rng.standard_normal((n, 3072)).astype(np.float32)
    a = rng.standard_normal((width, width)).astype(np.float32)
    matmul = jax.jit(lambda a: a @ a)
    _, t_matmul = timed(lambda: matmul(a), repeats)

    results, kernels = {}, {}
    for method in methods:
        if method == "raveled":
            fn = lambda: ntk_by_raveled_jacobians(params, x1, x2)  # noqa: E731
        else:
            fn = lambda m=method: empirical_ntk(fcn, params, x1, x2,  # noqa: E731
                                                method=m, batch_size=2)
        kernels[method], seconds = timed(fn, repeats)
        results[method] = {"ms": 1e3 * seconds}
        print(f"width {width}: {method:9s} {1e3 * seconds:9.1f} ms")
    F, P, K = flops(fcn, params, x1[:1]), sum(p.size for p in jax.tree.leaves(
        params)), 8
    model_flops = {"jacobian": 2 * n * K * 3 * F + n * n * K * K * 2 * P,
                   "ntvp": n * K * 3 * F + n * n * K * 2 * F}
    for method, result in results.items():
        if method in model_flops:
            result["model_gflop"] = model_flops[method] / 1e9
            result["gflop_per_s"] = model_flops[method] / result["ms"] / 1e6
    results["auto picks"] = ntk_method(fcn, params, x1)
    reference = kernels[methods[0]]
    scale = np.abs(reference).max()
    errors = {m: float(np.abs(k - reference).max() / scale) for m, k in kernels.items()}
    assert max(errors.values()) < 1e-4, errors
    return {"width": width, "num_params": int(sum(p.size for p in jax.tree.leaves(
        params))), "n1": n, "n2": n, "outputs": 8, "methods": results,
        "max_relative_disagreement": errors,
        "matmul_ms": 1e3 * t_matmul, "matmul_shape": [width, width]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=16, help="N1 = N2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "bench_ntk.json"))
    args = parser.parse_args(argv)
    runs = [run_width(512, ["jacobian", "ntvp", "raveled"], args.n, args.repeats),
            run_width(2048, ["ntvp"], args.n, args.repeats)]
    env = {"device": str(jax.devices()[0]), "jax": jax.__version__,
           "load_average": list(os.getloadavg())}
    atomic_write_json(args.out, {
        "benchmark": "empirical_ntk", "environment": env, "runs": runs,
        "neural_tangents_recorded_t4_ms": NEURAL_TANGENTS_T4_MS})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
