"""Independent numpy oracles: brute-force refits, finite differences, tolerances."""

import numpy as np


def tol(dtype) -> float:
    """Relative tolerance for results computed in ``dtype``."""
    return {np.dtype("float64"): 1e-10, np.dtype("float32"): 2e-3}[np.dtype(dtype)]


def random_problem(rng, n, d, k, *, zeros=0, cond=None):
    """Features (n, d), targets (n, k) and weights (n,) with ``zeros`` zero weights.

    With ``cond``, the singular values of Z span ``[1, cond]`` (log-spaced).
    """
    Z = rng.standard_normal((n, d))
    if cond is not None:
        U, _, Vt = np.linalg.svd(Z, full_matrices=False)
        Z = (U * np.logspace(0, np.log10(cond), min(n, d))[::-1]) @ Vt
    Y = rng.standard_normal((n, k))
    alpha = rng.uniform(0.2, 2.0, n)
    alpha[rng.permutation(n)[:zeros]] = 0.0
    return Z, Y, alpha


def ridge(Z, Y, alpha, lam):
    """``argmin_W sum_i alpha_i ||W^T z_i - y_i||^2 + lam ||W||^2`` (np.linalg)."""
    d = Z.shape[1]
    return np.linalg.solve(Z.T @ (alpha[:, None] * Z) + lam * np.eye(d),
                           Z.T @ (alpha[:, None] * Y))


def block_ridge(J, Y, alpha, lam):
    """``argmin_w sum_i alpha_i ||J_i w - y_i||^2 + lam ||w||^2`` for blocks J_i."""
    m = J.shape[2]
    A = np.einsum("n,nkm,nkp->mp", alpha, J, J) + lam * np.eye(m)
    return np.linalg.solve(A, np.einsum("n,nkm,nk->m", alpha, J, Y))


def brute_loo_residuals(Z, Y, alpha, lam):
    """``y_i - f_{-i}(z_i)`` by refitting with each sample removed (n refits)."""
    n = Z.shape[0]
    out = np.zeros(Y.shape)
    for i in range(n):
        keep = np.arange(n) != i
        if Z.ndim == 2:
            out[i] = Y[i] - Z[i] @ ridge(Z[keep], Y[keep], alpha[keep], lam)
        else:
            out[i] = Y[i] - Z[i] @ block_ridge(Z[keep], Y[keep], alpha[keep], lam)
    return out


def brute_loo_loss(Z, Y, alpha, lam, mask=None):
    """Mean squared LOO error ``sum_i m_i ||e_i||^2 / sum_i m_i`` by refits."""
    e = brute_loo_residuals(Z, Y, alpha, lam)
    m = np.ones(len(Z)) if mask is None else np.asarray(mask, float)
    return float(np.sum(m * np.sum(e**2, 1)) / np.sum(m))


def central_differences(f, x, eps=1e-5):
    """Gradient of a scalar ``f`` at ``x`` by central differences per coordinate."""
    grad = np.zeros_like(x)
    for i in range(len(x)):
        step = np.zeros_like(x)
        step[i] = eps
        grad[i] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad


def assert_close(actual, desired, dtype=np.float64, scale=None):
    """``|actual - desired| <= tol * max(|desired|)`` elementwise (scale-aware)."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    scale = np.max(np.abs(desired)) if scale is None else scale
    atol = tol(dtype) * max(scale, 1e-300)
    np.testing.assert_allclose(actual, desired, rtol=0, atol=atol)
