"""Fig. 2: the most up-weighted and down-weighted training images.

DIVA Reweight (``diva_jax.reweight``, LOO objective, one step with a fixed
``eta = 1`` (``--learning-rate``): the default held-out choice of ``eta`` may
leave every weight at 1 on clean data, and the order of the weights is that of
the derivative for any ``eta > 0``) runs on the digits' training split as
shipped (no labels flipped, like the paper's curated datasets; ``--noise``
flips some first). The ``--top`` samples with
the largest and the smallest weights are drawn with their label and weight.
With ``--features FILE`` there are no images: the JSON lists the samples
(with ``paths`` or ``ids`` when the file has them) and the plot shows the
distribution of the weights.

    python -m experiments.gallery                   # digits, seed 0
    python -m experiments.gallery --noise 0.1 --top 24
"""

from __future__ import annotations

import logging

import numpy as np

import diva_jax
from diva_jax import data
from experiments import _common

logger = logging.getLogger(__name__)
NAME = "gallery"


def extremes(derivative: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``top`` most up-weighted samples (most negative derivative)
    and the ``top`` most down-weighted (most positive). Ordering by the
    derivative rather than the weight breaks the ties among weights projected
    to 0."""
    order = np.argsort(derivative, kind="stable")
    return order[:top], order[::-1][:top]


def describe(indices, weights, derivative, y, flipped, names) -> list[dict]:
    """One record per sample: index, label, weight, derivative (and more)."""
    rows = []
    for i in indices:
        row = {"index": int(i), "label": int(y[i]), "weight": float(weights[i]),
               "derivative": float(derivative[i])}
        if flipped is not None:
            row["flipped"] = bool(flipped[i])
        if names is not None:
            row["name"] = str(names[i])
        rows.append(row)
    return rows


def plot_images(images, up, down, weights, y, flipped, out) -> None:
    """Two grids of 8x8 digits: up-weighted (left), down-weighted (right)."""
    plt = _common.pyplot()
    cols = 6
    rows = int(np.ceil(len(up) / cols))
    fig, axes = plt.subplots(rows, 2 * cols + 1, figsize=(13, 1.25 * rows + 0.5))
    axes = np.atleast_2d(axes)
    for ax in axes.ravel():
        ax.axis("off")
    for block, indices in ((0, up), (cols + 1, down)):
        for n, i in enumerate(indices):
            ax = axes[n // cols, block + n % cols]
            ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=1)
            mark = "*" if flipped is not None and flipped[i] else ""
            ax.set_title(f"{y[i]}{mark}  w={weights[i]:.2f}", fontsize=8)
    fig.text(0.25, 0.99, "most up-weighted", ha="center", va="top")
    fig.text(0.75, 0.99, "most down-weighted", ha="center", va="top")
    _common.save_figure(fig, out, "gallery.png")


def plot_weights(weights, out) -> None:
    """Histogram of the weights (for inputs without images)."""
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    ax.hist(weights, bins=60)
    ax.set_xlabel("DIVA Reweight weight alpha_i")
    ax.set_ylabel("samples")
    _common.save_figure(fig, out, "gallery.png")


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(NAME, __doc__.splitlines()[0], seeds=1)
    p.add_argument("--top", type=int, default=18, help="images per side")
    p.add_argument("--noise", type=float, default=0.0,
                   help="flip this fraction of the labels first (default: 0)")
    p.add_argument("--learning-rate", type=float, default=1.0,
                   help="eta of the reweight step (default: 1)")
    args = p.parse_args(argv)
    _common.setup_logging(args.quiet)

    seed = args.seeds[0]
    task = _common.load_task(args.features, seed)
    y, flipped = task.y_train, None
    if args.noise > 0:
        y, flipped = data.flip_labels(y, args.noise, num_classes=task.num_classes,
                                      seed=seed)
    result = diva_jax.reweight(task.Z_train, y, num_classes=task.num_classes,
                               learning_rate=args.learning_rate,
                               return_result=True)
    weights = np.asarray(result.weights)
    derivative = np.asarray(result.derivative)
    up, down = extremes(derivative, args.top)
    names = None
    if args.features:
        emb = data.load_embeddings(args.features)
        names = emb.get("paths", emb.get("ids"))
        if names is not None and "split" in emb:
            names = names[emb["split"] == 0]
    summary = {"weight": _common.mean_std(weights),
               "num_zero_weight": int(np.sum(weights == 0)), "lam": result.lam}
    if flipped is not None:
        summary["mean_weight_clean"] = float(weights[~flipped].mean())
        summary["mean_weight_flipped"] = float(weights[flipped].mean())
    out = {"config": {"dataset": task.name, "features": args.features,
                      "noise": args.noise, "top": args.top,
                      "reweight": f"diva_jax.reweight, one step, eta = "
                      f"{args.learning_rate}"},
           "seeds": [seed], "summary": summary,
           "up_weighted": describe(up, weights, derivative, y, flipped, names),
           "down_weighted": describe(down, weights, derivative, y, flipped, names)}
    _common.write_json(args.out, NAME, out)
    if task.images_train is not None:
        plot_images(task.images_train, up, down, weights, y, flipped, args.out)
    else:
        plot_weights(weights, args.out)
    return out


if __name__ == "__main__":
    main()
