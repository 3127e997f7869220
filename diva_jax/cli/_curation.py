"""``diva detect | reweight | extend | augment | curate``: dataset optimisation.

Each command reads a features file (or the embedded digits), prints its
headline numbers and, with ``--out DIR``, writes ``<command>.npz``,
``<command>.csv``, ``report.json`` and PNG plots there, each file atomically.
"""

from __future__ import annotations

import argparse
import inspect
import io
import logging
import textwrap
import time
from pathlib import Path

import jax
import numpy as np

from diva_jax import curation
from diva_jax import data as datasets
from diva_jax._io import (
    atomic_savez, atomic_write_bytes, atomic_write_json, atomic_write_text,
)
from diva_jax._lambda import select_lambda
from diva_jax.cli._common import add_input_arguments, load_input
from diva_jax.cli._derivative import detection_metrics
from diva_jax.curation import _detect

logger = logging.getLogger(__name__)

_EPILOG = """\
input: --features FILE, an .npz with 'features' (n, d) and 'labels' (n,), and
optional 'ids' and 'split' (0 train, 1 test), as written by `diva features`;
without it, the embedded scikit-learn digits. --noise 0.2 flips 20% of the
training labels first, to measure how well they are found.

example:
  {example}
"""

_EXAMPLES = {
    "detect": "diva detect --features embeddings.npz --out runs/detect",
    "reweight": "diva reweight --noise 0.2 --baselines --out runs/reweight",
    "extend": "diva extend --noise 0.2 --core-size 200 --uniform --out runs/extend",
    "augment": "diva augment --out runs/augment",
    "curate": "diva curate --noise 0.2 --out runs/curate",
}


def register(subparsers) -> None:
    """Adds the dataset-optimisation subcommands to the ``diva`` parser."""
    for name, add in (("detect", _add_detect), ("reweight", _add_reweight),
                      ("extend", _add_extend), ("augment", _add_augment),
                      ("curate", _add_curate)):
        add(subparsers, name)


def _parser(subparsers, name, help_, description):
    parser = subparsers.add_parser(
        name, help=help_, description=textwrap.fill(description, 79),
        epilog=_EPILOG.format(example=_EXAMPLES[name]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_arguments(parser)
    group = parser.add_argument_group("output")
    group.add_argument("--out", metavar="DIR", help="write results, report.json "
                       "and plots to this folder (created if missing)")
    group.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--lam", type=float, default=None,
                        help="ridge strength (default: chosen by LOO loss)")
    return parser


def _detect_default(name):
    return inspect.signature(_detect.detect).parameters[name].default


def _add_detect_options(parser):
    group = parser.add_argument_group("detection")
    group.add_argument("--method", choices=_detect.METHODS, default=None,
                       help="score (default: %s; 'derivative' is the paper's LOO "
                       "derivative)" % _detect_default("method"))
    group.add_argument("--flag-rule", choices=("auto",) + _detect.FLAG_RULES,
                       default=None, help="how scores become flags (default: %s)"
                       % _detect_default("flag_rule"))
    group.add_argument("--threshold", type=float, default=None,
                       help="eps: flag when score > eps (default: %s, the "
                       "paper's)" % _detect_default("threshold"))
    group.add_argument("--iterations", type=int, default=None,
                       help="rounds of drop the flagged, refit, rescore (default: "
                       "%s)" % _detect_default("iterations"))
    group.add_argument("--standardize", choices=_detect.STANDARDIZE, default=None,
                       help="feature scaling before detection (default: %s)"
                       % _detect_default("standardize"))


def _learning_rate(text: str):
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number >= 0, got "
                                         f"{text!r}")
    return value


def _add_reweight_options(parser, learning_rate=None):
    group = parser.add_argument_group("reweighting")
    group.add_argument("--steps", type=int,
                       default=curation._reweight.DEFAULT_STEPS,
                       help="projected gradient steps from alpha = 1 (default: "
                       "%(default)s; the paper uses 1-3)")
    group.add_argument("--learning-rate", type=_learning_rate,
                       default=learning_rate or "auto",
                       help="eta: typical change of one weight in the first step, "
                       "or 'auto': chosen on held-out parts of the training set "
                       "(default: %(default)s)")
    group.add_argument("--baselines", action="store_true",
                       help="also run Ren et al. 2018 and Chang et al. 2017 and "
                       "report their test error")


