"""Fig. 3: the LOO dataset derivative of clean and mislabeled samples.

A fraction of the training labels (20% by default) is flipped; the derivative
``dL_LOO/dalpha_i`` at ``alpha = 1`` (``lam`` chosen by the LOO loss of the noisy
labels) is the paper's score, and "derivative > eps" with ``eps = 0`` its flag
rule. We report ROC-AUC of the score and F1 of the flags for every seed, the
same for ``diva_jax.detect`` at its defaults, and plot the histogram of the
derivative for clean and mislabeled samples.

    python -m experiments.detection                 # digits, 5 seeds
    python -m experiments.detection --features FILE --noise-mode pair
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from diva_jax import data
from diva_jax.curation._detect import detect
from experiments import _common

logger = logging.getLogger(__name__)
NAME = "detection"


def run_seed(task: _common.Task, seed: int, noise: float, mode: str) -> dict:
    """Flips labels, then scores with the paper's rule and with the defaults."""
    y_noisy, flipped = data.flip_labels(task.y_train, noise, mode=mode, seed=seed,
                                        num_classes=task.num_classes)
    paper = detect(task.Z_train, y_noisy, method="derivative",
                   num_classes=task.num_classes)
    default = detect(task.Z_train, y_noisy, lam=paper.lam,
                     num_classes=task.num_classes)
    derivative = np.asarray(paper.scores)
    return {
        "seed": seed, "lam": paper.lam,
        "paper_rule": _common.detection_metrics(derivative, paper.flags, flipped),
        "detect_default": _common.detection_metrics(default.scores, default.flags,
                                                    flipped),
        "derivative_clean": derivative[~flipped],
        "derivative_mislabeled": derivative[flipped],
        "default_clean": np.asarray(default.scores)[~flipped],
        "default_mislabeled": np.asarray(default.scores)[flipped],
    }


def summarize(per_seed: list[dict]) -> dict:
    """Mean and spread over seeds of every metric of both rules."""
    summary = {}
    for rule in ("paper_rule", "detect_default"):
        keys = per_seed[0][rule]
        summary[rule] = {k: _common.mean_std([r[rule][k] for r in per_seed])
                         for k in keys}
    return summary


def histogram(clean: np.ndarray, mislabeled: np.ndarray, bins: int = 60) -> dict:
    """Shared bins and the two counts, on a symmetric log scale of the values."""
    scale = 10.0 ** np.floor(np.log10(np.quantile(np.abs(np.concatenate(
        [clean, mislabeled])), 0.05)))
    transform = lambda x: np.arcsinh(x / scale)  # noqa: E731
    edges = np.linspace(*np.quantile(transform(np.concatenate([clean, mislabeled])),
                                     [0.001, 0.999]), bins + 1)
    return {"scale": float(scale), "edges_arcsinh": edges,
            "clean": np.histogram(transform(clean), edges)[0],
            "mislabeled": np.histogram(transform(mislabeled), edges)[0]}


def plot(hist: dict, default_hist: dict, summary: dict, out) -> None:
    """Fig. 3 left: histogram of the derivative, clean vs mislabeled; right:
    the same for the score of ``detect`` at its defaults."""
    plt = _common.pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
    metrics = summary["paper_rule"]
    edges = hist["edges_arcsinh"]
    for key, color in (("clean", "tab:blue"), ("mislabeled", "tab:red")):
        ax.stairs(hist[key], edges, fill=True, alpha=0.55, color=color, label=key)
    ax.axvline(0.0, color="k", lw=1, ls="--", label="eps = 0")
    ticks = np.array([-1e3, -1e2, -1e1, 0, 1e1, 1e2, 1e3]) * hist["scale"]
    ax.set_xticks(np.arcsinh(ticks / hist["scale"]),
                  [f"{t:.0e}" if t else "0" for t in ticks])
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("LOO dataset derivative dL/dalpha_i (arcsinh scale)")
    ax.set_ylabel("samples")
    ax.set_title(f"paper's rule: F1 (eps = 0) {metrics['f1']['mean']:.3f}, "
                 f"ROC-AUC {metrics['roc_auc']['mean']:.4f}")
    ax.legend()

    for key, color in (("clean", "tab:blue"), ("mislabeled", "tab:red")):
        ax2.stairs(default_hist[key], default_hist["edges"], fill=True, alpha=0.55,
                   color=color, label=key)
    ax2.set_yscale("log")
    ax2.set_xlabel("detect() score: -log p(given label), calibrated LOO")
    m = summary["detect_default"]
    ax2.set_title(f"detect() defaults: F1 {m['f1']['mean']:.3f}, ROC-AUC "
                  f"{m['roc_auc']['mean']:.4f}")
    ax2.legend()
    _common.save_figure(fig, out, "detection_histogram.png")


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--noise", type=float, default=0.2, help="fraction flipped")
    p.add_argument("--noise-mode", choices=("uniform", "pair"), default="uniform")
    args = p.parse_args(argv)
    _common.setup_logging(args.quiet)

    per_seed = []
    for seed in tqdm(args.seeds, desc="seeds", disable=args.quiet):
        task = _common.load_task(args.features, seed)
        per_seed.append(run_seed(task, seed, args.noise, args.noise_mode))
        logger.info("seed %d: paper rule %s", seed, per_seed[-1]["paper_rule"])
    summary = summarize(per_seed)
    first = per_seed[0]
    hist = histogram(first["derivative_clean"], first["derivative_mislabeled"])
    edges = np.linspace(0.0, max(first["default_clean"].max(),
                                 first["default_mislabeled"].max()), 61)
    default_hist = {"edges": edges,
                    "clean": np.histogram(first["default_clean"], edges)[0],
                    "mislabeled": np.histogram(first["default_mislabeled"], edges)[0]}
    for r in per_seed:
        for key in ("derivative", "default"):
            del r[f"{key}_clean"], r[f"{key}_mislabeled"]

    result = {"config": {"dataset": task.name, "features": args.features,
                         "noise": args.noise, "noise_mode": args.noise_mode,
                         "lam": "select_lambda (LOO loss of the noisy labels)",
                         "paper_rule": "detect(method='derivative'): dL/dalpha > 0",
                         "detect_default": "detect() at its defaults"},
              "seeds": args.seeds, "per_seed": per_seed, "summary": summary,
              "histogram_seed0": hist, "default_histogram_seed0": default_hist}
    _common.write_json(args.out, NAME, result)
    plot(hist, default_hist, summary, args.out)
    return result


if __name__ == "__main__":
    main()
