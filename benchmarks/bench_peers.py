"""The closed form against the tools one would use instead, on one problem.

N x d float64 features, K = 10 classes (one-hot targets), ``alpha = 1``:

- ``diva_jax``: ``value_and_dataset_derivative`` (LOO loss and its (N,)
  derivative), with ``validation=`` the validation derivative, and
  ``loo_residuals`` (the LOO values alone, what RidgeCV computes);
- brute-force LOO retraining: one numpy refit per left-out sample gives the LOO
  residuals; the derivative by central differences needs ``2 N`` such LOO
  evaluations. Timed on ``--brute-refits`` refits and extrapolated (per refit
  x N for the values, x 2 N^2 for the derivative); checked on those refits;
- naive ``jax.grad``: the direct formulation with an explicit N x N hat matrix
  ``H = Z (Z^T D Z + lam I)^{-1} Z^T D`` and ``e = (Y - H Y) / (1 - diag H)``,
  differentiated by ``jax.grad`` (O(N^2) memory; the value and gradient are
  checked against ours);
- scikit-learn ``RidgeCV(alphas=[lam], fit_intercept=False,
  store_cv_results=True)``: LOO squared errors only, no derivative (checked
  against ours);
- pyDVL ``DirectInfluence`` on a torch ``Linear`` head with the ridge weights:
  the influence of up-weighting each training sample on the validation loss.
  For a ridge head it equals the validation derivative exactly (MATH.md): with
  the Hessian of the mean training loss regularised by ``2 lam / N``, and
  pyDVL's sign (its "up" influence is ``+grad l_v^T H^{-1} grad l_i``),
  ``dL_val/dalpha_i = -mean_v influence[v, i] / N``. Skipped when torch or
  pydvl is not installed.

Each tool runs once first, then ``--repeats`` times; medians are reported.
Results: ``benchmarks/results/bench_peers.json`` and ``bench_peers.png``.

    python benchmarks/bench_peers.py                    # N = 5000, d = 128
    python benchmarks/bench_peers.py --quick            # N = 400, d = 16
"""

from __future__ import annotations

import _common  # noqa: F401  (sets OPENBLAS_NUM_THREADS before numpy)

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

logger = logging.getLogger("bench_peers")
K = 10


def problem(n: int, d: int, n_val: int, seed: int = 0):
    """Features, one-hot targets and a validation set (float64 numpy)."""
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal((d, K)) / np.sqrt(d)
    Z, Z_val = rng.standard_normal((n, d)), rng.standard_normal((n_val, d))
    labels = np.argmax(Z @ teacher + rng.standard_normal((n, K)), 1)
    labels_val = np.argmax(Z_val @ teacher + rng.standard_normal((n_val, K)), 1)
    return Z, np.eye(K)[labels], Z_val, np.eye(K)[labels_val]


def median_time(fn, repeats: int):
    """(median seconds, last result); one untimed run first."""
    result, times = fn(), []
    for _ in range(repeats):
        clock = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - clock)
    return statistics.median(times), result


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def bench_ours(Z, Y, Z_val, Y_val, lam, repeats):
    import jax

    import diva_jax

    loo = lambda: jax.block_until_ready(  # noqa: E731
        diva_jax.value_and_dataset_derivative(Z, Y, lam))
    val = lambda: jax.block_until_ready(  # noqa: E731
        diva_jax.value_and_dataset_derivative(Z, Y, lam, validation=(Z_val, Y_val)))
    residuals = lambda: jax.block_until_ready(  # noqa: E731
        diva_jax.loo_residuals(None, Z, Y, lam))
    t_loo, (value, grad) = median_time(loo, repeats)
    t_val, (_, grad_val) = median_time(val, repeats)
    t_res, e = median_time(residuals, repeats)
    return {"loo_s": t_loo, "validation_s": t_val, "loo_values_s": t_res}, \
        (float(value), np.asarray(grad), np.asarray(grad_val), np.asarray(e))


def bench_brute(Z, Y, lam, refits: int, e_ours):
    """Time per numpy refit without one sample; LOO residuals of those refits."""
    n, d = Z.shape
    rows = np.linspace(0, n - 1, refits).astype(int)
    clock, errors = time.perf_counter(), []
    for i in rows:
        keep = np.arange(n) != i
        W = np.linalg.solve(Z[keep].T @ Z[keep] + lam * np.eye(d), Z[keep].T @ Y[keep])
        errors.append(rel(Y[i] - Z[i] @ W, e_ours[i]))
    per_refit = (time.perf_counter() - clock) / refits
    return {"per_refit_s": per_refit, "refits_timed": refits,
            "loo_values_s_extrapolated": per_refit * n,
            "derivative_by_differences_s_extrapolated": per_refit * 2 * n * n,
            "max_rel_diff_loo_residuals": max(errors)}


def naive_loss(alpha, Z, Y, lam):
    """The LOO loss written directly, with the N x N hat matrix (for jax.grad)."""
    import jax.numpy as jnp

    A = Z.T @ (alpha[:, None] * Z) + lam * jnp.eye(Z.shape[1], dtype=Z.dtype)
    H = Z @ jnp.linalg.solve(A, Z.T * alpha[None, :])  # Z C Z^T D
    e = (Y - H @ Y) / (1.0 - jnp.diagonal(H))[:, None]
    return jnp.mean(jnp.sum(e * e, 1))


