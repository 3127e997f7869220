"""What every experiment shares: flags, data, versions, metrics and atomic output.

Each experiment runs on the embedded digits by default (random Fourier features
of the 8x8 pixels, 1,200 train / 597 test) or on an embedding file given with
``--features`` (``.npz`` with ``features``, ``labels`` and optionally ``split``
with 0 = train, 1 = test; without ``split`` a stratified 30% is held out for
test). Features from a file are L2-normalised row by row, as ``diva_jax.detect``
does by default; the digits' random features already have rows of norm about 1.
"""

from __future__ import annotations

import argparse
import io
import logging
import platform
import sys
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

import diva_jax
from diva_jax import data
from diva_jax._io import atomic_write_bytes, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CALTECH = SHARED / "caltech101-mobilenetv2" / "caltech101_mnv2_features.npz"
PACS = SHARED / "pacs-mobilenetv2" / "pacs_mnv2_features.npz"


class Task(NamedTuple):
    """A classification task with a train and a test split.

    Attributes:
      Z_train, y_train: (n, d) features and (n,) int labels.
      Z_test, y_test: the test split.
      num_classes: K.
      images_train: (n, 8, 8) digit images, or None for a features file.
      name: "digits" or the file's stem.
    """

    Z_train: np.ndarray
    y_train: np.ndarray
    Z_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    images_train: np.ndarray | None
    name: str


def l2_normalize(Z: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero)."""
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    return (Z / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def load_task(features: str | None, seed: int, *, test_fraction: float = 0.3) -> Task:
    """The digits (``features=None``) or an embedding file, split for one seed."""
    if features is None:
        split = data.load_digits(seed=seed)
        return Task(split.Z_train, split.y_train, split.Z_test, split.y_test,
                    split.num_classes, split.images_train, "digits")
    emb = data.load_embeddings(features)
    Z, y = l2_normalize(emb["features"]), emb["labels"]
    K = int(y.max()) + 1
    if "split" in emb:
        train = emb["split"] == 0
    else:
        from sklearn.model_selection import train_test_split

        idx_train, _ = train_test_split(np.arange(len(y)), test_size=test_fraction,
                                        stratify=y, random_state=seed)
        train = np.zeros(len(y), bool)
        train[idx_train] = True
    return Task(Z[train], y[train], Z[~train], y[~train], K, None, Path(features).stem)


def test_error(Z_train, y_train, alpha, lam, Z_test, y_test, num_classes) -> float:
    """Test error (fraction wrong) of the weighted ridge head ``W^T z``."""
    W = diva_jax.fit_ridge(Z_train, y_train, alpha, lam, num_classes=num_classes)
    predicted = np.asarray(jax.numpy.argmax(Z_test @ W, 1))
    return float(np.mean(predicted != np.asarray(y_test)))


def detection_metrics(scores, flags, truth) -> dict:
    """ROC-AUC of ``scores`` and precision, recall and F1 of ``flags``."""
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    scores, flags, truth = (np.asarray(a) for a in (scores, flags, truth))
    return {
        "roc_auc": float(roc_auc_score(truth, scores)),
        "f1": float(f1_score(truth, flags, zero_division=0)),
        "precision": float(precision_score(truth, flags, zero_division=0)),
        "recall": float(recall_score(truth, flags, zero_division=0)),
        "num_flagged": int(flags.sum()),
        "num_mislabeled": int(truth.sum()),
    }


def versions() -> dict:
    """Versions of the libraries and the machine the numbers came from."""
    import jaxlib
    import matplotlib
    import optax
    import sklearn

    return {
        "diva_jax": diva_jax.__version__, "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__, "scikit-learn": sklearn.__version__,
        "optax": optax.__version__, "matplotlib": matplotlib.__version__,
        "python": sys.version.split()[0], "platform": platform.platform(),
        "device": str(jax.devices()[0]), "x64": bool(jax.config.jax_enable_x64),
    }


def mean_std(values) -> dict:
    """Mean, sample standard deviation, min and max of a list of numbers."""
    values = np.asarray(values, np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(values.mean()), "std": std, "min": float(values.min()),
            "max": float(values.max())}


def parser(name: str, description: str, *, seeds: int = 5) -> argparse.ArgumentParser:
    """The flags every experiment takes: ``--features``, ``--seeds``, ``--out``."""
    p = argparse.ArgumentParser(prog=f"python -m experiments.{name}",
                                description=description)
    p.add_argument("--features", metavar="FILE", default=None,
                   help="embedding file (.npz with 'features', 'labels', optional "
                   "'split'); default: the embedded scikit-learn digits")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(seeds)),
                   metavar="SEED", help=f"seeds to run (default: 0..{seeds - 1})")
    p.add_argument("--out", metavar="DIR", default=str(RESULTS / name),
                   help=f"output folder (default: experiments/results/{name}/)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return p


def setup_logging(quiet: bool = False) -> None:
    """Progress to stderr at INFO (WARNING with ``quiet``)."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def write_json(out: str | Path, name: str, payload: dict) -> Path:
    """Writes ``<out>/<name>.json`` with the versions added, atomically."""
    path = atomic_write_json(Path(out) / f"{name}.json",
                             {**payload, "versions": versions()})
    logger.info("wrote %s", path)
    return path


def write_text(out: str | Path, filename: str, text: str) -> Path:
    """Writes a text file (e.g. a markdown table) atomically."""
    return atomic_write_text(Path(out) / filename, text)


def save_figure(fig, out: str | Path, filename: str) -> Path:
    """Renders a matplotlib figure to PNG and writes it atomically."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    path = atomic_write_bytes(Path(out) / filename, buffer.getvalue())
    logger.info("wrote %s", path)
    return path


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
