"""Embedding files: ``.npz`` with ``features`` (n, d), ``labels`` (n,) and extras."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from diva_jax._io import atomic_savez


def load_embeddings(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads an embedding file.

    Understands ``features`` (float) or ``features_uint8`` with a ``scale``
    (``features = features_uint8 * scale``, the quantised format of the bundled
    real feature sets). Every other array in the file is returned as is.

    Returns:
      A dict with ``features`` (n, d) float32, ``labels`` (n,) int64 and the
      file's other arrays (``ids``, ``split``, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"embedding file {str(path)!r} does not exist; make one with "
            "`diva features` or `diva_jax.data.save_embeddings`.")
    with np.load(path, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    if "features" not in data:
        if "features_uint8" not in data or "scale" not in data:
            raise ValueError(f"{path}: needs a 'features' array (or 'features_uint8' "
                             f"and 'scale'); found {sorted(data)}.")
        codes = data.pop("features_uint8")
        data["features"] = codes.astype(np.float32) * np.float32(data.pop("scale"))
    if "labels" not in data:
        raise ValueError(f"{path}: needs a 'labels' array; found {sorted(data)}.")
    features, labels = data["features"], data["labels"]
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(f"{path}: features must be (n, d) and labels (n,); got "
                         f"{features.shape} and {labels.shape}.")
    data["features"] = features.astype(np.float32, copy=False)
    data["labels"] = labels.astype(np.int64)
    return data


def save_embeddings(path: str | os.PathLike, features, labels, **extra) -> Path:
    """Writes an embedding file atomically (see :func:`load_embeddings`)."""
    features, labels = np.asarray(features), np.asarray(labels)
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(f"features must be (n, d) and labels (n,); got "
                         f"{features.shape} and {labels.shape}.")
    return atomic_savez(path, features=features, labels=labels, **extra)
