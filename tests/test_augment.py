"""Augmentation probabilities: shares of DIVA Reweight weights on each copy."""

import numpy as np
import pytest

from diva_jax.curation import (
    augmentation_probabilities, flip_images, flipped_features, reweight,
)
from diva_jax.curation._augment import LEARNING_RATE
from diva_jax.data import random_fourier_features

K = 4


def _copies(seed=0, n=80, d=8):
    """Identity, a label-preserving jitter, and a transform that maps each
    sample onto another class's region (so its label becomes wrong)."""
    rng = np.random.default_rng(seed)
    centers = 3.0 * rng.standard_normal((K, d))
    labels = rng.integers(0, K, n)
    identity = centers[labels] + rng.standard_normal((n, d))
    jitter = identity + 0.2 * rng.standard_normal((n, d))
    swap = centers[(labels + 1) % K] + rng.standard_normal((n, d))
    return np.stack([identity, jitter, swap]), labels


def test_probabilities_are_weight_shares_and_sum_to_one():
    copies, labels = _copies()
    probabilities, weights = augmentation_probabilities(
        copies, labels, names=["id", "jitter", "swap"], lam=1.0, steps=2,
        return_weights=True)
    assert list(probabilities) == ["id", "jitter", "swap"]
    np.testing.assert_allclose(sum(probabilities.values()), 1.0, rtol=1e-12)

    # Oracle: reweight called directly on the union, scoring the identity copy.
    count, n, d = copies.shape
    mask = np.r_[np.ones(n), np.zeros((count - 1) * n)]
    alpha = np.asarray(reweight(copies.reshape(-1, d), np.tile(labels, count),
                                lam=1.0, steps=2, mask=mask,
                                learning_rate=LEARNING_RATE)).reshape(count, n)
    np.testing.assert_allclose(weights, alpha, rtol=1e-12)
    np.testing.assert_allclose(list(probabilities.values()),
                               alpha.sum(1) / alpha.sum(), rtol=1e-12)


@pytest.mark.parametrize("score", ["identity", "all"])
def test_label_destroying_transform_is_penalised(score):
    copies, labels = _copies(seed=1)
    p = augmentation_probabilities(copies, labels, names=["id", "jitter", "swap"],
                                   score=score)
    assert p["swap"] < 1 / 3 < min(p["id"], p["jitter"])
    if score == "identity":
        assert p["swap"] < 0.1 * p["jitter"]


def test_list_input_and_default_names():
    copies, labels = _copies(seed=2)
    p = augmentation_probabilities(list(copies), labels, lam=1.0, steps=1)
    assert list(p) == ["identity", "transform_1", "transform_2"]
    np.testing.assert_allclose(sum(p.values()), 1.0, rtol=1e-12)


def test_flip_images_match_numpy():
    images = np.random.default_rng(0).random((5, 8, 8))
    np.testing.assert_array_equal(flip_images(images, "horizontal_flip"),
                                  np.stack([np.fliplr(x) for x in images]))
    np.testing.assert_array_equal(flip_images(images, "vertical_flip"),
                                  np.stack([np.flipud(x) for x in images]))
    np.testing.assert_array_equal(flip_images(images, "identity"), images)


def test_flipped_features_share_one_map():
    """Oracle: a flipped copy of image 0 is image 1, so their features agree."""
    rng = np.random.default_rng(1)
    a = rng.random((8, 8))
    images = np.stack([a, a[:, ::-1], a[::-1, :], rng.random((8, 8))])
    copies = flipped_features(images, seed=3, num_features=64)
    assert copies.shape == (3, 4, 64)
    np.testing.assert_allclose(copies[1, 0], copies[0, 1], rtol=1e-6)
    np.testing.assert_allclose(copies[2, 0], copies[0, 2], rtol=1e-6)

    pixels = np.concatenate([images, images[:, :, ::-1], images[:, ::-1]])
    expected = random_fourier_features(pixels.reshape(12, -1), num_features=64,
                                       seed=3).reshape(3, 4, 64)
    np.testing.assert_allclose(copies, expected, rtol=1e-6)
    raw = flipped_features(images, features="pixels")
    np.testing.assert_array_equal(raw[1, 0], a[:, ::-1].reshape(-1).astype(np.float32))


def test_bad_inputs():
    copies, labels = _copies()
    with pytest.raises(ValueError, match="features_by_transform"):
        augmentation_probabilities(copies[:1], labels)
    with pytest.raises(ValueError, match="features_by_transform"):
        augmentation_probabilities([copies[0], copies[1][:5]], labels)
    with pytest.raises(ValueError, match="names"):
        augmentation_probabilities(copies, labels, names=["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        augmentation_probabilities(copies, labels[:-1])
    with pytest.raises(ValueError, match="score"):
        augmentation_probabilities(copies, labels, score="some")
    with pytest.raises(ValueError, match="identity"):
        flipped_features(np.zeros((2, 8, 8)), transforms=("vertical_flip",))
    with pytest.raises(ValueError, match="transform"):
        flip_images(np.zeros((2, 8, 8)), "rotate")