def _add_detect(subparsers, name):
    parser = _parser(subparsers, name, "flag mislabeled or detrimental samples",
                     "Scores every training sample from one closed-form "
                     "leave-one-out fit (higher = more detrimental) and flags the "
                     "likely mislabeled ones. CSV columns: id, label, score, "
                     "flag, weight (0 for flagged samples, else 1).")
    _add_detect_options(parser)
    parser.add_argument("--top", type=int, default=10,
                        help="how many samples to list (default: 10)")
    parser.set_defaults(func=run_detect)


def _add_reweight(subparsers, name):
    parser = _parser(subparsers, name, "DIVA Reweight: weights that lower LOO error",
                     "Takes a few projected gradient steps on the sample weights "
                     "alpha from 1, against the dataset derivative of the "
                     "leave-one-out loss, and reports the test error of a ridge "
                     "head trained with them. CSV columns: id, label, score (the "
                     "LOO derivative at alpha = 1), flag (weight 0), weight.")
    _add_reweight_options(parser)
    parser.set_defaults(func=run_reweight)


def _add_extend(subparsers, name):
    parser = _parser(subparsers, name, "DIVA Extend: pick useful samples from a pool",
                     "Adds the pool samples whose dataset derivative is most "
                     "negative, k per round, until none is negative. The pool is "
                     "--pool FILE, or the training set is split into a core of "
                     "--core-size samples and a pool. CSV (pool rows): id, label, "
                     "score (derivative with the core alone), flag (selected), "
                     "weight, selected_at (position in the order, -1 if never).")
    group = parser.add_argument_group("extension")
    group.add_argument("--pool", metavar="FILE",
                       help="pool embedding file (.npz with 'features', 'labels')")
    group.add_argument("--core-size", type=int, default=200,
                       help="without --pool: core samples taken at random from the "
                       "training set, the rest is the pool (default: 200)")
    group.add_argument("-k", type=int, default=10,
                       help="pool samples added per round (default: 10)")
    group.add_argument("--max-rounds", type=int, default=None,
                       help="stop after this many rounds (default: when no pool "
                       "derivative is negative)")
    group.add_argument("--core-only", action="store_true",
                       help="score the core set alone by the LOO loss (default: "
                       "the core and the samples added so far); better when the "
                       "core is clean and the pool is not")
    group.add_argument("--balance-classes", action="store_true",
                       help="each round, take the best pool sample of each class in "
                       "turn rather than the k best overall")
    group.add_argument("--reselect-lam", action="store_true",
                       help="without --lam: choose lam by LOO at every round, not "
                       "once on the core (for a core of few samples per class)")
    group.add_argument("--uniform", action="store_true",
                       help="also add the pool in random order, for comparison")
    parser.set_defaults(func=run_extend)


def _add_augment(subparsers, name):
    parser = _parser(subparsers, name, "probabilities of augmentation transforms",
                     "Reweights the union of the training set and its transformed "
                     "copies; the probability of a transform is the share of the "
                     "weight on its copies. On the digits: horizontal and vertical "
                     "flips. With --copies FILE: an .npz with 'features' (T + 1, n, "
                     "d), identity first, 'labels' (n,) and optional 'names'.")
    parser.add_argument("--copies", metavar="FILE",
                        help="features of transformed copies (see above)")
    _add_reweight_options(parser, curation._augment.LEARNING_RATE)
    parser.set_defaults(func=run_augment)


def _add_curate(subparsers, name):
    parser = _parser(subparsers, name, "detect + reweight + report, in one run",
                     "Flags likely mislabeled samples, reweights the training set "
                     "with DIVA Reweight, and reports detection quality (with "
                     "--noise) and test error before and after. --lam sets the "
                     "ridge head of the reweighting and the test error; detection "
                     "chooses its own on its scaled features. CSV columns: id, "
                     "label, score and flag (detection), weight (reweighting).")
    _add_detect_options(parser)
    _add_reweight_options(parser)
    parser.set_defaults(func=run_curate)


