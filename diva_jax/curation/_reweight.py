"""DIVA Reweight: a few projected gradient steps on the sample weights (sec. 3.4).

Starting from ``alpha = 1``, each step moves the weights against the dataset
derivative of the LOO loss (paper eq. 11) or of a validation loss (eq. 9) and
projects them back onto ``alpha >= 0`` (eq. 14):

    alpha <- max(0, alpha - eta * g / s),    s = ||g(alpha = 1)||_rms

The LOO loss is a mean over N samples, so its raw gradient shrinks like 1/N,
and its size also depends on how well the head fits. Dividing by the root mean
square of the first gradient makes ``eta`` the typical change of one weight in
the first step, the same on 100 samples or 100,000 and for any feature scale.
The scale ``s`` is then kept for the later steps: renormalising every step
would take full-size steps even where the gradient has become small.

Defaults, measured on the digits (random Fourier features, 20% uniform label
noise, 10 splits; chosen on a validation part of the training set, never on
the test split): one step with ``eta = 1``. Test error went from 2.70% to
2.06% on average (lower in 9 splits, equal in 1), as low as training on the
clean samples alone (2.08%). ``eta`` from 0.5 to 2 gave the same. A second
step raised it again (to about 3%): once the flipped samples are at
``alpha = 0``, the LOO loss, scored on the same noisy labels, pulls them back
(the overfitting of the LOO estimate that the paper warns of); a third step
partly undoes the second.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float

from diva_jax import _checks
from diva_jax._derivative import value_and_dataset_derivative
from diva_jax._lambda import select_lambda

DEFAULT_STEPS = 1
DEFAULT_LEARNING_RATE = 1.0
NORMALIZATIONS = ("rms", "max", "sum", "none")


class ReweightResult(NamedTuple):
    """What :func:`reweight` found.

    Attributes:
      weights: (N,) the optimised ``alpha >= 0``.
      objective: (steps + 1,) the loss at ``alpha = 1`` and after each step.
      derivative: (N,) the dataset derivative ``dL/dalpha`` at ``alpha = 1``
        (positive: the sample raises the loss).
      lam: the ridge strength used throughout.
    """

    weights: Float[Array, " N"]
    objective: np.ndarray
    derivative: Float[Array, " N"]
    lam: float


def gradient_scale(g: Float[Array, " N"], mask, how: str):
    """The factor that turns ``g = dL/dalpha`` into the step direction.

    ``"rms"``: ``1 / sqrt(mean g^2)``; ``"max"``: ``1 / max |g|``; ``"sum"``:
    the number of scored samples (the gradient of the summed loss, as written
    in the paper's eq. 11); ``"none"``: 1.
    """
    tiny = jnp.finfo(g.dtype).tiny
    if how == "rms":
        return 1.0 / jnp.maximum(jnp.sqrt(jnp.mean(g * g)), tiny)
    if how == "max":
        return 1.0 / jnp.maximum(jnp.max(jnp.abs(g)), tiny)
    if how == "sum":
        return g.shape[0] if mask is None else jnp.sum(jnp.asarray(mask, g.dtype))
    return 1.0


def _check_options(steps, normalize, optimizer):
    if not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an int >= 0 (the paper uses 1 to 3); got "
                         f"{steps!r}.")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}; got "
                         f"{normalize!r}.")
    if optimizer is not None and not isinstance(optimizer,
                                                optax.GradientTransformation):
        raise TypeError("optimizer must be an optax.GradientTransformation, e.g. "
                        f"optax.sgd(0.5); got {type(optimizer).__name__}.")


def reweight(
    features: ArrayLike, labels: ArrayLike, *, lam: float | None = None,
    steps: int = DEFAULT_STEPS, learning_rate: float = DEFAULT_LEARNING_RATE,
    optimizer: optax.GradientTransformation | None = None,
    validation: tuple[ArrayLike, ArrayLike] | None = None,
    mask: ArrayLike | None = None, loss="squared", normalize: str = "rms",
    num_classes: int | None = None, return_result: bool = False,
):
    """DIVA Reweight: sample weights that lower the LOO (or validation) loss.

    Takes ``steps`` projected steps from ``alpha = 1`` (paper eq. 14); the
    optimizer receives the dataset derivative times a scale fixed at
    ``alpha = 1`` by ``normalize`` (see :func:`gradient_scale`), and
    ``optax.projections.projection_non_negative`` keeps ``alpha >= 0``. More
    than about three steps overfit the LOO estimate (paper sec. 3.4).

    Features are used as given (no standardisation): the ridge head's ``lam``,
    chosen by LOO loss on ``alpha = 1`` when not given, already adapts to
    their scale.

    Args:
      features: (N, d) features ``Z``.
      labels: (N,) int labels or (N, K) targets ``Y``.
      lam: ridge strength; ``select_lambda(features, labels)`` when None.
      steps: number of projected gradient steps.
      learning_rate: ``eta`` of the default ``optax.sgd``: with
        ``normalize="rms"`` the typical change of one weight in the first
        step.
      optimizer: any optax ``GradientTransformation``; overrides
        ``learning_rate``.
      validation: optional ``(Z_val, Y_val)``: optimise the validation loss
        (paper Prop. 2) instead of the LOO loss (Prop. 3).
      mask: (N,) samples scored by the LOO loss; None for all.
      loss: ``"squared"``, ``"cross_entropy"`` or a callable, as in
        :func:`diva_jax.loo_loss`.
      normalize: ``"rms"`` (default), ``"max"``, ``"sum"`` or ``"none"``; see
        :func:`gradient_scale`.
      num_classes: K for int labels.
      return_result: return a :class:`ReweightResult` instead of the weights.

    Returns:
      (N,) weights ``alpha >= 0``, or a :class:`ReweightResult`.
    """
    _check_options(steps, normalize, optimizer)
    Z, Y, alpha, _ = _checks.check_problem(features, labels, None, 1.0,
                                           num_classes=num_classes)
    lam = select_lambda(Z, Y) if lam is None else _checks.check_lam(lam)
    optimizer = optimizer or optax.sgd(learning_rate)
    state = optimizer.init(alpha)

    objective, derivative = [], None
    for step in range(steps + 1):
        value, g = value_and_dataset_derivative(Z, Y, lam, alpha, mask,
                                                validation=validation, loss=loss)
        objective.append(float(value))
        if derivative is None:
            derivative, scale = g, gradient_scale(g, mask, normalize)
        if step == steps:
            break
        updates, state = optimizer.update(scale * g, state, alpha)
        alpha = optax.projections.projection_non_negative(
            optax.apply_updates(alpha, updates))

    if return_result:
        return ReweightResult(alpha, np.asarray(objective), derivative, float(lam))
    return alpha
