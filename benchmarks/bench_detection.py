"""Mislabeled-sample detection: ``diva_jax.detect`` against cleanlab, on digits.

The embedded digits (random Fourier features, 1,200 training images) with 20%
of the training labels flipped (``--noise-mode uniform`` or ``pair``). Three
detectors see the same noisy labels:

- ``detect``: ``diva_jax.detect`` at its defaults (lam chosen by LOO loss,
  calibrated LOO self-confidence, confident-learning flags), the whole call;
- ``paper_rule``: ``detect(method="derivative")``, flag ``dL/dalpha_i > 0``;
- ``cleanlab``: the recipe cleanlab users follow, in full: out-of-fold
  probabilities of ``LogisticRegression(max_iter=1000)`` on the same
  L2-normalised features by shuffled stratified 5-fold cross-validation, then
  ``cleanlab.filter.find_label_issues`` (flags) and
  ``cleanlab.rank.get_label_quality_scores`` (ranking, negated).

Every detector runs once first (compilation, caches), then ``--repeats`` times
interleaved; medians are reported. The answer is checked: ``detect`` must reach
ROC-AUC >= 0.98 and F1 >= 0.85 and match or beat cleanlab on both, else the
script exits non-zero. Results: ``benchmarks/results/bench_detection.json``.

    python benchmarks/bench_detection.py
    python benchmarks/bench_detection.py --noise-mode pair --repeats 3
"""

from __future__ import annotations

import _common  # noqa: F401  (sets OPENBLAS_NUM_THREADS before numpy)

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

logger = logging.getLogger("bench_detection")


def cleanlab_detector(Z, y, seed: int):
    """The cleanlab pipeline as a function of the noisy labels: (scores, flags)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from diva_jax.curation._detect import standardize_features

    def run():
        cv = StratifiedKFold(5, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probs = cross_val_predict(LogisticRegression(max_iter=1000),
                                      np.asarray(standardize_features(Z)), y,
                                      cv=cv, method="predict_proba")
            return -get_label_quality_scores(y, probs), find_label_issues(y, probs)

    return run


def metrics(scores, flags, truth) -> dict:
    from sklearn.metrics import f1_score, roc_auc_score

    flags = np.asarray(flags)
    return {"roc_auc": float(roc_auc_score(truth, np.asarray(scores))),
            "f1": float(f1_score(truth, flags)), "num_flagged": int(flags.sum())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--noise-mode", choices=("uniform", "pair"),
                        default="uniform")
    parser.add_argument("--seed", type=int, default=0)
    _common.add_common_args(parser)
    parser.set_defaults(repeats=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import diva_jax
    from diva_jax import data

    split = data.load_digits(seed=args.seed)
    Z, K = split.Z_train, split.num_classes
    y, flipped = data.flip_labels(split.y_train, args.noise, mode=args.noise_mode,
                                  seed=args.seed, num_classes=K)
    detectors = {
        "detect": lambda: diva_jax.detect(Z, y, num_classes=K),
        "paper_rule": lambda: diva_jax.detect(Z, y, num_classes=K,
                                              method="derivative"),
        "cleanlab": cleanlab_detector(Z, y, args.seed),
    }
    times = _common.time_interleaved(detectors, args.repeats)
    results = {}
    for name, fn in detectors.items():
        out = fn()
        scores, flags = (out.scores, out.flags) if name != "cleanlab" else out
        results[name] = {**metrics(scores, flags, flipped), **times[name]}
        logger.info("%-10s ROC-AUC %.4f  F1 %.3f  flagged %4d  wall %.3f s",
                    name, results[name]["roc_auc"], results[name]["f1"],
                    results[name]["num_flagged"], results[name]["wall_s"])
    speedup = results["cleanlab"]["wall_s"] / results["detect"]["wall_s"]
    logger.info("detect is %.0fx faster than the cleanlab pipeline", speedup)

    ok = (results["detect"]["roc_auc"] >= max(0.98, results["cleanlab"]["roc_auc"])
          and results["detect"]["f1"] >= max(0.85, results["cleanlab"]["f1"]))
    report = {"config": {"dataset": "digits (random Fourier features, train split)",
                         "num_samples": len(y), "num_features": Z.shape[1],
                         "noise": args.noise, "noise_mode": args.noise_mode,
                         "seed": args.seed, "repeats": args.repeats,
                         "num_mislabeled": int(flipped.sum())},
              "machine": _common.machine(), "results": results,
              "speedup_vs_cleanlab": speedup, "check_passed": ok}
    path = args.out or _common.RESULTS / "bench_detection.json"
    _common.write_json(path, report)
    logger.info("wrote %s", path)
    if not ok:
        logger.error("check failed: detect below the targets or below cleanlab")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
