"""Choosing the ridge strength by the leave-one-out loss, for a whole grid at once.

One eigendecomposition serves every ``lam``: with ``Z^T D Z = V diag(ev) V^T``
and ``P = Z V``, the leverage and the fit are ``s_i = sum_k P_ik^2 / (ev_k + lam)``
and ``Z W = P diag(1 / (ev + lam)) P^T D Y``, so each grid point costs O(N d K)
after one O(N d^2 + d^3) pass.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike

from diva_jax import _checks
from diva_jax._loo import _loo_loss


@jax.jit
def _grid_losses_primal(alpha, Z, Y, grid, mask):
    ev, V = jnp.linalg.eigh(Z.T @ (alpha[:, None] * Z))
    P = Z @ V
    T = P.T @ (alpha[:, None] * Y)

    def loss_at(lam):
        scale = 1.0 / (jnp.maximum(ev, 0.0) + lam)
        s = (P * P) @ scale
        R = Y - P @ (scale[:, None] * T)
        e = R / (1.0 - alpha * s)[:, None]
        return jnp.sum(mask * jnp.sum(e * e, 1)) / jnp.sum(mask)

    return jax.vmap(loss_at)(grid)


@partial(jax.jit, static_argnames="solver")
def _grid_losses_vmapped(alpha, Z, Y, grid, mask, solver):
    loss = jax.vmap(lambda lam: _loo_loss(alpha, Z, Y, lam, mask, solver,
                                          _squared))
    return loss(grid)


def _squared(prediction, target):
    return jnp.sum((prediction - target) ** 2)


def default_grid(Z, num: int = 25, alpha=None) -> np.ndarray:
    """``num`` values of ``lam`` from ``1e-6`` to ``1e2`` times ``tr(Z^T D Z) / d``
    (``D = diag(alpha)``, the identity when ``alpha`` is None)."""
    squares = jnp.sum(Z * Z, tuple(range(1, Z.ndim)))
    total = jnp.sum(squares) if alpha is None else jnp.sum(alpha * squares)
    scale = float(total) / Z.shape[-1]
    return scale * np.logspace(-6, 2, num)


def select_lambda(
    Z: ArrayLike, Y: ArrayLike, alpha: ArrayLike | None = None,
    mask: ArrayLike | None = None, *, grid: ArrayLike | None = None,
    num_classes: int | None = None, return_losses: bool = False,
):
    """The ``lam`` with the lowest squared LOO loss over a grid.

    The loss is that of :func:`diva_jax.loo_loss`: the fit is weighted by
    ``alpha`` and the mean is taken over the samples in ``mask``, so a subset
    (samples at ``alpha_i = 0`` left out of the fit, say) is scored without
    changing any array's shape, and repeated calls compile once.

    Args:
      Z: (N, d) features or (N, K, m) Jacobian blocks.
      Y: (N,) int labels or (N, K) targets.
      alpha: (N,) sample weights; None for ones.
      mask: (N,) samples scored (bool or nonnegative weights); None for all.
      grid: candidate values ``> 0``; :func:`default_grid` of the weighted
        features when None.
      num_classes: K for int labels.
      return_losses: also return the grid and the loss at each point.

    Returns:
      ``lam`` as a float, or ``(lam, grid, losses)`` with ``return_losses``.
    """
    Z, Y, alpha, _ = _checks.check_problem(Z, Y, alpha, 1.0, num_classes=num_classes)
    mask = _checks.check_mask(mask, Z.shape[0], Z.dtype)
    grid = default_grid(Z, alpha=alpha) if grid is None else np.asarray(grid,
                                                                        np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.all(grid > 0):
        raise ValueError(f"grid must be a non-empty 1-D array of values > 0; got "
                         f"{grid!r}.")
    grid_j = jnp.asarray(grid, Z.dtype)
    if Z.ndim == 2 and Z.shape[0] >= Z.shape[1]:
        losses = _grid_losses_primal(alpha, Z, Y, grid_j, mask)
    else:
        losses = _grid_losses_vmapped(alpha, Z, Y, grid_j, mask, "auto")
    losses = np.asarray(losses)
    lam = float(grid[int(np.nanargmin(losses))])
    return (lam, grid, losses) if return_losses else lam
