"""Input options shared by the commands: a features file or the embedded digits."""

from __future__ import annotations

import argparse
import logging
from typing import NamedTuple

import numpy as np

from diva_jax import data

logger = logging.getLogger(__name__)


class Dataset(NamedTuple):
    """Training features and labels, optional test split, and ids."""

    Z: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    Z_test: np.ndarray | None
    y_test: np.ndarray | None
    is_flipped: np.ndarray | None
    images: np.ndarray | None


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """``--features FILE`` or the digits default, with optional label noise."""
    group = parser.add_argument_group("input")
    group.add_argument("--features", metavar="FILE",
                       help="embedding file (.npz with 'features' (n, d) and "
                       "'labels' (n,); optional 'ids', and 'split' with 0 = train, "
                       "1 = test); default: the embedded scikit-learn digits")
    group.add_argument("--digits-features", choices=("rff", "pixels"), default="rff",
                       help="features of the embedded digits (default: rff, random "
                       "Fourier features of the pixels)")
    group.add_argument("--noise", type=float, default=0.0, metavar="RATE",
                       help="flip this fraction of training labels first, to "
                       "measure detection (default: 0)")
    group.add_argument("--noise-mode", choices=("uniform", "pair"), default="uniform",
                       help="uniform: a random wrong class; pair: class c -> c+1")
    group.add_argument("--seed", type=int, default=0,
                       help="seed of the split, the features and the noise")


def load_input(args: argparse.Namespace) -> Dataset:
    """Loads the dataset that the input arguments name, with noise if asked."""
    if args.features:
        emb = data.load_embeddings(args.features)
        Z, y = emb["features"], emb["labels"]
        ids = emb.get("ids", np.arange(len(y)))
        split = emb.get("split")
        train = np.ones(len(y), bool) if split is None else split == 0
        Z_test = Z[~train] if (~train).any() else None
        y_test = y[~train] if (~train).any() else None
        Z, y, ids, images = Z[train], y[train], ids[train], None
        logger.info("loaded %s: %d training samples, d=%d", args.features, *Z.shape)
    else:
        split = data.load_digits(features=args.digits_features, seed=args.seed)
        Z, y, Z_test, y_test = split.Z_train, split.y_train, split.Z_test, split.y_test
        ids, images = np.arange(len(y)), split.images_train
        logger.info("loaded digits: %d train, %d test, d=%d", len(y), len(y_test),
                    Z.shape[1])
    flipped = None
    if args.noise > 0:
        y, flipped = data.flip_labels(y, args.noise, mode=args.noise_mode,
                                      seed=args.seed)
    return Dataset(Z, y, ids, Z_test, y_test, flipped, images)
