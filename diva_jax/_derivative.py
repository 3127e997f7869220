"""The dataset derivative in closed form (paper Props. 1-2 and the LOO gradient).

For the LOO loss, with ``g_i = dL/de_i``, ``u_i = (I - H_i)^{-T} g_i`` and
``S_ij = J_i C J_j^T`` (``= z_i^T C z_j`` for shared features), MATH.md gives

    dL/dalpha_j = - r_j . (sum_i S_ji u_i)                          (term 1)
                  + u_j . S_jj e_j                                 (term 2)
                  - sum_i alpha_i (S_ji u_i) . (S_ji e_i)            (term 3)

In the primal form every term is a product of N x d and d x d matrices:
``Z^T D Z``, ``Q = Z L^{-T}``, ``Q^T diag(v) Q`` and ``Q P`` are the four GEMMs
of the size of ``Z^T Z`` that set the cost; no N x N matrix is formed.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from diva_jax import _checks
from diva_jax._loo import _loo_loss, _validation_loss, check_validation
from diva_jax._losses import mean_loss, resolve_loss
from diva_jax._ridge import (
    BlockDual, BlockPrimal, Dual, Primal, gram, loo_from_state, predict,
    row_quadratic_forms, solve, tdot,
)
from diva_jax._sharding import match_sample_sharding


def _loo_gradient(state, alpha, e, g):
    """``dL/dalpha`` (N,) from the state, LOO residuals ``e`` and ``g = dL/de``."""
    if isinstance(state, Primal):
        u = g / state.denom[:, None]
        v = alpha * jnp.sum(g * e, 1) / state.denom
        term1 = -jnp.sum(state.R * (state.Q @ tdot(state.Q, u)), 1)
        term2 = jnp.sum(u * e, 1) * state.s
        P = gram(state.Q, v)  # L^{-1} Z^T diag(v) Z L^{-T}
        return term1 + term2 - row_quadratic_forms(state.Q, P)
    if isinstance(state, Dual):
        u = g / state.denom[:, None]
        v = alpha * jnp.sum(g * e, 1) / state.denom
        term1 = -jnp.sum(state.R * (state.S @ u), 1)
        term2 = jnp.sum(u * e, 1) * jnp.diagonal(state.S)
        return term1 + term2 - (state.S * state.S) @ v
    u = jnp.linalg.solve(jnp.swapaxes(state.IH, 1, 2), g[..., None])[..., 0]
    if isinstance(state, BlockPrimal):
        n, k, m = state.Q.shape
        Qf = state.Q.reshape(n * k, m)
        term1 = -jnp.einsum("nk,nkm,m->n", state.R, state.Q, Qf.T @ u.reshape(-1))
        term2 = jnp.einsum("nk,nkl,nl->n", u, state.S, e)
        a = alpha[:, None] * jnp.einsum("nkm,nk->nm", state.Q, e)
        P = a.T @ jnp.einsum("nkm,nk->nm", state.Q, u)
        term3 = jnp.sum(((Qf @ P) * Qf).reshape(n, k, m), (1, 2))
        return term1 + term2 - term3
    S = state.S
    idx = jnp.arange(S.shape[0])
    Su, Se = jnp.einsum("jkil,il->jik", S, u), jnp.einsum("jkil,il->jik", S, e)
    term1 = -jnp.sum(state.R * jnp.sum(Su, 1), 1)
    term2 = jnp.einsum("jk,jkl,jl->j", u, S[idx, :, idx, :], e)
    return term1 + term2 - jnp.einsum("i,jik,jik->j", alpha, Su, Se)


def _validation_gradient(state, Z_val, G):
    """Prop. 2: ``dL_val/dalpha_i = r_i . (J_i C Z_val^T G)`` with ``G = dL/dF_val``."""
    if isinstance(state, Primal):
        return jnp.sum(state.R * (state.Q @ (state.Linv @ (Z_val.T @ G))), 1)
    if isinstance(state, BlockPrimal):
        t = state.Linv @ (Z_val.reshape(-1, Z_val.shape[-1]).T @ G.reshape(-1))
        return jnp.einsum("nk,nkm,m->n", state.R, state.Q, t)
    raise TypeError("dual states are handled by _validation_gradient_dual")


def _validation_gradient_dual(state, Z, Z_val, G):
    """Prop. 2 in the kernel form: ``Z C Z_val^T = M^{-1} Z Z_val^T``."""
    Jf, Jv = Z.reshape(-1, Z.shape[-1]), Z_val.reshape(-1, Z_val.shape[-1])
    ZCv_G = state.Minv @ (Jf @ (Jv.T @ G.reshape(Jv.shape[0], -1)))
    return jnp.sum(state.R * ZCv_G.reshape(state.R.shape), 1)


@partial(jax.jit, static_argnames=("solver", "loss"))
def _closed_loo(alpha, Z, Y, lam, mask, solver, loss):
    state = solve(alpha, Z, Y, lam, solver)
    e = loo_from_state(state)
    value, dL_dF = jax.value_and_grad(mean_loss, 1)(loss, Y - e, Y, mask)
    return value, _loo_gradient(state, alpha, e, -dL_dF)


@partial(jax.jit, static_argnames=("solver", "loss"))
def _closed_validation(alpha, Z, Y, lam, Z_val, Y_val, solver, loss):
    state = solve(alpha, Z, Y, lam, solver)
    value, G = jax.value_and_grad(mean_loss, 1)(loss, predict(state.W, Z_val), Y_val)
    if isinstance(state, (Dual, BlockDual)):
        return value, _validation_gradient_dual(state, Z, Z_val, G)
    return value, _validation_gradient(state, Z_val, G)


_autodiff_loo = jax.jit(
    jax.value_and_grad(_loo_loss), static_argnames=("solver", "loss"))
_autodiff_validation = jax.jit(
    jax.value_and_grad(_validation_loss), static_argnames=("solver", "loss"))


def value_and_dataset_derivative(
    Z: ArrayLike, Y: ArrayLike, lam: float, alpha: ArrayLike | None = None,
    mask: ArrayLike | None = None, *, method: str = "closed", validation=None,
    loss="squared", solver: str = "auto", num_classes: int | None = None,
) -> tuple[Float[Array, ""], Float[Array, " N"]]:
    """The loss and its dataset derivative ``dL/dalpha`` in one pass.

    Without ``validation`` the loss is the weighted LOO loss of
    :func:`diva_jax.loo_loss` (the closed form of MATH.md); with
    ``validation=(Z_val, Y_val)`` it is :func:`diva_jax.validation_loss`
    (paper Prop. 2, equal to the influence function of up-weighting each sample).

    Args:
      Z: (N, d) features, or (N, K, m) per-sample Jacobian blocks.
      Y: (N,) int labels or (N, K) targets.
      lam: ridge strength ``> 0``.
      alpha: (N,) weights ``>= 0`` at which to differentiate; None for ones.
      mask: (N,) samples scored by the LOO loss; None for all. Ignored with
        ``validation``.
      method: ``"closed"`` (the closed forms: about four GEMMs of the size of
        ``Z^T Z`` in the primal form) or ``"autodiff"`` (``jax.grad`` through
        the fit; same values, slower, more memory).
      validation: optional ``(Z_val, Y_val)``.
      loss: ``"squared"``, ``"cross_entropy"`` or a differentiable callable
        ``l(prediction (K,), target (K,))``.
      solver: ``"auto"``, ``"primal"`` or ``"dual"`` (see :func:`fit_ridge`).
      num_classes: K for int labels.

    Returns:
      ``(value, gradient)``: a scalar and an (N,) array. A positive
      ``gradient[i]`` means up-weighting sample i raises the loss.
    """
    Z, Y, alpha, lam = _checks.check_problem(Z, Y, alpha, lam, num_classes=num_classes)
    loss = resolve_loss(loss)
    if method not in ("closed", "autodiff"):
        raise ValueError(f"method must be 'closed' or 'autodiff', got {method!r}.")
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise TypeError("validation must be a pair (Z_val, Y_val).")
        Z_val, Y_val = check_validation(Z, Y, *validation, num_classes=Y.shape[1])
        fn = _closed_validation if method == "closed" else _autodiff_validation
        value, grad = fn(alpha, Z, Y, lam, Z_val, Y_val, solver=solver, loss=loss)
        return _require_finite(value, match_sample_sharding(grad, Z), Z, lam)
    mask = _checks.check_mask(mask, Z.shape[0], Z.dtype)
    fn = _closed_loo if method == "closed" else _autodiff_loo
    value, grad = fn(alpha, Z, Y, lam, mask, solver=solver, loss=loss)
    return _require_finite(value, match_sample_sharding(grad, Z), Z, lam)


def _require_finite(value, grad, Z, lam):
    """Raises when the ridge system was too ill-conditioned for ``Z``'s dtype."""
    if _checks.is_concrete(grad) and not bool(jnp.all(jnp.isfinite(grad))):
        raise ValueError(
            f"the dataset derivative is not finite: lam={float(lam):.3g} is too small "
            f"for features with sum of squares {float(jnp.sum(Z * Z)):.3g} in "
            f"{Z.dtype}; raise lam (diva_jax.select_lambda picks one), rescale the "
            f"features, or enable float64 (jax_enable_x64).")
    return value, grad


