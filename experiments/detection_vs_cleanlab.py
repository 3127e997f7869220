"""Mislabeled-sample detection side by side: diva_jax.detect vs cleanlab.

For each feature set and noise type (20% of the training labels flipped,
``uniform``: to a random other class; ``pair``: class c to c + 1), three
detectors see the same noisy labels:

* ``detect`` at its defaults (calibrated LOO self-confidence, confident-learning
  flags from LOO predictions, ``lam`` by LOO loss, rows L2-normalised);
* the paper's rule, ``detect(method="derivative")``: flag ``dL/dalpha_i > 0``;
* cleanlab 2.x: out-of-fold probabilities of a logistic regression on the same
  L2-normalised features (``cross_val_predict(LogisticRegression(
  max_iter=1000), cv=StratifiedKFold(5, shuffle=True))``), then
  ``find_label_issues`` for the flags and ``-get_label_quality_scores`` for the
  ranking. The folds are shuffled: PACS is stored domain by domain, and
  unshuffled folds hold out whole domains (ROC-AUC 0.85 instead of 0.98).
  On L2-normalised rows, C = 1 did better than C = 10 and than standardised
  features (PACS, one seed: ROC-AUC 0.983 against 0.978 and 0.862).

With ``--candidates`` every score and flag rule of ``detect`` (and one round of
dropping the flagged, and ``lam`` ten times smaller or larger than the LOO
choice) is measured too, without cleanlab: the table the defaults were chosen
from.

ROC-AUC is of the scores, F1 of the flags, against the flip mask. Wall time is
each detector's whole pipeline (lam selection and standardisation included for
``detect``, the five cross-validated fits included for cleanlab), measured after
one warm-up call of ``detect`` on the same shapes (compilation excluded).

    python -m experiments.detection_vs_cleanlab               # digits
    python -m experiments.detection_vs_cleanlab --all-shared --seeds 0 1 2
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from diva_jax import data
from diva_jax.curation._detect import METHODS, detect, standardize_features
from experiments import _common

logger = logging.getLogger(__name__)
NAME = "detection_vs_cleanlab"
DETECTORS = ("detect_default", "paper_rule", "cleanlab")
NOISE_MODES = ("uniform", "pair")


def timed(fn, *args, **kwargs):
    """``(result, seconds)`` of one call, results blocked until ready."""
    start = time.perf_counter()
    result = jax.block_until_ready(fn(*args, **kwargs))
    return result, time.perf_counter() - start


def run_detect(Z, y, K, repeats: int = 3, **options) -> tuple[dict, float]:
    """``detect`` and the median time of ``repeats`` calls after a warm-up call
    on the same shapes."""
    detect(Z, y, num_classes=K, **options)
    runs = [timed(detect, Z, y, num_classes=K, **options) for _ in range(repeats)]
    return runs[0][0], float(np.median([t for _, t in runs]))


def cleanlab_pipeline(Z, y, *, seed: int = 0, folds: int = 5, max_iter: int = 1000):
    """cleanlab's recipe: out-of-fold LR probabilities, issues and quality scores.

    Returns:
      ``(scores, flags)``: (N,) ``-label quality`` (higher = worse) and bool flags.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probs = cross_val_predict(LogisticRegression(max_iter=max_iter),
                                  standardize_features(Z), y, cv=cv,
                                  method="predict_proba")
        flags = find_label_issues(y, probs)
        scores = -get_label_quality_scores(y, probs)
    return scores, flags


def run_case(Z, y, K, seed: int, mode: str, *, cleanlab: bool = True) -> dict:
    """All detectors on one feature set, noise type and seed."""
    y_noisy, flipped = data.flip_labels(y, 0.2, mode=mode, seed=seed, num_classes=K)
    row = {"seed": seed, "noise_mode": mode}
    default, seconds = run_detect(Z, y_noisy, K)
    row["detect_default"] = {**_common.detection_metrics(
        default.scores, default.flags, flipped), "seconds": seconds,
        "lam": default.lam}
    paper, seconds = run_detect(Z, y_noisy, K, method="derivative")
    row["paper_rule"] = {**_common.detection_metrics(
        paper.scores, paper.flags, flipped), "seconds": seconds, "lam": paper.lam}
    if cleanlab:
        (scores, flags), seconds = timed(cleanlab_pipeline, Z, y_noisy, seed=seed)
        row["cleanlab"] = {**_common.detection_metrics(scores, flags, flipped),
                           "seconds": seconds}
    return row


