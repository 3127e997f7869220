"""Fig. 4: test error as a small core set grows with samples from a pool.

A core of a few training samples per class is kept at weight 1; the rest of
the training split is the pool. DIVA Extend (``diva_jax.extend``, ``k`` samples
per round by most negative LOO derivative, stopping when none is negative) is
compared with uniform random selection (``diva_jax.uniform_extend``, mean over
several random orders) at the same budgets, and with adding the whole pool.
Every subset is judged by the test error of a ridge head at one ``lam``, chosen
by the LOO loss of the core set (the ``lam`` Extend itself uses); the whole
pool is also reported at the ``lam`` its own LOO loss picks. With
``--reselect-lam`` Extend chooses ``lam`` again at every round, and every
subset, DIVA's or uniform's, is judged at the ``lam`` of lowest LOO loss on
itself.

    python -m experiments.extend                         # digits, 5 seeds
    python -m experiments.extend --reselect-lam --out DIR
    python -m experiments.extend --core-only --out DIR
    python -m experiments.extend --balance-classes --out DIR
    python -m experiments.extend --features FILE --per-class 5 --k 20
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

import diva_jax
from diva_jax.curation import ridge_test_error
from experiments import _common

logger = logging.getLogger(__name__)
NAME = "extend"


def split_core(y: np.ndarray, per_class: int, seed: int):
    """Indices of a core with ``per_class`` samples of each class, and the rest."""
    rng = np.random.default_rng(seed)
    core = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class]
                           for c in np.unique(y)])
    pool = np.setdiff1d(np.arange(len(y)), core)
    return np.sort(core), pool


def error_curve(task, core, pool, order, budgets, lam) -> list[float]:
    """Test error of core + the first ``b`` samples of ``order``, per budget b,
    at ``lam``, or at each subset's own LOO choice when ``lam`` is None."""
    Z = np.concatenate([task.Z_train[core], task.Z_train[pool]])
    y = np.concatenate([task.y_train[core], task.y_train[pool]])
    K = task.num_classes
    errors = []
    for b in budgets:
        alpha = np.zeros(len(y), Z.dtype)
        alpha[: len(core)] = 1
        alpha[len(core) + np.asarray(order[:b], int)] = 1
        lam_b = diva_jax.select_lambda(Z, y, alpha, alpha, num_classes=K) \
            if lam is None else lam
        errors.append(ridge_test_error(Z, y, alpha, task.Z_test, task.y_test,
                                       lam=lam_b, num_classes=K))
    return errors


def run_seed(task, seed: int, per_class: int, k: int, uniform_repeats: int,
             reselect_lam: bool = False, score_added: bool = True,
             balance_classes: bool = False) -> dict:
    """DIVA Extend, uniform selection and the whole pool on one split."""
    core, pool = split_core(task.y_train, per_class, seed)
    Zc, yc = task.Z_train[core], task.y_train[core]
    Zp, yp = task.Z_train[pool], task.y_train[pool]
    K = task.num_classes
    diva = diva_jax.extend(Zc, yc, Zp, yp, k=k, num_classes=K,
                           reselect_lam=reselect_lam, score_added=score_added,
                           balance_classes=balance_classes)
    budgets = [int(b) for b in diva.num_added]
    lam = None if reselect_lam else diva.lam
    diva_err = error_curve(task, core, pool, diva.order, budgets, lam)

    uniform_err = []
    for r in range(uniform_repeats):
        uni = diva_jax.uniform_extend(Zc, yc, Zp, yp, k=k, lam=diva.lams[0],
                                      num_classes=K, max_added=budgets[-1],
                                      seed=seed * 100 + r)
        uniform_err.append(error_curve(task, core, pool, uni.order, budgets, lam))
    all_pool = np.arange(len(pool))
    Z_all = np.concatenate([Zc, Zp])
    y_all = np.concatenate([yc, yp])
    lam_all = diva_jax.select_lambda(Z_all, y_all, num_classes=K)
    return {
        "seed": seed, "num_core": len(core), "num_pool": len(pool),
        "lams": diva.lams,
        "budgets": budgets, "diva": diva_err, "diva_objective": diva.objective,
        "uniform": np.mean(uniform_err, 0), "uniform_runs": uniform_err,
        "core_only": diva_err[0], "stop_reason": diva.stop_reason,
        "whole_pool": error_curve(task, core, pool, all_pool, [len(pool)],
                                  diva.lam)[0],
        "whole_pool_own_lam": ridge_test_error(Z_all, y_all, None, task.Z_test,
                                               task.y_test, lam=lam_all,
                                               num_classes=K),
        "lam_whole_pool": lam_all,
    }


