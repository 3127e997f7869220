"""Table 1: test error of a ridge head trained with the weights of each method.

Methods, all judged by the same weighted ridge head at the same ``lam`` (chosen
by the LOO loss of the unweighted training set):

* ``original``: every weight 1;
* ``diva_reweight``: ``diva_jax.reweight`` at its defaults (LOO objective, one
  step, ``eta`` chosen on held-out parts of the training set);
* ``diva_reweight_eta1``: one step with the fixed ``eta = 1``;
* ``chang``: active bias, threshold closeness (Chang et al. 2017);
* ``ren``: learning to reweight (Ren et al. 2018), meta-gradient on a held-out
  20% of the training set, final training on all samples (the held-out ones at
  weight 1); ``ren_80`` is the same run trained on the reweighted 80% only;
* ``clean_only`` (with label noise): the flipped samples at weight 0, the best
  any reweighting could do, for reference.

Run with and without 20% uniform label noise on the training labels; the test
labels are never changed and never used to choose anything.

    python -m experiments.reweight_table                  # digits, 10 seeds
    python -m experiments.reweight_table --features FILE --seeds 0 1 2 3 4
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

import diva_jax
from diva_jax import data
from diva_jax.curation import active_bias, learning_to_reweight, ridge_test_error
from experiments import _common

logger = logging.getLogger(__name__)
NAME = "reweight_table"
METHODS = ("original", "diva_reweight", "diva_reweight_eta1", "chang", "ren",
           "ren_80", "clean_only")


def method_weights(Z, y, K, lam, seed, flipped) -> tuple[dict, float]:
    """The (N,) weights of every method on one training set, and the ``eta``
    that the default reweight chose."""
    ren = learning_to_reweight(Z, y, num_classes=K, seed=seed, return_result=True)
    diva = diva_jax.reweight(Z, y, lam=lam, num_classes=K, seed=seed,
                             return_result=True)
    weights = {
        "original": None,
        "diva_reweight": np.asarray(diva.weights),
        "diva_reweight_eta1": np.asarray(diva_jax.reweight(
            Z, y, lam=lam, num_classes=K, learning_rate=1.0)),
        "chang": active_bias(Z, y, num_classes=K, seed=seed),
        "ren": ren.weights,
        "ren_80": np.where(ren.is_validation, 0.0, ren.weights),
    }
    if flipped is not None:
        weights["clean_only"] = (~flipped).astype(np.float64)
    return weights, diva.learning_rate


def run_seed(task: _common.Task, seed: int, noise: float) -> dict:
    """Test error of every method for one split and noise level."""
    K = task.num_classes
    y, flipped = task.y_train, None
    if noise > 0:
        y, flipped = data.flip_labels(y, noise, num_classes=K, seed=seed)
    lam = diva_jax.select_lambda(task.Z_train, y, num_classes=K)
    weights, eta = method_weights(task.Z_train, y, K, lam, seed, flipped)
    errors = {m: ridge_test_error(task.Z_train, y, w, task.Z_test, task.y_test,
                                  lam=lam, num_classes=K)
              for m, w in weights.items()}
    row = {"seed": seed, "noise": noise, "lam": lam, "diva_eta": eta,
           "test_error": errors}
    if flipped is not None:
        w = weights["diva_reweight"]
        row["diva_weight_mean"] = {"clean": float(w[~flipped].mean()),
                                   "mislabeled": float(w[flipped].mean())}
    return row


def summarize(rows: list[dict]) -> dict:
    """Mean and spread of each method, and paired counts against the original."""
    methods = list(rows[0]["test_error"])
    err = {m: np.array([r["test_error"][m] for r in rows]) for m in methods}
    summary = {m: _common.mean_std(err[m]) for m in methods}
    diva = err["diva_reweight"]
    summary["paired"] = {
        "diva_lower_than_original": int(np.sum(diva < err["original"])),
        "diva_equal_to_original": int(np.sum(diva == err["original"])),
        "diva_higher_than_original": int(np.sum(diva > err["original"])),
        "diva_minus_original": _common.mean_std(diva - err["original"]),
        "eta1_lower_than_original": int(np.sum(err["diva_reweight_eta1"]
                                               < err["original"])),
        "diva_minus_chang": _common.mean_std(diva - err["chang"]),
        "diva_minus_ren": _common.mean_std(diva - err["ren"]),
        "num_seeds": len(rows),
    }
    return summary


def markdown(summaries: dict) -> str:
    """Table 1 as markdown: test error (%) mean ± std per noise level."""
    methods = [m for m in METHODS if any(m in s for s in summaries.values())]
    lines = ["| label noise | " + " | ".join(methods) + " |",
             "|---" * (len(methods) + 1) + "|"]
    for noise, s in summaries.items():
        cells = [f"{100 * s[m]['mean']:.2f} ± {100 * s[m]['std']:.2f}"
                 if m in s else "-" for m in methods]
        lines.append(f"| {noise} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summaries: dict, out) -> None:
    """Bars of mean test error per method, one group per noise level."""
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    width = 0.8 / len(METHODS)
    for j, m in enumerate(METHODS):
        means = [100 * s[m]["mean"] if m in s else np.nan for s in summaries.values()]
        stds = [100 * s[m]["std"] if m in s else 0 for s in summaries.values()]
        ax.bar(np.arange(len(summaries)) + (j - 3) * width, means, width,
               yerr=stds, capsize=2, label=m)
    ax.set_xticks(np.arange(len(summaries)),
                  [f"label noise {n}" for n in summaries])
    ax.set_ylabel("test error (%)")
    ax.legend(fontsize=8, ncol=3)
    _common.save_figure(fig, out, "reweight_table.png")


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(NAME, __doc__.splitlines()[0], seeds=10)
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2],
                   help="label-noise levels to run (default: 0 and 0.2)")
    args = p.parse_args(argv)
    _common.setup_logging(args.quiet)

    per_seed = {str(n): [] for n in args.noise}
    for seed in tqdm(args.seeds, desc="seeds", disable=args.quiet):
        task = _common.load_task(args.features, seed)
        for noise in args.noise:
            per_seed[str(noise)].append(run_seed(task, seed, noise))
            logger.info("seed %d noise %s: %s", seed, noise,
                        per_seed[str(noise)][-1]["test_error"])
    summaries = {n: summarize(rows) for n, rows in per_seed.items()}
    config = {"dataset": task.name, "features": args.features,
              "lam": "select_lambda on the unweighted (noisy) training set, shared "
              "by all methods", "diva_reweight": "diva_jax.reweight defaults",
              "baselines": "diva_jax.curation.active_bias / learning_to_reweight "
              "defaults (softmax head, SGD)", "noise_mode": "uniform"}
    result = {"config": config, "seeds": args.seeds, "per_seed": per_seed,
              "summary": summaries}
    _common.write_json(args.out, NAME, result)
    _common.write_text(args.out, f"{NAME}.md", markdown(summaries))
    plot(summaries, args.out)
    return result


if __name__ == "__main__":
    main()
