"""Smoke runs of every experiment script at its smallest settings: each writes
its JSON (with config, seeds, versions and results) and PNG into a fresh folder."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments import (  # noqa: E402
    _common,
    augmentation,
    detection,
    detection_vs_cleanlab,
    extend,
    gallery,
    multimodal,
    reweight_table,
)

COMMON_KEYS = {"config", "seeds", "versions"}


def tiny_features(tmp_path, n=150, d=16, K=3, seed=0, **extra):
    """An embedding file of three Gaussian clusters, with a train/test split."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    Z = 3.0 * np.eye(K, d)[y] + rng.standard_normal((n, d))
    path = tmp_path / "tiny.npz"
    np.savez(path, features=Z.astype(np.float32), labels=y,
             split=(np.arange(n) % 5 == 0).astype(np.int8), **extra)
    return path


def read(out: Path, name: str) -> dict:
    result = json.loads((out / f"{name}.json").read_text())
    assert COMMON_KEYS <= set(result)
    assert {"jax", "numpy", "diva_jax"} <= set(result["versions"])
    return result


def test_detection(tmp_path):
    features = tiny_features(tmp_path)
    detection.main(["--features", str(features), "--seeds", "0", "--out",
                    str(tmp_path), "-q"])
    result = read(tmp_path, "detection")
    assert {"per_seed", "summary", "histogram_seed0"} <= set(result)
    for rule in ("paper_rule", "detect_default"):
        assert 0.0 <= result["summary"][rule]["roc_auc"]["mean"] <= 1.0
    assert (tmp_path / "detection_histogram.png").stat().st_size > 0


def test_detection_vs_cleanlab(tmp_path):
    features = tiny_features(tmp_path)
    detection_vs_cleanlab.main(["--features", str(features), "--seeds", "0",
                                "--noise-modes", "pair", "--candidates",
                                "--out", str(tmp_path), "-q"])
    result = read(tmp_path, "detection_vs_cleanlab")
    summary = result["results"]["tiny"]["summary"]["pair"]
    assert set(detection_vs_cleanlab.DETECTORS) <= set(summary)
    assert summary["speedup_vs_cleanlab"] > 0
    assert "self_confidence + confident" in (
        result["results"]["tiny"]["candidates_summary"]["pair"])
    table = (tmp_path / "detection_vs_cleanlab.md").read_text()
    assert table.count("\n") == 2 + 3
    assert (tmp_path / "detection_candidates.md").is_file()


def test_reweight_table(tmp_path):
    features = tiny_features(tmp_path)
    reweight_table.main(["--features", str(features), "--seeds", "0",
                         "--noise", "0.2", "--out", str(tmp_path), "-q"])
    result = read(tmp_path, "reweight_table")
    summary = result["summary"]["0.2"]
    assert set(reweight_table.METHODS) <= set(summary)
    assert summary["paired"]["num_seeds"] == 1
    assert (tmp_path / "reweight_table.md").is_file()


@pytest.mark.parametrize("reselect", [False, True])
def test_extend(tmp_path, reselect):
    features = tiny_features(tmp_path)
    extend.main(["--features", str(features), "--seeds", "0", "--per-class", "3",
                 "--k", "20", "--uniform-repeats", "1", "--out", str(tmp_path),
                 "-q"] + ["--reselect-lam"] * reselect)
    result = read(tmp_path, "extend")
    row = result["per_seed"][0]
    assert len(row["diva"]) == len(row["uniform"]) == len(row["budgets"])
    assert len(row["lams"]) == len(row["budgets"])
    assert (len(set(row["lams"])) > 1) == reselect
    assert row["budgets"][0] == 0 and row["num_core"] == 9
    assert "best_diva_subset_beats_whole_pool" in result["summary"]
    assert (tmp_path / "extend.png").is_file()


def test_split_core_takes_per_class():
    y = np.repeat(np.arange(4), 10)
    core, pool = extend.split_core(y, 3, seed=0)
    np.testing.assert_array_equal(np.bincount(y[core]), [3, 3, 3, 3])
    assert len(np.intersect1d(core, pool)) == 0 and len(core) + len(pool) == 40


def test_augmentation(tmp_path):
    rng = np.random.default_rng(1)
    flipped = {"features_horizontal_flip": rng.standard_normal((150, 16)),
               "features_vertical_flip": rng.standard_normal((150, 16))}
    features = tiny_features(tmp_path, **flipped)
    augmentation.main(["--features", str(features), "--seeds", "0", "--out",
                       str(tmp_path), "-q"])
    result = read(tmp_path, "augmentation")
    probs = result["summary"]["probabilities"]
    assert set(probs) == {"identity", "horizontal_flip", "vertical_flip"}
    assert sum(p["mean"] for p in probs.values()) == pytest.approx(1.0)


def test_augmentation_needs_transformed_features(tmp_path):
    features = tiny_features(tmp_path)
    with pytest.raises(ValueError, match="features_<transform>"):
        augmentation.main(["--features", str(features), "--seeds", "0", "--out",
                           str(tmp_path), "-q"])


def test_multimodal(tmp_path):
    domain = (np.arange(150) // 3) % 3
    features = tiny_features(tmp_path, domain=domain,
                             domain_names=np.array(["photo", "art", "sketch"]))
    multimodal.main(["--features", str(features), "--seeds", "0", "--per-class",
                     "2", "--k", "20", "--uniform-repeats", "1", "--out",
                     str(tmp_path), "-q"])
    result = read(tmp_path, "multimodal")
    row = result["per_seed"][0]
    assert row["num_core"] == 6 and row["num_pool"] == int(np.sum(domain != 0))
    assert set(row["picked_by_domain"]) == {"art", "sketch"}
    assert len(row["lams"]) >= len(row["budgets"])
    for key in ("best_diva", "final_diva"):
        assert f"{key}_beats_whole_pool" in result["summary"]
        assert f"{key}_beats_uniform" in result["summary"]


def test_multimodal_skips_without_shared_data(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(_common, "PACS", tmp_path / "absent.npz")
    assert multimodal.main(["--out", str(tmp_path), "-q"]) is None
    assert not (tmp_path / "multimodal.json").exists()


def test_gallery(tmp_path):
    features = tiny_features(tmp_path, paths=np.array([f"img{i}.png"
                                                       for i in range(150)]))
    gallery.main(["--features", str(features), "--top", "4", "--noise", "0.2",
                  "--out", str(tmp_path), "-q"])
    result = read(tmp_path, "gallery")
    assert len(result["up_weighted"]) == len(result["down_weighted"]) == 4
    assert result["up_weighted"][0]["name"].startswith("img")
    assert "mean_weight_flipped" in result["summary"]
    assert (tmp_path / "gallery.png").is_file()
