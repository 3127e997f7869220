"""Fig. 5 (left): augmentation probabilities learned by DIVA Reweight.

Each training digit is present three times: as is, flipped left-right and
flipped upside down, every copy with its label and all through one random
Fourier feature map. ``diva_jax.augmentation_probabilities`` reweights the
union (the LOO loss scores the untransformed copies) and reports the share of
weight on each transform. Digits are a number task: a flip turns a 2 into
something like a 5 and a 6 into a 9, and the paper found both flips penalised
on SVHN. We also report the test error (untransformed test images) of ridge
heads trained on the originals only, on the union with equal weights and on
the reweighted union.

    python -m experiments.augmentation                    # digits, 5 seeds
    python -m experiments.augmentation --features FILE    # needs features_<name>

A features file must hold ``features`` (the identity copy), ``labels`` and one
``features_horizontal_flip``, ``features_vertical_flip`` (or any
``features_<transform>``) array per transform, of the same shape.
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from diva_jax import data
from diva_jax.curation import (
    augmentation_probabilities,
    flipped_features,
    ridge_test_error,
)
from experiments import _common

logger = logging.getLogger(__name__)
NAME = "augmentation"
FLIPS = ("identity", "horizontal_flip", "vertical_flip")


def digits_copies(seed: int):
    """``(names, train copies (T+1, n, D), y_train, test features, y_test)``."""
    split = data.load_digits(seed=seed)
    images = np.concatenate([split.images_train, split.images_test])
    copies = flipped_features(images, transforms=FLIPS, seed=seed)
    n = len(split.y_train)
    return FLIPS, copies[:, :n], split.y_train, copies[0, n:], split.y_test


def file_copies(path: str, seed: int, test_fraction: float = 0.3):
    """The same from a features file with ``features_<transform>`` arrays."""
    from sklearn.model_selection import train_test_split

    emb = data.load_embeddings(path)
    extra = sorted(k for k in emb if k.startswith("features_"))
    if not extra:
        raise ValueError(f"{path}: augmentation needs one 'features_<transform>' "
                         f"array per transform besides 'features'; found "
                         f"{sorted(emb)}.")
    names = ("identity",) + tuple(k[len("features_"):] for k in extra)
    copies = np.stack([emb["features"]] + [emb[k] for k in extra]).astype(np.float32)
    y = emb["labels"]
    if "split" in emb:
        train = emb["split"] == 0
    else:
        idx, _ = train_test_split(np.arange(len(y)), test_size=test_fraction,
                                  stratify=y, random_state=seed)
        train = np.isin(np.arange(len(y)), idx)
    return names, copies[:, train], y[train], copies[0, ~train], y[~train]


def run_seed(names, copies, y, Z_test, y_test, seed: int) -> dict:
    """Learned probabilities and the three test errors for one split."""
    probabilities, weights = augmentation_probabilities(
        copies, y, names=names, return_weights=True)
    count, n, _ = copies.shape
    union = copies.reshape(count * n, -1)
    y_union = np.tile(y, count)
    K = int(max(y.max(), y_test.max())) + 1
    errors = {
        "identity_only": ridge_test_error(copies[0], y, None, Z_test, y_test,
                                          num_classes=K),
        "union_equal_weights": ridge_test_error(union, y_union, None, Z_test,
                                                y_test, num_classes=K),
        "union_reweighted": ridge_test_error(union, y_union, weights.reshape(-1),
                                             Z_test, y_test, num_classes=K),
    }
    mean_weight = {name: float(w.mean()) for name, w in zip(names, weights,
                                                            strict=True)}
    return {"seed": seed, "probabilities": probabilities,
            "mean_weight": mean_weight, "test_error": errors}


def summarize(rows: list[dict]) -> dict:
    """Mean and spread of each probability and test error over seeds."""
    names = list(rows[0]["probabilities"])
    return {
        "probabilities": {k: _common.mean_std([r["probabilities"][k] for r in rows])
                          for k in names},
        "test_error": {k: _common.mean_std([r["test_error"][k] for r in rows])
                       for k in rows[0]["test_error"]},
    }


def plot(summary: dict, out) -> None:
    """Bars of the learned probability of each transform, equal share dashed."""
    plt = _common.pyplot()
    probs = summary["probabilities"]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.bar(range(len(probs)), [p["mean"] for p in probs.values()],
           yerr=[p["std"] for p in probs.values()], capsize=4,
           color=["tab:gray", "tab:orange", "tab:purple"][: len(probs)])
    ax.axhline(1.0 / len(probs), color="k", ls="--", lw=1, label="equal share")
    ax.set_xticks(range(len(probs)), list(probs))
    ax.set_ylabel("learned probability p_k")
    ax.legend()
    _common.save_figure(fig, out, "augmentation.png")


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    args = p.parse_args(argv)
    _common.setup_logging(args.quiet)

    rows = []
    for seed in tqdm(args.seeds, desc="seeds", disable=args.quiet):
        if args.features is None:
            inputs = digits_copies(seed)
        else:
            inputs = file_copies(args.features, seed)
        rows.append(run_seed(*inputs, seed))
        logger.info("seed %d: %s, test error %s", seed, rows[-1]["probabilities"],
                    rows[-1]["test_error"])
    summary = summarize(rows)
    config = {"dataset": "digits" if args.features is None else args.features,
              "transforms": list(rows[0]["probabilities"]),
              "features": "random Fourier features (1024) of the flipped images, "
              "one map for all copies" if args.features is None else "from file",
              "reweight": "augmentation_probabilities defaults (reweight defaults, "
              "LOO loss on the identity copies)",
              "test_error_lam": "select_lambda of each training set"}
    result = {"config": config, "seeds": args.seeds, "per_seed": rows,
              "summary": summary}
    _common.write_json(args.out, NAME, result)
    plot(summary, args.out)
    return result


if __name__ == "__main__":
    main()
