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

Defaults: one step, with ``eta`` chosen among 0, 0.1, 0.3 and 1 by the error
of the reweighted head on three held-out fifths of the training set
(:func:`select_learning_rate`); the test split is never used. No single
``eta`` suits every dataset. On the digits (random Fourier features, 20%
uniform label noise, 10 splits) ``eta = 1`` took test error from 2.70% to
2.06% on average, as low as training on the clean samples alone (2.08%),
while on Caltech-101 MobileNetV2 features ``eta = 1`` raised it from 10.17%
to 12.76% without noise and from 10.95% to 11.84% with 20% noise, where
``eta = 0.1`` changed it by less than 0.1 point. The held-out choice picked
``eta = 1`` in 7 digits splits (mean 2.15%, lower than the original in 9 of
10, equal in 1) and 0 to 0.3 on Caltech-101 (10.17% -> 10.17% without
noise; 10.95% -> 10.89% and 10.95% with it).

More steps did not help: on the digits a second step raised test error
again (to about 3%), because once the flipped samples are at ``alpha = 0``
the LOO loss, scored on the same noisy labels, pulls them back (the
overfitting of the LOO estimate that the paper warns of).
"""

from __future__ import annotations

import logging
import numbers
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float

from diva_jax import _checks
from diva_jax._derivative import value_and_dataset_derivative
from diva_jax._lambda import select_lambda
from diva_jax._loo import check_validation, fit_ridge

logger = logging.getLogger(__name__)

DEFAULT_STEPS = 1
DEFAULT_LEARNING_RATE = "auto"
LEARNING_RATE_GRID = (0.0, 0.1, 0.3, 1.0)
NORMALIZATIONS = ("rms", "max", "sum", "none")


class ReweightResult(NamedTuple):
    """What :func:`reweight` found.

    Attributes:
      weights: (N,) the optimised ``alpha >= 0``.
      objective: (steps + 1,) the loss at ``alpha = 1`` and after each step.
      derivative: (N,) the dataset derivative ``dL/dalpha`` at ``alpha = 1``
        (positive: the sample raises the loss).
      lam: the ridge strength used throughout.
      learning_rate: the ``eta`` used (NaN with a custom optimizer).
    """

    weights: Float[Array, " N"]
    objective: np.ndarray
    derivative: Float[Array, " N"]
    lam: float
    learning_rate: float


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


def _check_options(steps, normalize, optimizer, learning_rate, mask):
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
    if optimizer is None and learning_rate == "auto":
        if mask is not None:
            raise ValueError("learning_rate='auto' holds out part of the samples, "
                             "which a scoring mask does not allow; pass a number.")
    elif optimizer is None and not (isinstance(learning_rate, numbers.Real)
                                    and learning_rate >= 0):
        raise ValueError(f"learning_rate must be 'auto' or a number >= 0; got "
                         f"{learning_rate!r}.")


def reweight(
    features: ArrayLike, labels: ArrayLike, *, lam: float | None = None,
    steps: int = DEFAULT_STEPS, learning_rate: float | str = DEFAULT_LEARNING_RATE,
    optimizer: optax.GradientTransformation | None = None,
    validation: tuple[ArrayLike, ArrayLike] | None = None,
    mask: ArrayLike | None = None, loss="squared", normalize: str = "rms",
    num_classes: int | None = None, seed: int = 0, return_result: bool = False,
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
      learning_rate: ``eta`` of the default ``optax.sgd`` (with
        ``normalize="rms"``, the typical change of one weight in the first
        step), or ``"auto"``: chosen by :func:`select_learning_rate` on
        held-out parts of the training set (or on ``validation``).
      optimizer: any optax ``GradientTransformation``; overrides
        ``learning_rate``.
      validation: optional ``(Z_val, Y_val)``: optimise the validation loss
        (paper Prop. 2) instead of the LOO loss (Prop. 3).
      mask: (N,) samples scored by the LOO loss; None for all. Needs a number
        for ``learning_rate``.
      loss: ``"squared"``, ``"cross_entropy"`` or a callable, as in
        :func:`diva_jax.loo_loss`.
      normalize: ``"rms"`` (default), ``"max"``, ``"sum"`` or ``"none"``; see
        :func:`gradient_scale`.
      num_classes: K for int labels.
      seed: seed of the held-out parts of ``learning_rate="auto"``.
      return_result: return a :class:`ReweightResult` instead of the weights.

    Returns:
      (N,) weights ``alpha >= 0``, or a :class:`ReweightResult`.
    """
    _check_options(steps, normalize, optimizer, learning_rate, mask)
    Z, Y, _, _ = _checks.check_problem(features, labels, None, 1.0,
                                       num_classes=num_classes)
    lam = select_lambda(Z, Y) if lam is None else _checks.check_lam(lam)
    if optimizer is None and learning_rate == "auto" and steps == 0:
        learning_rate = 0.0
    elif optimizer is None and learning_rate == "auto":
        learning_rate = select_learning_rate(
            Z, Y, lam=lam, steps=steps, normalize=normalize, loss=loss, seed=seed,
            validation=validation, classify=_is_int_labels(labels))
    eta = float("nan") if optimizer is not None else float(learning_rate)
    optimizer = optimizer or optax.sgd(learning_rate)
    alpha, objective, derivative = _descend(Z, Y, lam, steps, optimizer, mask,
                                            validation, loss, normalize)
    if return_result:
        return ReweightResult(alpha, objective, derivative, float(lam), eta)
    return alpha


