"""Augmentation probabilities from DIVA Reweight on the union of transformed copies.

With transforms ``t_0 = identity, t_1, ..., t_T`` the augmented dataset is
``D_aug = D_t0 u D_t1 u ... u D_tT``, each copy keeping its label. Reweighting
``D_aug`` and summing the weights per copy gives the probability of each
transform (paper sec. 4, data augmentation):

    p_k = sum_{i in D_tk} alpha_i / sum_i alpha_i

A transform that changes what the label means (a vertical flip turns a 6 into
a 9) gets copies whose derivative is positive, and so a small ``p_k``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from jaxtyping import ArrayLike

from diva_jax.curation._reweight import reweight
from diva_jax.data import random_fourier_features

FLIPS = ("identity", "horizontal_flip", "vertical_flip")
LEARNING_RATE = 1.0


def _stack_copies(features_by_transform):
    """(T + 1, N, d) from a list of (N, d) arrays or a 3-D array."""
    if isinstance(features_by_transform, (list, tuple)):
        shapes = {np.shape(z) for z in features_by_transform}
        if len(shapes) != 1:
            raise ValueError(f"features_by_transform must hold arrays of one shape "
                             f"(N, d), one per transform; got shapes {sorted(shapes)}.")
        features_by_transform = np.stack([np.asarray(z) for z in features_by_transform])
    copies = np.asarray(features_by_transform)
    if copies.ndim != 3 or copies.shape[0] < 2:
        raise ValueError(f"features_by_transform must be (T + 1, N, d) with the "
                         f"identity first and T >= 1 transforms; got shape "
                         f"{copies.shape}.")
    return copies


def _names(names, count):
    if names is None:
        return ["identity"] + [f"transform_{k}" for k in range(1, count)]
    names = list(names)
    if len(names) != count or len(set(names)) != count:
        raise ValueError(f"names must be {count} distinct names, one per copy "
                         f"(identity first); got {names!r}.")
    return names


def augmentation_probabilities(
    features_by_transform, labels: ArrayLike, *, names: Sequence[str] | None = None,
    score: str = "identity", return_weights: bool = False, **reweight_options,
):
    """The probability of each transform, from DIVA Reweight on the union.

    Args:
      features_by_transform: (T + 1, N, d) array, or a list of T + 1 (N, d)
        arrays: the features of each transformed copy of the same N samples,
        identity first.
      labels: (N,) int labels (each copy keeps its sample's label).
      names: T + 1 names (default ``identity``, ``transform_1``, ...).
      score: which copies the LOO loss scores: ``"identity"`` (default: the
        untransformed samples, the distribution the model is tested on) or
        ``"all"`` (every copy, as a plain reweight of the union).
      return_weights: also return the (T + 1, N) weights.
      **reweight_options: passed to :func:`reweight` (``lam``, ``steps``,
        ``learning_rate`` (default ``LEARNING_RATE``: copies of one sample
        cannot be held out apart, so it is not chosen automatically),
        ``optimizer``, ``normalize``, ``loss``, ...).

    Returns:
      A dict ``name -> p_k`` (the shares sum to 1), and with ``return_weights``
      also the (T + 1, N) weights.
    """
    copies = _stack_copies(features_by_transform)
    count, n, d = copies.shape
    names = _names(names, count)
    labels = np.asarray(labels)
    if labels.shape[:1] != (n,):
        raise ValueError(f"labels must have one entry per sample, N={n}; got shape "
                         f"{labels.shape}.")
    if score not in ("identity", "all"):
        raise ValueError(f"score must be 'identity' or 'all'; got {score!r}.")

    mask = np.zeros((count, n), copies.dtype)
    mask[0 if score == "identity" else slice(None)] = 1
    Y = np.concatenate([labels] * count)
    reweight_options.setdefault("learning_rate", LEARNING_RATE)
    alpha = reweight(copies.reshape(count * n, d), Y, mask=mask.reshape(-1),
                     **reweight_options)
    weights = np.asarray(alpha).reshape(count, n)
    total = weights.sum()
    shares = weights.sum(1) / total if total > 0 else np.full(count, 1.0 / count)
    probabilities = {name: float(p) for name, p in zip(names, shares, strict=True)}
    return (probabilities, weights) if return_weights else probabilities


def flip_images(images: ArrayLike, transform: str) -> np.ndarray:
    """``images`` (N, H, W) under ``"identity"``, ``"horizontal_flip"`` (mirror
    left-right) or ``"vertical_flip"`` (upside down)."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W); got shape {images.shape}.")
    if transform == "identity":
        return images
    if transform == "horizontal_flip":
        return images[:, :, ::-1]
    if transform == "vertical_flip":
        return images[:, ::-1, :]
    raise ValueError(f"transform must be one of {FLIPS}; got {transform!r}.")


def flipped_features(
    images: ArrayLike, *, transforms: Sequence[str] = FLIPS, features: str = "rff",
    num_features: int = 1024, seed: int = 0,
) -> np.ndarray:
    """Features of flipped copies of small grey images, all through one map.

    Every copy goes through the same feature map: raw pixels, or one draw of
    :func:`diva_jax.data.random_fourier_features` over the stacked copies (the
    median-heuristic bandwidth is measured on the union). This map is not the
    one :func:`diva_jax.data.load_digits` uses on the unflipped images, so pass
    the training and test images together and split the result.

    Args:
      images: (N, H, W) images, e.g. ``load_digits().images_train``.
      transforms: names from ``FLIPS``, identity first.
      features: ``"rff"`` or ``"pixels"``.
      num_features: D for ``"rff"``.
      seed: seed of the random features.

    Returns:
      (T + 1, N, D) float32 features, in the order of ``transforms``.
    """
    if features not in ("rff", "pixels"):
        raise ValueError(f"features must be 'rff' or 'pixels'; got {features!r}.")
    if not transforms or transforms[0] != "identity":
        raise ValueError(f"transforms must start with 'identity'; got {transforms!r}.")
    copies = np.stack([flip_images(images, t) for t in transforms])
    count, n = copies.shape[:2]
    pixels = copies.reshape(count * n, -1)
    if features == "rff":
        return random_fourier_features(pixels, num_features=num_features,
                                       seed=seed).reshape(count, n, -1)
    return pixels.astype(np.float32).reshape(count, n, -1)