def _config(args) -> dict:
    """The options of the run, for the report."""
    skip = {"func"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def _versions() -> dict:
    import diva_jax

    return {"diva_jax": diva_jax.__version__, "jax": jax.__version__,
            "device": str(jax.devices()[0])}


def _lam(args, Z, y) -> float:
    return float(args.lam) if args.lam is not None else select_lambda(Z, y)


def _csv(path: Path, columns: dict) -> None:
    """Writes equal-length columns as CSV, floats with 9 significant digits."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return f"{v:.9g}"
        if isinstance(v, (bool, np.bool_)):
            return str(int(v))
        return str(v)

    rows = [",".join(columns)]
    rows += [",".join(cell(c[i]) for c in columns.values())
             for i in range(len(next(iter(columns.values()))))]
    atomic_write_text(path, "\n".join(rows) + "\n")


def _sample_columns(data, score, flag, weight) -> dict:
    columns = {"id": data.ids, "label": data.y, "score": np.asarray(score),
               "flag": np.asarray(flag, bool), "weight": np.asarray(weight)}
    if data.is_flipped is not None:
        columns["flipped"] = data.is_flipped
    return columns


def _write(out: Path, name: str, columns: dict, report: dict, arrays=None) -> None:
    """``<name>.npz`` (the columns and ``arrays``), ``<name>.csv``, ``report.json``."""
    atomic_savez(out / f"{name}.npz", **columns, **(arrays or {}))
    _csv(out / f"{name}.csv", columns)
    atomic_write_json(out / "report.json", report)
    logger.info("wrote %s/%s.{npz,csv} and report.json", out, name)


def _figure(path: Path, draw) -> None:
    """Draws with ``draw(fig)`` on an Agg canvas and writes the PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(6, 4))
    try:
        draw(fig)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _histogram(path: Path, values, is_flipped, xlabel: str, title: str) -> None:
    def draw(fig):
        ax = fig.add_subplot()
        if is_flipped is None:
            ax.hist(values, bins=60, color="tab:blue")
        else:
            bins = np.histogram_bin_edges(values, 60)
            ax.hist(values[~is_flipped], bins, alpha=0.6, label="correct label")
            ax.hist(values[is_flipped], bins, alpha=0.6, label="flipped label")
            ax.legend()
        ax.set(xlabel=xlabel, ylabel="samples", title=title)

    _figure(path, draw)


def _gallery(path: Path, images, labels, order_down, order_up, count=8) -> None:
    """The most down-weighted (top row) and up-weighted (bottom row) images."""
    def draw(fig):
        fig.set_size_inches(count * 1.1, 2.8)
        for row, (order, tag) in enumerate(((order_down, "down"), (order_up, "up"))):
            for j, i in enumerate(order[:count]):
                ax = fig.add_subplot(2, count, row * count + j + 1)
                ax.imshow(images[i], cmap="gray_r")
                ax.set_title(f"{tag}: {labels[i]}", fontsize=8)
                ax.axis("off")

    _figure(path, draw)


def _test_error(data, weights, lam):
    if data.Z_test is None:
        return None
    return curation.ridge_test_error(data.Z, data.y, weights, data.Z_test,
                                     data.y_test, lam=lam)


def _detection(args, data, lam=None):
    """``detect`` with the options given on the command line, library defaults
    for the rest."""
    names = ("method", "flag_rule", "threshold", "standardize", "iterations")
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    return curation.detect(data.Z, data.y, lam=lam, **options)


def _print_detection(result, data, seconds, top):
    scores, flags = np.asarray(result.scores), np.asarray(result.flags)
    print(f"{len(scores)} samples, d={data.Z.shape[1]}: {int(flags.sum())} flagged "
          f"by '{result.method}' scores in {seconds:.2f} s (compilation included)")
    metrics = None
    if data.is_flipped is not None:
        metrics = detection_metrics(scores, flags, data.is_flipped)
        print(f"mislabeled detection: ROC-AUC {metrics['roc_auc']:.4f}, F1 "
              f"{metrics['f1']:.4f}, precision {metrics['precision']:.3f}, recall "
              f"{metrics['recall']:.3f} ({metrics['num_mislabeled']} flipped)")
    if top > 0:
        print("most detrimental samples (id, label, score)")
    for i in np.asarray(result.ranking)[:top]:
        print(f"  {data.ids[i]}  {data.y[i]}  {scores[i]:+.4g}")
    return metrics


