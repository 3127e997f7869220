"""Per-sample losses ``l(prediction, target)`` of one sample's K outputs."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Loss = Callable[[jax.Array, jax.Array], jax.Array]


def squared(prediction, target):
    """``||f - y||^2``: the squared loss of the ridge objective (paper eq. 3)."""
    return jnp.sum((prediction - target) ** 2)


def cross_entropy(prediction, target):
    """``-sum_k y_k log softmax(f)_k``: the outputs read as logits."""
    return -jnp.sum(target * jax.nn.log_softmax(prediction))


LOSSES = {"squared": squared, "cross_entropy": cross_entropy}


def resolve_loss(loss) -> Loss:
    """Returns the per-sample loss for a name in ``LOSSES`` or a callable."""
    if callable(loss):
        return loss
    if loss in LOSSES:
        return LOSSES[loss]
    raise ValueError(f"loss must be one of {sorted(LOSSES)} or a callable "
                     f"(prediction (K,), target (K,)) -> scalar; got {loss!r}.")


def mean_loss(loss: Loss, F, Y, mask=None):
    """``sum_i m_i l(f_i, y_i) / sum_i m_i`` over rows of ``F`` and ``Y``."""
    per_sample = jax.vmap(loss)(F, Y)
    if mask is None:
        return jnp.mean(per_sample)
    return jnp.sum(mask * per_sample) / jnp.sum(mask)
