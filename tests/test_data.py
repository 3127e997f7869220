"""The embedded digits, label noise, embedding files and atomic writes."""

import json
import os

import numpy as np
import pytest

from diva_jax import _io, data


def test_digits_split_is_stratified_and_seeded():
    split = data.load_digits(features="pixels", seed=3)
    assert split.Z_train.shape == (1200, 64) and split.Z_test.shape == (597, 64)
    assert split.num_classes == 10
    np.testing.assert_array_equal(np.bincount(split.y_train) > 100, True)
    again = data.load_digits(features="pixels", seed=3)
    np.testing.assert_array_equal(split.y_train, again.y_train)
    np.testing.assert_allclose(split.Z_train, split.images_train.reshape(1200, 64))


def test_random_fourier_features_approximate_the_gaussian_kernel():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 5))
    z = data.random_fourier_features(x, num_features=20000, bandwidth=2.0, seed=1)
    dist2 = np.sum((x[:, None] - x[None]) ** 2, -1)
    np.testing.assert_allclose(z @ z.T, np.exp(-dist2 / 8.0), atol=0.03)


@pytest.mark.parametrize("mode", ["uniform", "pair"])
def test_flip_labels_flips_exactly_the_rate(mode):
    labels = np.repeat(np.arange(5), 40)
    noisy, flipped = data.flip_labels(labels, 0.2, mode=mode, seed=1)
    assert flipped.sum() == 40
    assert np.all(noisy[flipped] != labels[flipped])
    np.testing.assert_array_equal(noisy[~flipped], labels[~flipped])
    if mode == "pair":
        np.testing.assert_array_equal(noisy[flipped], (labels[flipped] + 1) % 5)
    assert noisy.min() >= 0 and noisy.max() < 5


def test_flip_labels_rejects_bad_input():
    with pytest.raises(ValueError, match="rate must be in"):
        data.flip_labels(np.arange(4), 1.5)
    with pytest.raises(ValueError, match="mode must be"):
        data.flip_labels(np.arange(4), 0.5, mode="swap")
    with pytest.raises(ValueError, match="labels must be a 1-D int array"):
        data.flip_labels(np.ones(4), 0.5)


def test_embeddings_round_trip_and_quantised_format(tmp_path):
    feats, labels = np.random.default_rng(0).random((6, 3)), np.arange(6) % 2
    path = data.save_embeddings(tmp_path / "e.npz", feats, labels, ids=np.arange(6))
    loaded = data.load_embeddings(path)
    np.testing.assert_allclose(loaded["features"], feats.astype(np.float32))
    np.testing.assert_array_equal(loaded["ids"], np.arange(6))
    codes = np.arange(12, dtype=np.uint8).reshape(6, 2)
    np.savez(tmp_path / "q.npz", features_uint8=codes, scale=np.float32(0.5),
             labels=labels)
    q = data.load_embeddings(tmp_path / "q.npz")
    np.testing.assert_allclose(q["features"], codes * 0.5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_embeddings(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", labels=labels)
    with pytest.raises(ValueError, match="needs a 'features' array"):
        data.load_embeddings(tmp_path / "bad.npz")


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    _io.atomic_write_json(path, {"a": np.arange(2)})
    assert json.loads(path.read_text()) == {"a": [0, 1]}

    def broken_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        _io.atomic_write_json(path, {"a": 5})
    assert json.loads(path.read_text()) == {"a": [0, 1]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