def dataset_derivative(
    Z: ArrayLike, Y: ArrayLike, lam: float, alpha: ArrayLike | None = None,
    mask: ArrayLike | None = None, *, method: str = "closed", validation=None,
    loss="squared", solver: str = "auto", num_classes: int | None = None,
) -> Float[Array, " N"]:
    """The dataset derivative ``dL/dalpha`` (N,) of the LOO or validation loss.

    Arguments as in :func:`value_and_dataset_derivative`, which also returns
    the loss at no extra cost.

    Example:
      >>> import jax.numpy as jnp, diva_jax
      >>> Z = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
      >>> y = jnp.array([0, 1, 1, 1])
      >>> diva_jax.dataset_derivative(Z, y, lam=0.1).shape
      (4,)
    """
    return value_and_dataset_derivative(
        Z, Y, lam, alpha, mask, method=method, validation=validation, loss=loss,
        solver=solver, num_classes=num_classes)[1]


@partial(jax.jit, static_argnames="solver")
def _model_derivative(alpha, Z, Y, lam, solver):
    state = solve(alpha, Z, Y, lam, solver)
    if isinstance(state, Primal):
        CZ = state.Q @ state.Linv  # rows C z_i
        return CZ[:, :, None] * state.R[:, None, :]
    if isinstance(state, Dual):
        return (state.Minv @ Z)[:, :, None] * state.R[:, None, :]
    if isinstance(state, BlockPrimal):
        return jnp.einsum("nkm,mp,nk->np", state.Q, state.Linv, state.R)
    n, k, m = Z.shape
    CJ = (state.Minv @ Z.reshape(n * k, m)).reshape(n, k, m)
    return jnp.einsum("nkm,nk->nm", CJ, state.R)


def model_derivative(
    Z: ArrayLike, Y: ArrayLike, lam: float, alpha: ArrayLike | None = None, *,
    solver: str = "auto", num_classes: int | None = None,
) -> Float[Array, "N d K"]:
    """Prop. 1: ``dW/dalpha_i = C z_i r_i^T`` for every sample, batched.

    Returns:
      (N, d, K) for shared features, (N, m) for Jacobian blocks
      (``C J_i^T r_i``). Memory is N d K: slice the samples for large problems.
    """
    Z, Y, alpha, lam = _checks.check_problem(Z, Y, alpha, lam, num_classes=num_classes)
    return _model_derivative(alpha, Z, Y, lam, solver)
