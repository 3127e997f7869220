"""Label-noise injection with a seed, for detection and reweighting experiments."""

from __future__ import annotations

import numpy as np


def flip_labels(
    labels, rate: float, *, num_classes: int | None = None, mode: str = "uniform",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Flips a fraction ``rate`` of the labels to a different class.

    Exactly ``round(rate * n)`` samples, chosen uniformly without replacement, get a
    wrong label; every flipped label differs from the original.

    Args:
      labels: (n,) int labels in [0, num_classes).
      rate: fraction of samples to flip, in [0, 1].
      num_classes: K; ``labels.max() + 1`` when None.
      mode: ``"uniform"`` (a wrong class drawn uniformly) or ``"pair"`` (class c
        always goes to one fixed other class, ``(c + 1) % K``).
      seed: seed of the choice of samples and of the new classes.

    Returns:
      ``(noisy_labels, is_flipped)``: (n,) int labels and an (n,) bool mask.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D int array, got {labels.dtype} "
                         f"of shape {labels.shape}.")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}.")
    K = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if K < 2 or labels.min() < 0 or labels.max() >= K:
        raise ValueError(f"labels must lie in [0, num_classes) with num_classes >= 2;"
                         f" got range [{labels.min()}, {labels.max()}] and K={K}.")
    rng = np.random.default_rng(seed)
    n = len(labels)
    flipped = np.zeros(n, bool)
    flipped[rng.choice(n, size=int(round(rate * n)), replace=False)] = True
    noisy = labels.copy()
    if mode == "uniform":
        shift = rng.integers(1, K, size=int(flipped.sum()))
    elif mode == "pair":
        shift = np.ones(int(flipped.sum()), labels.dtype)
    else:
        raise ValueError(f"mode must be 'uniform' or 'pair', got {mode!r}.")
    noisy[flipped] = (labels[flipped] + shift) % K
    return noisy.astype(labels.dtype), flipped