def _descend(Z, Y, lam, steps, optimizer, mask, validation, loss, normalize):
    """The projected steps from ``alpha = 1``: weights, objective trace and the
    derivative at the start."""
    alpha = jnp.ones(Z.shape[0], Z.dtype)
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
    return alpha, np.asarray(objective), derivative


def _is_int_labels(labels) -> bool:
    labels = np.asarray(labels)
    return labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer)


def held_out_error(Z, Y, alpha, lam, Z_val, Y_val, classify: bool) -> float:
    """Error of the weighted ridge head on ``(Z_val, Y_val)``: the share of
    wrong argmax classes, or the mean squared error for real targets."""
    F = Z_val @ fit_ridge(Z, Y, alpha, lam)
    if classify:
        return float(jnp.mean(jnp.argmax(F, 1) != jnp.argmax(Y_val, 1)))
    return float(jnp.mean(jnp.sum((F - Y_val) ** 2, 1)))


def _grid_errors(Z, Y, lam, Z_val, Y_val, grid, steps, normalize, loss, classify):
    """Held-out error after reweighting with each ``eta`` of ``grid``."""
    if steps == 1:  # one step from alpha = 1 for every eta: share the gradient
        _, g = value_and_dataset_derivative(Z, Y, lam, loss=loss)
        direction = gradient_scale(g, None, normalize) * g
        alphas = [jnp.maximum(0.0, 1.0 - eta * direction) for eta in grid]
    else:
        alphas = [_descend(Z, Y, lam, steps, optax.sgd(float(eta)), None, None,
                           loss, normalize)[0] for eta in grid]
    return np.asarray([held_out_error(Z, Y, alpha, lam, Z_val, Y_val, classify)
                       for alpha in alphas])


def select_learning_rate(
    features: ArrayLike, labels: ArrayLike, *, lam: float | None = None,
    grid=LEARNING_RATE_GRID, splits: int = 3, validation_fraction: float = 0.2,
    validation: tuple[ArrayLike, ArrayLike] | None = None,
    steps: int = DEFAULT_STEPS, normalize: str = "rms", loss="squared",
    classify: bool | None = None, seed: int = 0, return_errors: bool = False,
):
    """The step ``eta`` of :func:`reweight` with the lowest held-out error.

    Each of ``splits`` random parts of ``validation_fraction`` of the samples
    is held out in turn; the rest is reweighted with each ``eta`` in ``grid``
    and the ridge head (at ``lam``, the LOO choice on all samples when None)
    is scored on the held-out part; with ``validation=(Z_val, Y_val)`` that
    set is the held-out part. The ``eta`` with the lowest mean error wins, the
    smaller one on ties; 0 (no reweighting) is in the default grid, so the
    choice can be "leave the weights alone". The test split is never used.

    Args:
      features: (N, d) features. labels: (N,) int labels or (N, K) targets.
      lam: ridge strength of every fit.
      grid: candidate values ``>= 0``, ascending.
      splits, validation_fraction: the held-out parts.
      validation: an optional separate validation set.
      steps, normalize, loss: as in :func:`reweight`.
      classify: score by classification error (int labels, the default for
        them) or by squared error.
      seed: seed of the held-out parts.
      return_errors: also return the (splits, len(grid)) errors.

    Returns:
      ``eta`` as a float, or ``(eta, errors)``.
    """
    grid = _check_grid(grid)
    classify = _is_int_labels(labels) if classify is None else classify
    Z, Y, _, _ = _checks.check_problem(features, labels, None, 1.0)
    lam = select_lambda(Z, Y) if lam is None else _checks.check_lam(lam)
    if validation is not None:
        Z_val, Y_val = check_validation(Z, Y, *validation, num_classes=Y.shape[1])
        errors = _grid_errors(Z, Y, lam, Z_val, Y_val, grid, steps, normalize,
                              loss, classify)[None]
    else:
        errors = _split_errors(Z, Y, lam, grid, splits, validation_fraction, steps,
                               normalize, loss, classify, seed)
    eta = float(grid[int(np.argmin(errors.mean(0)))])
    logger.info("reweight: eta=%g (held-out errors %s)", eta, errors.mean(0))
    return (eta, errors) if return_errors else eta


def _split_errors(Z, Y, lam, grid, splits, fraction, steps, normalize, loss,
                  classify, seed):
    if not 0 < fraction < 1 or not isinstance(splits, (int, np.integer)) \
            or splits < 1:
        raise ValueError(f"need splits >= 1 and 0 < validation_fraction < 1; got "
                         f"{splits!r} and {fraction!r}.")
    rng = np.random.default_rng(seed)
    n_val = min(max(1, int(round(fraction * Z.shape[0]))), Z.shape[0] - 1)
    errors = []
    for _ in range(splits):
        order = rng.permutation(Z.shape[0])
        val, train = order[:n_val], order[n_val:]
        errors.append(_grid_errors(Z[train], Y[train], lam, Z[val], Y[val], grid,
                                   steps, normalize, loss, classify))
    return np.stack(errors)


def _check_grid(grid):
    grid = np.asarray(grid, np.float64)
    if grid.ndim != 1 or grid.size == 0 or np.any(grid < 0) \
            or np.any(np.diff(grid) <= 0):
        raise ValueError(f"grid must be a non-empty ascending 1-D array of "
                         f"learning rates >= 0; got {grid!r}.")
    return grid