def run_detect(args: argparse.Namespace) -> int:
    data = load_input(args)
    start = time.perf_counter()
    result = _detection(args, data, args.lam)
    jax.block_until_ready(result.scores)
    seconds = time.perf_counter() - start
    metrics = _print_detection(result, data, seconds, args.top)
    if args.out:
        out = Path(args.out)
        flags = np.asarray(result.flags)
        report = {"command": "detect", "config": _config(args), **_versions(),
                  "num_samples": len(flags), "num_features": int(data.Z.shape[1]),
                  "lam": result.lam, "method": result.method, "seconds": seconds,
                  "num_flagged": int(flags.sum()), "detection": metrics}
        _write(out, "detect", _sample_columns(data, result.scores, flags,
                                              (~flags).astype(float)), report,
               {"ranking": np.asarray(result.ranking)})
        if not args.no_plots:
            _histogram(out / "scores.png", np.asarray(result.scores),
                       data.is_flipped, f"{result.method} score", "Detection scores")
    return 0


def _reweighting(args, data, lam):
    """DIVA Reweight and, with ``--baselines``, Ren and Chang: weights, test
    errors and the seconds DIVA Reweight took."""
    start = time.perf_counter()
    result = curation.reweight(data.Z, data.y, lam=lam, steps=args.steps,
                               learning_rate=args.learning_rate, seed=args.seed,
                               return_result=True)
    weights = {"original": None, "diva_reweight": np.asarray(result.weights)}
    seconds = time.perf_counter() - start
    if args.baselines:
        weights["ren_2018"] = curation.learning_to_reweight(
            data.Z, data.y, seed=args.seed, progress=True)
        weights["chang_2017"] = curation.active_bias(data.Z, data.y, seed=args.seed,
                                                     progress=True)
    errors = {name: _test_error(data, w, lam) for name, w in weights.items()}
    return result, weights, errors, seconds


def _print_errors(errors, num_test):
    if errors["original"] is None:
        print("no test split: pass a features file with 'split' (1 = test) to "
              "measure test error")
        return
    print(f"test error of the ridge head ({num_test} test samples):")
    for name, error in errors.items():
        print(f"  {name:<14} {100 * error:6.2f}%")


def run_reweight(args: argparse.Namespace) -> int:
    data = load_input(args)
    start = time.perf_counter()
    lam = _lam(args, data.Z, data.y)
    result, weights, errors, reweight_seconds = _reweighting(args, data, lam)
    seconds = time.perf_counter() - start
    w = weights["diva_reweight"]
    print(f"{len(w)} samples, d={data.Z.shape[1]}, lam={lam:.4g}: {args.steps} "
          f"step(s), eta={result.learning_rate:.3g}, in {reweight_seconds:.2f} s "
          f"(compilation included); LOO loss "
          f"{result.objective[0]:.4f} -> "
          f"{result.objective[-1]:.4f}; {int(np.sum(w == 0))} weights at 0")
    if data.is_flipped is not None:
        print(f"mean weight: correct labels {w[~data.is_flipped].mean():.3f}, "
              f"flipped labels {w[data.is_flipped].mean():.3f}")
    _print_errors(errors, 0 if data.y_test is None else len(data.y_test))
    if args.out:
        out = Path(args.out)
        report = {"command": "reweight", "config": _config(args), **_versions(),
                  "num_samples": len(w), "lam": lam, "seconds": seconds,
                  "reweight_seconds": reweight_seconds,
                  "objective": result.objective, "test_error": errors}
        columns = _sample_columns(data, result.derivative, w == 0, w)
        extra = {f"weights_{k}": v for k, v in weights.items() if v is not None}
        _write(out, "reweight", columns, report, extra)
        if not args.no_plots:
            _histogram(out / "weights.png", w, data.is_flipped, "weight alpha",
                       "DIVA Reweight")
    return 0


