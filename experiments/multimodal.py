"""Fig. 5 (right): extending a few-shot core with a pool from other modalities.

The paper adds CLIP text embeddings of class names to a few-shot image task and
lets DIVA Extend pick which help. No image-text model can be had offline here,
so this experiment uses the nearest real stand-in: PACS, where MobileNetV2
embeds photos, paintings, cartoons and sketches in one space. The core is a few
photos per class, the test set the other photos, and the pool every art,
cartoon and sketch image: some of the pool helps the photo task, some hurts.
The code path is the same for text embeddings: ``diva_jax.extend`` only sees
(embedding, label) pairs.

DIVA Extend scores the photo core alone (``score_added=False``: the pool is
another domain, and scoring it lets the run fill itself with pool samples
that predict each other well) and chooses ``lam`` again at every round
(``reselect_lam=True``: a ``lam`` chosen on 35 photos of 1,280-d features is
nearly 0, and the test error of every method then peaks where the set size
passes ``d``). It stops when no pool sample has a negative derivative. We
compare it with uniform random selection at the same budgets and with adding
the whole pool, by the photo test error of a ridge head; every training set
is judged at the ``lam`` that minimises the LOO loss of the photo core when
trained on it (the rule Extend follows), and the whole pool also at its own
LOO ``lam``.

    python -m experiments.multimodal                      # PACS, 3 seeds
    python -m experiments.multimodal --features FILE --core-domain photo

A features file needs ``features``, ``labels`` and ``domain`` (int), and
optionally ``domain_names``; ``--core-domain`` names (or numbers) the core's.
Without ``--features`` the script needs ../shared/data/pacs-mobilenetv2 and
says so and stops when it is absent.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

import diva_jax
from diva_jax import data
from diva_jax.curation import ridge_test_error
from experiments import _common
from experiments.extend import split_core

logger = logging.getLogger(__name__)
NAME = "multimodal"


def load_domains(path, core_domain: str):
    """``(Z, y, domain, names, core_index)`` with rows L2-normalised."""
    emb = data.load_embeddings(path)
    if "domain" not in emb:
        raise ValueError(f"{path}: needs a 'domain' array (int per sample) to "
                         f"split core and pool; found {sorted(emb)}.")
    domain = emb["domain"].astype(int)
    names = [str(n) for n in emb.get("domain_names",
                                     np.arange(domain.max() + 1))]
    if core_domain in names:
        core_index = names.index(core_domain)
    elif core_domain.isdigit() and int(core_domain) < len(names):
        core_index = int(core_domain)
    else:
        raise ValueError(f"--core-domain must be one of {names} (or its index); "
                         f"got {core_domain!r}.")
    Z = _common.l2_normalize(emb["features"])
    return Z, emb["labels"], domain, names, core_index


def thin(budgets: list[int], points: int) -> list[int]:
    """At most ``points`` of the budgets, evenly spread, first and last kept."""
    if len(budgets) <= points:
        return budgets
    keep = np.unique(np.linspace(0, len(budgets) - 1, points).round().astype(int))
    return [budgets[i] for i in keep]


def run_seed(Z, y, domain, names, core_index, seed, args) -> dict:
    """Core, pool and test of one seed; DIVA, uniform and the whole pool."""
    in_core_domain = np.flatnonzero(domain == core_index)
    core_local, test_local = split_core(y[in_core_domain], args.per_class, seed)
    core, test = in_core_domain[core_local], in_core_domain[test_local]
    pool = np.flatnonzero(domain != core_index)
    if args.pool_size and args.pool_size < len(pool):
        pool = np.sort(np.random.default_rng(seed).choice(pool, args.pool_size,
                                                          replace=False))
    K = int(y.max()) + 1
    diva = diva_jax.extend(Z[core], y[core], Z[pool], y[pool], k=args.k,
                           max_added=args.max_added, num_classes=K,
                           score_added=False, reselect_lam=True)
    budgets = thin([int(b) for b in diva.num_added], args.eval_points)
    Z_cp, y_cp = np.concatenate([Z[core], Z[pool]]), np.concatenate([y[core], y[pool]])
    in_core = (np.arange(len(y_cp)) < len(core)).astype(Z.dtype)

    def error(order, b, lam=None):
        """Photo test error of the core and ``order[:b]``; ``lam`` by the core's
        LOO loss when None."""
        alpha = in_core.copy()
        alpha[len(core) + np.asarray(order[:b], int)] = 1
        if lam is None:
            lam = diva_jax.select_lambda(Z_cp, y_cp, alpha, in_core, num_classes=K)
        return ridge_test_error(Z_cp, y_cp, alpha, Z[test], y[test], lam=lam,
                                num_classes=K)

    uniform = []
    for r in range(args.uniform_repeats):
        order = np.random.default_rng(seed * 100 + r).permutation(len(pool))
        uniform.append([error(order, b) for b in budgets])
    picked = pool[diva.order]
    lam_all = diva_jax.select_lambda(Z_cp, y_cp, num_classes=K)
    return {
        "seed": seed, "num_core": len(core), "num_pool": len(pool),
        "num_test": len(test), "lams": diva.lams, "budgets": budgets,
        "diva": [error(diva.order, b) for b in budgets],
        "uniform": np.mean(uniform, 0), "uniform_runs": uniform,
        "whole_pool": error(np.arange(len(pool)), len(pool)),
        "whole_pool_own_lam": error(np.arange(len(pool)), len(pool), lam_all),
        "lam_whole_pool": lam_all, "stop_reason": diva.stop_reason,
        "picked_by_domain": {names[d]: int(np.sum(domain[picked] == d))
                             for d in range(len(names)) if d != core_index},
        "pool_by_domain": {names[d]: int(np.sum(domain[pool] == d))
                           for d in range(len(names)) if d != core_index},
    }


def summarize(rows: list[dict]) -> dict:
    """Core alone, best DIVA subset, DIVA's last subset, the whole pool."""
    keys = {
        "core_only": lambda r: r["diva"][0],
        "best_diva": lambda r: min(r["diva"]),
        "final_diva": lambda r: r["diva"][-1],
        "uniform_at_final_budget": lambda r: r["uniform"][-1],
        "whole_pool": lambda r: min(r["whole_pool"], r["whole_pool_own_lam"]),
        "total_added": lambda r: r["budgets"][-1],
    }
    summary = {k: _common.mean_std([f(r) for r in rows]) for k, f in keys.items()}
    for key, at in (("best_diva", np.argmin), ("final_diva", lambda c: -1)):
        summary[f"{key}_beats_whole_pool"] = int(sum(
            r["diva"][at(r["diva"])] < min(r["whole_pool"], r["whole_pool_own_lam"])
            for r in rows))
        summary[f"{key}_beats_uniform"] = int(sum(
            r["diva"][at(r["diva"])] < r["uniform"][at(r["diva"])] for r in rows))
    summary["fraction_of_budgets_diva_below_uniform"] = _common.mean_std([
        float(np.mean(np.asarray(r["diva"][1:]) < np.asarray(r["uniform"][1:])))
        for r in rows])
    summary["num_seeds"] = len(rows)
    return summary


