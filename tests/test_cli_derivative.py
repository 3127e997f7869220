"""``diva derivative`` end to end on the embedded digits and on a features file."""

import json

import numpy as np

from diva_jax import data
from diva_jax.cli import main


def test_derivative_on_noisy_digits_finds_flipped_labels(tmp_path, capsys):
    assert main(["derivative", "--noise", "0.2", "--digits-features", "pixels",
                 "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "mislabeled detection: ROC-AUC" in printed
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["detection"]["roc_auc"] > 0.9
    saved = np.load(tmp_path / "derivative.npz")
    assert saved["derivative"].shape == (1200,)
    np.testing.assert_array_equal(saved["flags"], saved["derivative"] > 0)
    lines = (tmp_path / "derivative.csv").read_text().splitlines()
    assert lines[0] == "id,label,derivative,flag" and len(lines) == 1201


def test_derivative_on_features_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = data.save_embeddings(tmp_path / "f.npz", rng.random((50, 4)),
                                rng.integers(0, 3, 50), split=np.arange(50) % 5 == 0)
    assert main(["derivative", "--features", str(path), "--lam", "0.5"]) == 0
    assert "40 samples, d=4, lam=0.5" in capsys.readouterr().out


def test_bad_input_exits_with_a_message(tmp_path, capsys):
    assert main(["derivative", "--features", str(tmp_path / "none.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