def summarize(rows: list[dict]) -> dict:
    """Per seed: DIVA below uniform at every budget? best DIVA subset vs pool."""
    out = {"per_seed": []}
    for r in rows:
        diva, uni = np.asarray(r["diva"]), np.asarray(r["uniform"])
        best = int(np.argmin(diva))
        whole = min(r["whole_pool"], r["whole_pool_own_lam"])
        below = diva[1:] < uni[1:]
        stays = [b for i, b in enumerate(r["budgets"][1:]) if below[i:].all()]
        out["per_seed"].append({
            "seed": r["seed"],
            "fraction_of_budgets_diva_below_uniform": float(below.mean()),
            "diva_below_uniform_from_budget": stays[0] if stays else None,
            "diva_below_uniform_at_every_budget": bool(np.all(diva[1:] < uni[1:])),
            "diva_at_or_below_uniform_at_every_budget": bool(np.all(diva <= uni)),
            "budgets_where_diva_is_higher": [b for b, d, u in zip(
                r["budgets"], diva, uni, strict=True) if d > u],
            "best_diva_error": float(diva[best]),
            "best_diva_budget": r["budgets"][best],
            "whole_pool_error": whole,
            "best_diva_subset_beats_whole_pool": bool(diva[best] < whole),
            "final_diva_error": float(diva[-1]), "total_added": r["budgets"][-1],
        })
    for key in ("best_diva_error", "whole_pool_error", "final_diva_error",
                "total_added", "fraction_of_budgets_diva_below_uniform"):
        out[key] = _common.mean_std([s[key] for s in out["per_seed"]])
    for key in ("diva_below_uniform_at_every_budget",
                "best_diva_subset_beats_whole_pool"):
        out[key] = int(sum(s[key] for s in out["per_seed"]))
    out["num_seeds"] = len(rows)
    return out


def plot(rows: list[dict], out) -> None:
    """Test error vs samples added: DIVA and uniform per seed, the whole pool."""
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, r in enumerate(rows):
        label = (lambda s: s) if i == 0 else (lambda s: None)
        ax.plot(r["budgets"], 100 * np.asarray(r["diva"]), color="tab:red",
                alpha=0.8, label=label("DIVA Extend"))
        ax.plot(r["budgets"], 100 * np.asarray(r["uniform"]), color="tab:blue",
                alpha=0.8, label=label("uniform (mean of orders)"))
        ax.axhline(100 * min(r["whole_pool"], r["whole_pool_own_lam"]),
                   color="k", ls=":", lw=1, label=label("whole pool"))
    ax.set_xlabel("pool samples added")
    ax.set_ylabel("test error (%)")
    ax.set_yscale("log")
    ax.legend()
    _common.save_figure(fig, out, "extend.png")


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=10,
                   help="core samples per class (default: 10)")
    p.add_argument("--k", type=int, default=10, help="samples added per round")
    p.add_argument("--uniform-repeats", type=int, default=3,
                   help="random orders averaged for the uniform baseline")
    p.add_argument("--reselect-lam", action="store_true",
                   help="Extend chooses lam at every round; every subset is "
                   "judged at its own LOO lam")
    p.add_argument("--core-only", action="store_true",
                   help="Extend scores the core alone (score_added=False)")
    p.add_argument("--balance-classes", action="store_true",
                   help="Extend takes the best of each class in turn")
    args = p.parse_args(argv)
    _common.setup_logging(args.quiet)

    rows = []
    for seed in tqdm(args.seeds, desc="seeds", disable=args.quiet):
        task = _common.load_task(args.features, seed)
        rows.append(run_seed(task, seed, args.per_class, args.k,
                             args.uniform_repeats, args.reselect_lam,
                             not args.core_only, args.balance_classes))
        logger.info("seed %d: core %.4f, DIVA best %.4f at %d, whole pool %.4f",
                    seed, rows[-1]["core_only"], min(rows[-1]["diva"]),
                    rows[-1]["budgets"][int(np.argmin(rows[-1]["diva"]))],
                    rows[-1]["whole_pool"])
    config = {"dataset": task.name, "features": args.features,
              "core_per_class": args.per_class, "k": args.k,
              "uniform_repeats": args.uniform_repeats,
              "reselect_lam": args.reselect_lam,
              "score_added": not args.core_only,
              "balance_classes": args.balance_classes,
              "lam": "each subset at its own LOO lam" if args.reselect_lam else
              "select_lambda on the core (as extend does)",
              "whole_pool_lam": "the lam of Extend's last round, and the whole "
              "pool's own LOO lam", "whole_pool_error": "the lower of the two"}
    result = {"config": config, "seeds": args.seeds, "per_seed": rows,
              "summary": summarize(rows)}
    _common.write_json(args.out, NAME, result)
    plot(rows, args.out)
    return result


if __name__ == "__main__":
    main()