def bench_naive(Z, Y, lam, repeats, value, grad):
    import jax

    fn = jax.jit(jax.value_and_grad(naive_loss))
    alpha = np.ones(Z.shape[0])
    t, (v, g) = median_time(lambda: jax.block_until_ready(fn(alpha, Z, Y, lam)),
                            repeats)
    return {"value_and_grad_s": t, "max_rel_diff_grad": rel(g, grad),
            "rel_diff_value": abs(float(v) / value - 1.0)}


def bench_sklearn(Z, Y, lam, repeats, e_ours):
    import sklearn
    from sklearn.linear_model import RidgeCV

    fit = lambda: RidgeCV(alphas=[lam], fit_intercept=False,  # noqa: E731
                          store_cv_results=True).fit(Z, Y)
    t, model = median_time(fit, repeats)
    squared_errors = model.cv_results_[:, :, 0]  # (N, K) LOO squared errors
    return {"loo_values_s": t, "version": sklearn.__version__,
            "max_rel_diff_loo_squared_errors": rel(squared_errors, e_ours**2)}


def bench_pydvl(Z, Y, Z_val, Y_val, lam, repeats, W, grad_val):
    try:
        import pydvl
        import torch
        from pydvl.influence.torch import DirectInfluence
        from torch.utils.data import DataLoader, TensorDataset
    except ImportError as err:
        return {"skipped": f"torch or pydvl not installed: {err}"}
    torch.set_num_threads(2)
    n, d = Z.shape
    model = torch.nn.Linear(d, K, bias=False, dtype=torch.float64)
    model.weight.data = torch.tensor(W.T)
    x, y = torch.tensor(Z), torch.tensor(Y)
    x_val, y_val = torch.tensor(Z_val), torch.tensor(Y_val)

    def loss(out, target):
        return torch.sum((out - target) ** 2, dim=-1).mean()

    def influence():
        model_ = DirectInfluence(model, loss, regularization=2 * lam / n)
        model_ = model_.fit(DataLoader(TensorDataset(x, y), batch_size=n))
        return model_.influences(x_val, y_val, x, y)

    t, values = median_time(influence, repeats)
    derivative = -values.mean(0).numpy() / n  # pyDVL: +grad_v^T H^{-1} grad_i
    return {"influences_s": t, "pydvl": pydvl.__version__, "torch": torch.__version__,
            "max_rel_diff_validation_derivative": rel(derivative, grad_val)}


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = {"diva_jax LOO\nvalue+derivative": result["diva_jax"]["loo_s"],
            "naive jax.grad\n(N x N hat)": result["naive_jax_grad"]["value_and_grad_s"],
            "brute force\nderivative (extrap.)":
                result["brute_force"]["derivative_by_differences_s_extrapolated"],
            "brute force\nLOO values (extrap.)":
                result["brute_force"]["loo_values_s_extrapolated"],
            "sklearn RidgeCV\nLOO values": result["sklearn_ridgecv"]["loo_values_s"],
            "diva_jax\nLOO values": result["diva_jax"]["loo_values_s"],
            "diva_jax\nvalidation deriv.": result["diva_jax"]["validation_s"]}
    if "influences_s" in result["pydvl_direct_influence"]:
        bars["pyDVL DirectInfluence\nvalidation"] = \
            result["pydvl_direct_influence"]["influences_s"]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.barh(list(bars), list(bars.values()), color="tab:blue")
    ax.set(xscale="log", xlabel="seconds (log)",
           title=f"N = {result['N']:,}, d = {result['d']}, K = {K}, float64")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    from _common import RESULTS, add_common_args, machine, write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--n-val", type=int, default=500)
    parser.add_argument("--brute-refits", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="N = 400, d = 16")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.d, args.n_val, args.repeats = 400, 16, 50, min(args.repeats, 2)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import jax

    jax.config.update("jax_enable_x64", True)
    import diva_jax

    Z, Y, Z_val, Y_val = problem(args.n, args.d, args.n_val)
    lam = 1e-2 * args.n
    result = {"benchmark": "bench_peers", "machine": machine(), "N": args.n,
              "d": args.d, "K": K, "dtype": "float64", "lam": lam,
              "repeats": args.repeats}
    logger.info("diva_jax")
    result["diva_jax"], (value, grad, grad_val, e) = bench_ours(
        Z, Y, Z_val, Y_val, lam, args.repeats)
    logger.info("brute force")
    result["brute_force"] = bench_brute(Z, Y, lam, args.brute_refits, e)
    logger.info("naive jax.grad")
    result["naive_jax_grad"] = bench_naive(Z, Y, lam, args.repeats, value, grad)
    logger.info("sklearn")
    result["sklearn_ridgecv"] = bench_sklearn(Z, Y, lam, args.repeats, e)
    logger.info("pydvl")
    W = np.asarray(diva_jax.fit_ridge(Z, Y, None, lam))
    result["pydvl_direct_influence"] = bench_pydvl(Z, Y, Z_val, Y_val, lam,
                                                   args.repeats, W, grad_val)
    name = "bench_peers_quick" if args.quick else "bench_peers"
    out = args.out or RESULTS / f"{name}.json"
    write_json(out, result)
    plot(result, out.with_suffix(".png"))
    checks = [result["brute_force"]["max_rel_diff_loo_residuals"],
              result["naive_jax_grad"]["max_rel_diff_grad"],
              result["sklearn_ridgecv"]["max_rel_diff_loo_squared_errors"],
              result["pydvl_direct_influence"].get(
                  "max_rel_diff_validation_derivative", 0.0)]
    for key in ("diva_jax", "brute_force", "naive_jax_grad", "sklearn_ridgecv",
                "pydvl_direct_influence"):
        sys.stdout.write(f"{key}: {result[key]}\n")
    return 0 if max(checks) < 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