class _Sets:
    """Core and pool of an extension run (features, labels, ids, flipped)."""

    def __init__(self, args, data):
        if args.pool:
            pool = datasets.load_embeddings(args.pool)
            core = np.arange(len(data.y))
            self.pool_Z, self.pool_y = pool["features"], pool["labels"]
            self.pool_ids = pool.get("ids", np.arange(len(self.pool_y)))
            self.pool_flipped = None
        else:
            n = len(data.y)
            if not 0 < args.core_size < n:
                raise ValueError(f"--core-size must be in (0, {n}) to leave a pool; "
                                 f"got {args.core_size}.")
            order = np.random.default_rng(args.seed).permutation(n)
            core, pool = order[: args.core_size], order[args.core_size:]
            self.pool_Z, self.pool_y = data.Z[pool], data.y[pool]
            self.pool_ids = data.ids[pool]
            self.pool_flipped = None if data.is_flipped is None else \
                data.is_flipped[pool]
        self.core_Z, self.core_y = data.Z[core], data.y[core]

    def test_errors(self, data, result):
        """Test error after each round: the core plus the picks so far, at the
        round's ``lam``."""
        if data.Z_test is None:
            return None
        Z = np.concatenate([self.core_Z, self.pool_Z])
        y = np.concatenate([self.core_y, self.pool_y])
        core = np.ones(len(self.core_y))
        return [curation.ridge_test_error(
            Z, y, np.concatenate([core, result.pool_weights(int(m))]), data.Z_test,
            data.y_test, lam=lam) for m, lam in zip(result.num_added, result.lams,
                                                    strict=True)]


def _extend_summary(sets, data, result, uniform, lam):
    """Test-error curves and headline numbers of an extension run; the whole
    pool is judged at ``lam``, or at its own LOO choice when None."""
    summary = {"lam": result.lam, "lams": result.lams,
               "num_core": len(sets.core_y), "num_pool": len(sets.pool_y),
               "num_added": len(result.order), "rounds": len(result.objective) - 1,
               "stop_reason": result.stop_reason, "objective": result.objective,
               "num_added_per_round": result.num_added}
    summary["test_error"] = sets.test_errors(data, result)
    if summary["test_error"] is not None:
        Z_all = np.concatenate([sets.core_Z, sets.pool_Z])
        y_all = np.concatenate([sets.core_y, sets.pool_y])
        summary["test_error_whole_pool"] = curation.ridge_test_error(
            Z_all, y_all, None, data.Z_test, data.y_test, lam=lam)
    if uniform is not None:
        summary["uniform_objective"] = uniform.objective
        summary["uniform_num_added"] = uniform.num_added
        summary["uniform_test_error"] = sets.test_errors(data, uniform)
    if sets.pool_flipped is not None:
        summary["pool_flipped_rate"] = float(sets.pool_flipped.mean())
        summary["selected_flipped_rate"] = float(
            sets.pool_flipped[result.order].mean()) if len(result.order) else 0.0
    return summary


def _print_extend(summary, seconds):
    lams = summary["lams"]
    lam = f"{lams[0]:.4g}" if np.ptp(lams) == 0 else \
        f"{lams[0]:.3g} -> {lams[-1]:.3g} (by LOO each round)"
    print(f"core {summary['num_core']}, pool {summary['num_pool']}, lam="
          f"{lam}: added {summary['num_added']} pool samples in "
          f"{summary['rounds']} rounds ({summary['stop_reason']}), {seconds:.2f} s")
    objective = summary["objective"]
    print(f"LOO loss {objective[0]:.4f} -> {objective[-1]:.4f}")
    errors = summary["test_error"]
    if errors is not None:
        print(f"test error: core alone {100 * errors[0]:.2f}%, DIVA Extend "
              f"{100 * errors[-1]:.2f}% (best on the path {100 * min(errors):.2f}%),"
              f" whole pool {100 * summary['test_error_whole_pool']:.2f}%")
    if summary.get("uniform_test_error"):
        uniform = summary["uniform_test_error"][-1]
        print(f"uniform selection, same budget: {100 * uniform:.2f}%")
    if "pool_flipped_rate" in summary:
        print(f"flipped labels: {100 * summary['pool_flipped_rate']:.1f}% of the "
              f"pool, {100 * summary['selected_flipped_rate']:.1f}% of the selected")