def candidate_options(lam: float) -> dict[str, dict]:
    """Every ``detect`` variant measured by ``--candidates``, by name."""
    options = {f"{m} + {'threshold' if m == 'derivative' else 'confident'}":
               {"method": m} for m in METHODS}
    options["margin + argmax"] = {"method": "margin", "flag_rule": "argmax"}
    options["derivative + confident"] = {"method": "derivative",
                                         "flag_rule": "confident"}
    options["self_confidence + confident, 1 iteration"] = {"iterations": 1}
    options["derivative + threshold, 1 iteration"] = {"method": "derivative",
                                                       "iterations": 1}
    for factor in (0.1, 10.0):
        for m in ("self_confidence", "derivative"):
            options[f"{m}, lam x {factor:g}"] = {"method": m, "lam": lam * factor}
    return options


def run_candidates(Z, y, K, seed: int, mode: str) -> dict:
    """ROC-AUC and F1 of every variant in :func:`candidate_options`."""
    y_noisy, flipped = data.flip_labels(y, 0.2, mode=mode, seed=seed, num_classes=K)
    lam = detect(Z, y_noisy, num_classes=K).lam
    row = {"seed": seed, "noise_mode": mode, "lam": lam}
    for name, options in candidate_options(lam).items():
        options = {"lam": lam, **options}
        r = detect(Z, y_noisy, num_classes=K, **options)
        m = _common.detection_metrics(r.scores, r.flags, flipped)
        row[name] = {k: m[k] for k in ("roc_auc", "f1", "num_flagged")}
    return row