def plot(rows: list[dict], out) -> None:
    """Photo test error vs pool samples added."""
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, r in enumerate(rows):
        first = i == 0
        ax.plot(r["budgets"], 100 * np.asarray(r["diva"]), color="tab:red",
                label="DIVA Extend" if first else None)
        ax.plot(r["budgets"], 100 * np.asarray(r["uniform"]), color="tab:blue",
                label="uniform (mean of orders)" if first else None)
        ax.axhline(100 * min(r["whole_pool"], r["whole_pool_own_lam"]), color="k",
                   ls=":", lw=1, label="whole pool" if first else None)
    ax.set_xlabel("pool samples added (other domains)")
    ax.set_ylabel("photo test error (%)")
    ax.legend()
    _common.save_figure(fig, out, "multimodal.png")


def main(argv: list[str] | None = None) -> dict | None:
    p = _common.parser(NAME, __doc__.splitlines()[0], seeds=3)
    p.add_argument("--core-domain", default="photo",
                   help="domain of the core and test set (default: photo)")
    p.add_argument("--per-class", type=int, default=5,
                   help="core samples per class (default: 5)")
    p.add_argument("--k", type=int, default=50, help="samples added per round")
    p.add_argument("--eval-points", type=int, default=40,
                   help="budgets at which test errors are computed (default: 40)")
    p.add_argument("--max-added", type=int, default=None,
                   help="stop DIVA Extend after this many (default: no limit)")
    p.add_argument("--pool-size", type=int, default=None,
                   help="use a random subset of the pool of this size")
    p.add_argument("--uniform-repeats", type=int, default=3)
    args = p.parse_args(argv)
    _common.setup_logging(args.quiet)

    path = args.features or _common.PACS
    if args.features is None and not Path(path).is_file():
        logger.warning("skipped: %s is absent (PACS MobileNetV2 features, see "
                       "../shared/data/README.md); pass --features FILE with "
                       "'domain' to run on other data.", path)
        return None
    Z, y, domain, names, core_index = load_domains(path, args.core_domain)
    rows = []
    for seed in tqdm(args.seeds, desc="seeds", disable=args.quiet):
        rows.append(run_seed(Z, y, domain, names, core_index, seed, args))
        logger.info("seed %d: core %.4f, best DIVA %.4f, whole pool %.4f, picked %s",
                    seed, rows[-1]["diva"][0], min(rows[-1]["diva"]),
                    rows[-1]["whole_pool"], rows[-1]["picked_by_domain"])
    config = {"features": str(path), "core_domain": names[core_index],
              "pool_domains": [n for i, n in enumerate(names) if i != core_index],
              "core_per_class": args.per_class, "k": args.k,
              "max_added": args.max_added, "pool_size": args.pool_size,
              "uniform_repeats": args.uniform_repeats,
              "eval_points": args.eval_points,
              "stand_in": "PACS domains stand in for CLIP text embeddings",
              "extend": "score_added=False, reselect_lam=True",
              "lam": "per training set: select_lambda scoring the photo core "
              "(the rule extend follows); whole pool also at its own LOO lam"}
    result = {"config": config, "seeds": args.seeds, "per_seed": rows,
              "summary": summarize(rows)}
    _common.write_json(args.out, NAME, result)
    plot(rows, args.out)
    return result


if __name__ == "__main__":
    main()
