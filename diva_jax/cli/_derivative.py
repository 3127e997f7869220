"""``diva derivative``: the LOO dataset derivative of every training sample."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import jax
import numpy as np

import diva_jax
from diva_jax._io import atomic_savez, atomic_write_json, atomic_write_text
from diva_jax.cli._common import add_input_arguments, load_input

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "derivative", help="LOO dataset derivative of each training sample",
        description="Computes dL_LOO/dalpha_i for every training sample of a ridge "
        "head: positive means the sample raises the leave-one-out error. With "
        "--noise, also reports how well the sign finds the flipped labels.")
    add_input_arguments(parser)
    parser.add_argument("--lam", type=float, default=None,
                        help="ridge strength (default: chosen by LOO loss)")
    parser.add_argument("--top", type=int, default=10,
                        help="how many of the most detrimental samples to list")
    parser.add_argument("--out", metavar="DIR",
                        help="write derivative.npz, derivative.csv, report.json here")
    parser.set_defaults(func=run)


def detection_metrics(scores: np.ndarray, flags: np.ndarray, truth: np.ndarray):
    """ROC-AUC of ``scores`` and precision/recall/F1 of ``flags`` for ``truth``."""
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    return {
        "roc_auc": float(roc_auc_score(truth, scores)),
        "f1": float(f1_score(truth, flags)),
        "precision": float(precision_score(truth, flags, zero_division=0)),
        "recall": float(recall_score(truth, flags)),
        "num_flagged": int(flags.sum()),
        "num_mislabeled": int(truth.sum()),
    }


def run(args: argparse.Namespace) -> int:
    data = load_input(args)
    start = time.perf_counter()
    lam = args.lam if args.lam is not None else diva_jax.select_lambda(data.Z, data.y)
    grad = diva_jax.dataset_derivative(data.Z, data.y, lam)
    grad = np.asarray(jax.block_until_ready(grad))
    seconds = time.perf_counter() - start
    flags = grad > 0

    report = {"num_samples": len(grad), "num_features": int(data.Z.shape[1]),
              "lam": lam, "seconds": seconds, "num_flagged": int(flags.sum())}
    print(f"{len(grad)} samples, d={data.Z.shape[1]}, lam={lam:.4g}: derivative "
          f"in {seconds:.2f} s (compilation included); {flags.sum()} flagged (> 0)")
    if data.is_flipped is not None:
        report["detection"] = detection_metrics(grad, flags, data.is_flipped)
        det = report["detection"]
        print(f"mislabeled detection: ROC-AUC {det['roc_auc']:.4f}, F1 "
              f"{det['f1']:.4f} ({det['num_mislabeled']} flipped labels)")
    order = np.argsort(-grad)[: args.top]
    print("most detrimental samples (id, label, derivative"
          + (", flipped)" if data.is_flipped is not None else ")"))
    for i in order:
        extra = f"  {bool(data.is_flipped[i])}" if data.is_flipped is not None else ""
        print(f"  {data.ids[i]}  {data.y[i]}  {grad[i]:+.3e}{extra}")
    if args.out:
        write_outputs(Path(args.out), data, grad, flags, report)
    return 0


def write_outputs(out: Path, data, grad, flags, report) -> None:
    """Writes derivative.npz, derivative.csv and report.json atomically."""
    atomic_savez(out / "derivative.npz", ids=data.ids, labels=data.y,
                 derivative=grad, flags=flags)
    rows = ["id,label,derivative,flag"] + [
        f"{i},{y},{g:.9g},{int(f)}"
        for i, y, g, f in zip(data.ids, data.y, grad, flags, strict=True)
    ]
    atomic_write_text(out / "derivative.csv", "\n".join(rows) + "\n")
    atomic_write_json(out / "report.json", report)
    logger.info("wrote %s", out)