def _extend_plot(path, summary):
    def draw(fig):
        ax = fig.add_subplot()
        key, label = ("test_error", "test error") if summary["test_error"] \
            else ("objective", "LOO loss")
        ax.plot(summary["num_added_per_round"], summary[key], "o-", ms=3,
                label="DIVA Extend", color="tab:red")
        if "uniform_num_added" in summary:
            ax.plot(summary["uniform_num_added"], summary[f"uniform_{key}"], "o-",
                    ms=3, label="uniform", color="tab:blue")
        if key == "test_error":
            ax.axhline(summary["test_error_whole_pool"], ls="--", color="gray",
                       label="whole pool")
        ax.set(xlabel="pool samples added", ylabel=label, title="Dataset extension")
        ax.legend()

    _figure(path, draw)


def run_extend(args: argparse.Namespace) -> int:
    data = load_input(args)
    sets = _Sets(args, data)
    start = time.perf_counter()
    options = dict(k=args.k, lam=args.lam, max_rounds=args.max_rounds,
                   score_added=not args.core_only,
                   reselect_lam=args.reselect_lam, progress=True)
    result = curation.extend(sets.core_Z, sets.core_y, sets.pool_Z, sets.pool_y,
                             balance_classes=args.balance_classes, **options)
    seconds = time.perf_counter() - start
    uniform = curation.uniform_extend(
        sets.core_Z, sets.core_y, sets.pool_Z, sets.pool_y, seed=args.seed,
        max_added=len(result.order), **options) if args.uniform else None
    summary = _extend_summary(sets, data, result, uniform, args.lam)
    _print_extend(summary, seconds)
    if args.out:
        out = Path(args.out)
        selected_at = np.full(len(sets.pool_y), -1)
        selected_at[result.order] = np.arange(len(result.order))
        columns = {"id": sets.pool_ids, "label": sets.pool_y,
                   "score": result.pool_derivative, "flag": selected_at >= 0,
                   "weight": result.pool_weights(), "selected_at": selected_at}
        if sets.pool_flipped is not None:
            columns["flipped"] = sets.pool_flipped
        report = {"command": "extend", "config": _config(args), **_versions(),
                  "seconds": seconds, **summary}
        _write(out, "extend", columns, report,
               {"order": result.order, "rounds": result.rounds})
        if not args.no_plots:
            _extend_plot(out / "extend.png", summary)
    return 0


def _augment_inputs(args, data):
    """Training copies (T + 1, n, d), names, and test copies (or None)."""
    if args.copies:
        with np.load(args.copies, allow_pickle=False) as f:
            copies, labels = f["features"], f["labels"]
            names = [str(n) for n in f["names"]] if "names" in f.files else None
        if labels.shape != copies.shape[1:2]:
            raise ValueError(f"{args.copies}: labels must be (n,) for features "
                             f"(T + 1, n, d); got {labels.shape} and {copies.shape}.")
        return copies, labels, names, None
    if args.features:
        raise ValueError("augment needs images or copies: use --copies FILE with a "
                         "features file, or run it on the embedded digits.")
    split = datasets.load_digits(features=args.digits_features, seed=args.seed)
    images = np.concatenate([split.images_train, split.images_test])
    copies = curation.flipped_features(images, features=args.digits_features,
                                       seed=args.seed)
    n = len(split.y_train)
    return copies[:, :n], data.y, list(curation._augment.FLIPS), copies[:, n:]


def _augment_errors(copies, labels, weights, test, y_test, lam):
    """Test error on untransformed test images: identity only, uniform union,
    weighted union."""
    count, n, d = copies.shape
    Z, y = copies.reshape(count * n, d), np.tile(labels, count)
    identity = np.zeros((count, n))
    identity[0] = 1

    def evaluate(w):
        return curation.ridge_test_error(Z, y, w, test[0], y_test, lam=lam)

    return {"identity_only": evaluate(identity.reshape(-1)),
            "union_uniform": evaluate(None),
            "union_reweighted": evaluate(weights.reshape(-1))}