def candidates_markdown(results: dict) -> str:
    """Mean ROC-AUC / F1 of each variant (rows) per feature set and noise."""
    cols = [(n, m) for n, r in results.items() for m in r["candidates_summary"]]
    names = list(next(iter(results.values()))["candidates_summary"][cols[0][1]])
    lines = ["| detect variant | " + " | ".join(f"{n} {m}" for n, m in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for name in names:
        cells = [results[n]["candidates_summary"][m][name] for n, m in cols]
        lines.append(f"| {name} | " + " | ".join(
            f"{c['roc_auc']:.4f} / {c['f1']:.3f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def summarize_candidates(rows: list[dict]) -> dict:
    """Mean ROC-AUC, F1 and flag count of each variant per noise type."""
    summary = {}
    for mode in sorted({r["noise_mode"] for r in rows}):
        mine = [r for r in rows if r["noise_mode"] == mode]
        names = [k for k in mine[0] if isinstance(mine[0][k], dict)]
        summary[mode] = {n: {k: float(np.mean([r[n][k] for r in mine]))
                             for k in ("roc_auc", "f1", "num_flagged")}
                         for n in names}
    return summary


def summarize(rows: list[dict]) -> dict:
    """Mean and spread over seeds per noise type, detector and metric."""
    summary = {}
    for mode in sorted({r["noise_mode"] for r in rows}):
        mine = [r for r in rows if r["noise_mode"] == mode]
        summary[mode] = {}
        for det in DETECTORS:
            if det not in mine[0]:
                continue
            summary[mode][det] = {
                k: _common.mean_std([r[det][k] for r in mine])
                for k in ("roc_auc", "f1", "precision", "recall", "seconds")}
        if "cleanlab" in summary[mode]:
            summary[mode]["speedup_vs_cleanlab"] = (
                summary[mode]["cleanlab"]["seconds"]["mean"]
                / summary[mode]["detect_default"]["seconds"]["mean"])
    return summary


def markdown(results: dict) -> str:
    """The side-by-side table: feature set x noise x detector."""
    lines = ["| features | noise | detector | ROC-AUC | F1 | wall time (s) |",
             "|---|---|---|---|---|---|"]
    for name, res in results.items():
        for mode, by_det in res["summary"].items():
            for det in DETECTORS:
                if det not in by_det:
                    continue
                m = by_det[det]
                lines.append(
                    f"| {name} (N={res['num_samples']}, d={res['num_features']}, "
                    f"K={res['num_classes']}) | {mode} | {det} | "
                    f"{m['roc_auc']['mean']:.4f} ± {m['roc_auc']['std']:.4f} | "
                    f"{m['f1']['mean']:.3f} ± {m['f1']['std']:.3f} | "
                    f"{m['seconds']['mean']:.2f} |")
    return "\n".join(lines) + "\n"


def feature_sets(args) -> dict[str, tuple]:
    """``name -> (Z, y, K)`` for the sets the flags ask for: the digits' training
    split, and a file's samples with ``split == 0`` (all without ``split``),
    as stored (``detect`` and the cleanlab recipe both L2-normalise rows)."""
    sets = {}
    if args.features is None or args.all_shared:
        task = _common.load_task(None, 0)
        sets["digits"] = (task.Z_train, task.y_train, task.num_classes)
    files = [args.features] if args.features else []
    if args.all_shared:
        files += [f for f in (_common.CALTECH, _common.PACS) if Path(f).is_file()]
    for f in files:
        emb = data.load_embeddings(f)
        train = emb["split"] == 0 if "split" in emb else np.ones(len(emb["labels"]),
                                                                 bool)
        y = emb["labels"][train]
        sets[Path(f).stem] = (emb["features"][train], y, int(y.max()) + 1)
    return sets


def plot(results: dict, out) -> None:
    """Bars of ROC-AUC and F1 per feature set and noise type."""
    plt = _common.pyplot()
    cases = [(n, m) for n, r in results.items() for m in r["summary"]]
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.8 * len(cases)) * 1.6, 3.6))
    width = 0.8 / len(DETECTORS)
    for ax, metric in zip(axes, ("roc_auc", "f1"), strict=True):
        for j, det in enumerate(DETECTORS):
            vals = [results[n]["summary"][m].get(det, {}).get(metric, {})
                    .get("mean", np.nan) for n, m in cases]
            ax.bar(np.arange(len(cases)) + (j - 1) * width, vals, width, label=det)
        ax.set_xticks(np.arange(len(cases)), [f"{n}\n{m}" for n, m in cases])
        ax.set_ylim(0.5 if metric == "f1" else 0.8, 1.0)
        ax.set_title(metric)
    axes[0].legend(loc="lower left")
    _common.save_figure(fig, out, "detection_vs_cleanlab.png")


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(NAME, __doc__.splitlines()[0], seeds=3)
    p.add_argument("--all-shared", action="store_true",
                   help="digits plus every real feature set in ../shared/data")
    p.add_argument("--noise-modes", nargs="+", choices=NOISE_MODES,
                   default=list(NOISE_MODES))
    p.add_argument("--no-cleanlab", action="store_true",
                   help="skip cleanlab (its cross-validated fits dominate the time)")
    p.add_argument("--candidates", action="store_true",
                   help="also measure every score and flag rule of detect")
    args = p.parse_args(argv)
    _common.setup_logging(args.quiet)

    results = {}
    for name, (Z, y, K) in feature_sets(args).items():
        rows = []
        cases = [(m, s) for m in args.noise_modes for s in args.seeds]
        for mode, seed in tqdm(cases, desc=name, disable=args.quiet):
            rows.append(run_case(Z, y, K, seed, mode, cleanlab=not args.no_cleanlab))
            logger.info("%s %s seed %d: %s", name, mode, seed,
                        {d: round(rows[-1][d]["f1"], 4) for d in DETECTORS
                         if d in rows[-1]})
        results[name] = {"num_samples": len(y), "num_features": Z.shape[1],
                         "num_classes": K, "per_seed": rows,
                         "summary": summarize(rows)}
        if args.candidates:
            cand = [run_candidates(Z, y, K, s, m) for m, s in cases]
            results[name]["candidates"] = cand
            results[name]["candidates_summary"] = summarize_candidates(cand)
    config = {"noise_rate": 0.2, "noise_modes": args.noise_modes,
              "features": "digits: random Fourier features of the training split;"
              " files: the split == 0 rows (all rows without split); rows "
              "L2-normalised by both detectors",
              "cleanlab": "cross_val_predict(LogisticRegression(max_iter=1000), "
              "cv=5, method='predict_proba'); find_label_issues defaults; "
              "ranking by -get_label_quality_scores (self-confidence)",
              "timing": "detect: median of 3 calls after a warm-up call (no "
              "compilation); cleanlab: one call of the whole pipeline",
              "machine": "shared 2-core CPU; other jobs ran at the same time"}
    result = {"config": config, "seeds": args.seeds, "results": results}
    _common.write_json(args.out, NAME, result)
    _common.write_text(args.out, f"{NAME}.md", markdown(results))
    if args.candidates:
        _common.write_text(args.out, "detection_candidates.md",
                           candidates_markdown(results))
    plot(results, args.out)
    return result


if __name__ == "__main__":
    main()
