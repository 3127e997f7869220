"""The dataset-optimisation commands, run in-process on small digits problems."""

import csv
import json

import numpy as np
import pytest

from diva_jax import data
from diva_jax.cli import main

PIXELS = ["--digits-features", "pixels"]


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _report(path):
    return json.loads((path / "report.json").read_text())


def test_curate_writes_consistent_outputs(tmp_path, capsys):
    out = tmp_path / "curate"
    code = main(["curate", *PIXELS, "--noise", "0.2", "--steps", "1", "--out",
                 str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ROC-AUC" in printed and "diva_reweight" in printed

    for name in ("curate.npz", "curate.csv", "report.json", "scores.png",
                 "weights.png", "gallery.png"):
        assert (out / name).stat().st_size > 0
    rows = _csv(out / "curate.csv")
    with np.load(out / "curate.npz") as f:
        arrays = {k: f[k] for k in f.files}
    assert list(rows[0]) == ["id", "label", "score", "flag", "weight", "flipped"]
    assert len(rows) == len(arrays["id"]) == 1200
    np.testing.assert_allclose([float(r["score"]) for r in rows], arrays["score"],
                               rtol=1e-6)
    np.testing.assert_array_equal([r["flag"] == "1" for r in rows], arrays["flag"])
    np.testing.assert_allclose([float(r["weight"]) for r in rows], arrays["weight"],
                               rtol=1e-6)
    assert np.all(arrays["weight"] >= 0)

    report = _report(out)
    assert report["command"] == "curate" and report["config"]["noise"] == 0.2
    assert report["detection"]["num_mislabeled"] == int(arrays["flipped"].sum()) == 240
    assert report["detection"]["num_flagged"] == int(arrays["flag"].sum())
    assert report["detection"]["roc_auc"] > 0.9
    errors = report["test_error"]
    assert set(errors) == {"original", "diva_reweight", "drop_flagged"}
    assert all(0 <= e < 0.5 for e in errors.values())


def test_detect_on_a_features_file_with_a_test_split(tmp_path, capsys):
    split = data.load_digits(features="pixels", seed=1)
    Z = np.concatenate([split.Z_train, split.Z_test])
    y = np.concatenate([split.y_train, split.y_test])
    ids = np.arange(len(y)) + 1000
    part = np.r_[np.zeros(len(split.y_train)), np.ones(len(split.y_test))]
    path = data.save_embeddings(tmp_path / "emb.npz", Z, y, ids=ids,
                                split=part.astype(np.int8))
    out = tmp_path / "detect"
    assert main(["detect", "--features", str(path), "--noise", "0.1", "--top", "3",
                 "--out", str(out)]) == 0
    assert "most detrimental" in capsys.readouterr().out
    rows = _csv(out / "detect.csv")
    assert len(rows) == len(split.y_train)
    assert int(rows[0]["id"]) >= 1000
    flags = np.array([r["flag"] == "1" for r in rows])
    weights = np.array([float(r["weight"]) for r in rows])
    np.testing.assert_array_equal(weights, (~flags).astype(float))
    assert _report(out)["num_flagged"] == flags.sum()


def test_reweight_command(tmp_path, capsys):
    out = tmp_path / "rw"
    assert main(["reweight", *PIXELS, "--noise", "0.2", "--steps", "2", "--out",
                 str(out)]) == 0
    assert "mean weight" in capsys.readouterr().out
    report = _report(out)
    assert len(report["objective"]) == 3
    with np.load(out / "reweight.npz") as f:
        np.testing.assert_array_equal(f["flag"], f["weight"] == 0)
        np.testing.assert_allclose(f["weights_diva_reweight"], f["weight"])
    assert (out / "weights.png").exists()


def test_extend_command_from_a_split_of_the_training_set(tmp_path, capsys):
    out = tmp_path / "ext"
    assert main(["extend", *PIXELS, "--noise", "0.2", "--core-size", "100", "-k",
                 "20", "--max-rounds", "3", "--uniform", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "uniform selection" in printed and "whole pool" in printed
    report = _report(out)
    assert report["num_core"] == 100 and report["num_pool"] == 1100
    assert report["rounds"] == 3 and len(report["test_error"]) == 4
    assert len(report["uniform_test_error"]) == 4
    with np.load(out / "extend.npz") as f:
        order, selected_at, flag = f["order"], f["selected_at"], f["flag"]
    assert len(order) == report["num_added"] <= 60
    np.testing.assert_array_equal(selected_at[order], np.arange(len(order)))
    assert flag.sum() == len(order)
    assert (out / "extend.png").exists()


def test_extend_command_with_a_pool_file(tmp_path, capsys):
    split = data.load_digits(features="pixels", seed=2)
    pool = data.save_embeddings(tmp_path / "pool.npz", split.Z_test[:150],
                                split.y_test[:150])
    core = data.save_embeddings(tmp_path / "core.npz", split.Z_train[:80],
                                split.y_train[:80])
    assert main(["extend", "--features", str(core), "--pool", str(pool), "-k", "5",
                 "--max-rounds", "2", "--out", str(tmp_path / "e")]) == 0
    report = _report(tmp_path / "e")
    assert report["num_pool"] == 150 and report["test_error"] is None


def test_augment_command_on_digits(tmp_path, capsys):
    out = tmp_path / "aug"
    assert main(["augment", *PIXELS, "--steps", "1", "--out", str(out)]) == 0
    report = _report(out)
    p = report["probabilities"]
    assert set(p) == {"identity", "horizontal_flip", "vertical_flip"}
    assert sum(p.values()) == pytest.approx(1.0)
    rows = _csv(out / "augment.csv")
    assert len(rows) == 3 * 1200
    assert set(report["test_error"]) == {"identity_only", "union_uniform",
                                         "union_reweighted"}
    assert (out / "augment.png").exists()


def test_errors_are_reported_with_exit_code_2(tmp_path, capsys):
    assert main(["extend", *PIXELS, "--core-size", "0"]) == 2
    assert "--core-size" in capsys.readouterr().err
    path = data.save_embeddings(tmp_path / "e.npz", np.zeros((4, 2)), np.arange(4))
    assert main(["augment", "--features", str(path)]) == 2
    assert "--copies" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["detect", "reweight", "extend", "augment",
                                     "curate"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "--out" in capsys.readouterr().out