def run_augment(args: argparse.Namespace) -> int:
    data = load_input(args)
    copies, labels, names, test = _augment_inputs(args, data)
    start = time.perf_counter()
    lam = _lam(args, copies[0], labels)
    probabilities, weights = curation.augmentation_probabilities(
        copies, labels, names=names, lam=lam, steps=args.steps,
        learning_rate=args.learning_rate, return_weights=True)
    seconds = time.perf_counter() - start
    print(f"{copies.shape[1]} samples x {copies.shape[0]} copies, lam={lam:.4g}, "
          f"{seconds:.2f} s; probability of each transform:")
    for name, p in probabilities.items():
        print(f"  {name:<16} {p:.3f}")
    errors = None
    if test is not None:
        errors = _augment_errors(copies, labels, weights, test, data.y_test, lam)
        print("test error: " + ", ".join(f"{k} {100 * v:.2f}%"
                                          for k, v in errors.items()))
    if args.out:
        out = Path(args.out)
        names = list(probabilities)
        count, n = weights.shape
        ids = np.asarray([f"{i}:{t}" for t in names for i in range(n)])
        columns = {"id": ids, "label": np.tile(labels, count),
                   "transform": np.repeat(names, n), "weight": weights.reshape(-1)}
        report = {"command": "augment", "config": _config(args), **_versions(),
                  "lam": lam, "seconds": seconds, "probabilities": probabilities,
                  "test_error": errors}
        _write(out, "augment", columns, report)
        if not args.no_plots:
            _figure(out / "augment.png", lambda fig: fig.add_subplot().bar(
                names, [probabilities[k] for k in names], color="tab:red"))
    return 0


def run_curate(args: argparse.Namespace) -> int:
    data = load_input(args)
    start = time.perf_counter()
    detection = _detection(args, data)
    jax.block_until_ready(detection.scores)
    detect_seconds = time.perf_counter() - start
    lam = _lam(args, data.Z, data.y)
    result, weights, errors, _ = _reweighting(args, data, lam)
    flags = np.asarray(detection.flags)
    errors["drop_flagged"] = _test_error(data, (~flags).astype(float), lam)
    seconds = time.perf_counter() - start

    metrics = _print_detection(detection, data, detect_seconds, 0)
    w = weights["diva_reweight"]
    print(f"DIVA Reweight ({args.steps} step(s), eta={result.learning_rate:.3g}, "
          f"lam={lam:.4g}): LOO loss "
          f"{result.objective[0]:.4f} -> {result.objective[-1]:.4f}, "
          f"{int(np.sum(w == 0))} weights at 0")
    _print_errors(errors, 0 if data.y_test is None else len(data.y_test))
    print(f"total time {seconds:.2f} s (compilation included)")
    if args.out:
        _write_curate(Path(args.out), args, data, detection, result, weights,
                      {"seconds": seconds, "detect_seconds": detect_seconds,
                       "lam": lam, "detection": metrics, "test_error": errors})
        print(f"wrote {args.out}/curate.csv, curate.npz, report.json and plots")
    return 0


def _write_curate(out, args, data, detection, result, weights, numbers):
    w = weights["diva_reweight"]
    report = {"command": "curate", "config": _config(args), **_versions(),
              "num_samples": len(w), "num_features": int(data.Z.shape[1]),
              "num_flagged": int(np.sum(detection.flags)),
              "reweight_objective": result.objective, **numbers}
    columns = _sample_columns(data, detection.scores, detection.flags, w)
    extra = {f"weights_{k}": v for k, v in weights.items() if v is not None}
    _write(out, "curate", columns, report,
           {"ranking": np.asarray(detection.ranking),
            "derivative": np.asarray(result.derivative), **extra})
    if args.no_plots:
        return
    _histogram(out / "scores.png", np.asarray(detection.scores), data.is_flipped,
               f"{detection.method} score", "Detection scores")
    _histogram(out / "weights.png", w, data.is_flipped, "weight alpha",
               "DIVA Reweight")
    if data.images is not None:
        g = np.asarray(result.derivative)
        _gallery(out / "gallery.png", data.images, data.y, np.argsort(-g),
                 np.argsort(g))
