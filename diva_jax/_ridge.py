"""Weighted ridge regression in the four forms the library needs.

Notation (MATH.md, paper eqs. 6-7): ``A = Z^T D Z + lam I``, ``C = A^{-1}``,
``W = C Z^T D Y``, ``R = Y - Z W`` and ``h_i = alpha_i z_i^T C z_i``.

* primal: a d x d Cholesky factor ``A = L L^T`` and ``Q = Z L^{-T}``, so that
  ``Z C Z^T = Q Q^T``; O(N d^2) time and O(N d + d^2) memory; for N >= d.
* dual: the N x N matrix ``M = K D + lam I`` with ``K = Z Z^T``; then
  ``Z C Z^T = M^{-1} K`` and ``I - H = lam M^{-1}`` (``H = Z C Z^T D``), which
  gives ``1 - h_i`` without cancellation; O(N^2 d + N^3); for N < d.
* block primal and block dual: the same for per-sample Jacobian blocks
  ``J_i`` (K x m), ``A = sum_i alpha_i J_i^T J_i + lam I`` (MATH.md, several
  outputs per sample). ``W`` is then one vector of m parameters.

No form takes a square root of ``alpha``, so every quantity is exact and
differentiable at ``alpha_i = 0``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jaxtyping import Array, Float


class Primal(NamedTuple):
    """Shared features solved in the d x d form."""

    W: Float[Array, "d K"]
    R: Float[Array, "N K"]
    Q: Float[Array, "N d"]
    Linv: Float[Array, "d d"]
    s: Float[Array, " N"]
    denom: Float[Array, " N"]


class Dual(NamedTuple):
    """Shared features solved in the N x N kernel form."""

    W: Float[Array, "d K"]
    R: Float[Array, "N K"]
    Minv: Float[Array, "N N"]
    S: Float[Array, "N N"]
    denom: Float[Array, " N"]


class BlockPrimal(NamedTuple):
    """Jacobian blocks solved in the m x m form."""

    W: Float[Array, " m"]
    R: Float[Array, "N K"]
    Q: Float[Array, "N K m"]
    Linv: Float[Array, "m m"]
    S: Float[Array, "N K K"]
    IH: Float[Array, "N K K"]


class BlockDual(NamedTuple):
    """Jacobian blocks solved in the NK x NK kernel form."""

    W: Float[Array, " m"]
    R: Float[Array, "N K"]
    Minv: Float[Array, "NK NK"]
    S: Float[Array, "N K N K"]
    IH: Float[Array, "N K K"]


def pick_solver(shape: tuple[int, ...], solver: str) -> str:
    """``"primal"`` or ``"dual"``: the smaller of the two systems when ``"auto"``."""
    if solver not in ("auto", "primal", "dual"):
        raise ValueError(f"solver must be 'auto', 'primal' or 'dual', got {solver!r}.")
    if solver != "auto":
        return solver
    rows = shape[0] * (shape[1] if len(shape) == 3 else 1)
    return "primal" if rows >= shape[-1] else "dual"


def cholesky_inverse_factor(A):
    """``L^{-1}`` (lower triangular) for the Cholesky factor ``A = L L^T``."""
    L = jnp.linalg.cholesky(A)
    eye = jnp.eye(A.shape[0], dtype=A.dtype)
    return jnp.tril(solve_triangular(L, eye, lower=True))


def _solve_kernel(K, alpha, lam):
    """``(M^{-1} K, M^{-1})`` for ``M = K D + lam I`` by one LU solve.

    Solving is several times more accurate than forming ``M^{-1}`` first.
    """
    n = K.shape[0]
    eye = jnp.eye(n, dtype=K.dtype)
    X = jnp.linalg.solve(K * alpha[None, :] + lam * eye, jnp.concatenate([K, eye], 1))
    return X[:, :n], X[:, n:]


def tdot(X, V):
    """``X^T V`` (d, K) for ``X`` (N, d) and a thin ``V`` (N, K), as ``(V^T X)^T``.

    Both contract the sample axis; XLA's CPU backend runs this form several
    times faster, because it transposes the thin operand rather than ``X``.
    """
    return (V.T @ X).T


def gram(X, w):
    """``X^T diag(w) X`` (d, d) for ``X`` (N, d), computed from its upper blocks.

    The product is symmetric: with the columns split into b blocks, block row
    i needs only ``(w X_i)^T X[:, i:]``, ``(b + 1) / 2b`` of the work of the
    full product (b = 2 from d = 512, 4 from d = 1024; blocks of >= 256
    columns keep each product at full GEMM speed).
    """
    d = X.shape[1]
    b = max(1, min(4, d // 256))
    edges = [d * i // b for i in range(b + 1)]
    rows = [jnp.pad((w[:, None] * X[:, lo:hi]).T @ X[:, lo:], ((0, 0), (lo, 0)))
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    G = jnp.concatenate(rows, 0)
    return jnp.triu(G) + jnp.triu(G, 1).T


def triu_matmul(X, U):
    """``X @ U`` (N, d) for an upper-triangular ``U`` (d, d), by column blocks.

    Column block j of the product needs only the first rows of ``U`` down to
    the block's last column: with 4 blocks, 5/8 of the work of the full
    product. Below d = 1024 the blocks would be narrower than 256 columns and
    slower than one full product, so the full product is used.
    """
    d = U.shape[1]
    if d < 1024:
        return X @ U
    edges = [d * i // 4 for i in range(5)]
    return jnp.concatenate([X[:, :hi] @ U[:hi, lo:hi]
                            for lo, hi in zip(edges[:-1], edges[1:], strict=True)],
                           1)


def row_quadratic_forms(X, S):
    """``x_i^T S x_i`` (N,) for every row of ``X`` (N, d) and a symmetric ``S``.

    With ``U = 2 triu(S, 1) + diag(S)``, ``x^T U x = x^T S x``, and ``X U`` is a
    triangular product (:func:`triu_matmul`).
    """
    U = 2 * jnp.triu(S, 1) + jnp.diag(jnp.diagonal(S))
    return jnp.sum(triu_matmul(X, U) * X, 1)


def _primal(alpha, Z, Y, lam) -> Primal:
    d = Z.shape[1]
    A = gram(Z, alpha) + lam * jnp.eye(d, dtype=Z.dtype)  # Z^T D Z + lam I
    Linv = cholesky_inverse_factor(A)
    Q = triu_matmul(Z, Linv.T)  # Z L^{-T}: rows q_i with z_i^T C z_j = q_i . q_j

    T = Linv @ tdot(Z, alpha[:, None] * Y)  # L^{-1} Z^T D Y
    s = jnp.sum(Q * Q, axis=1)
    return Primal(Linv.T @ T, Y - Q @ T, Q, Linv, s, 1.0 - alpha * s)


def _dual(alpha, Z, Y, lam) -> Dual:
    K = Z @ Z.T
    S, Minv = _solve_kernel(K, alpha, lam)  # S = Z C Z^T

    aY = alpha[:, None] * Y
    W = Z.T @ (Minv.T @ aY)  # C Z^T = Z^T (D K + lam I)^{-1}
    return Dual(W, Y - S @ aY, Minv, S, lam * jnp.diagonal(Minv))


def _block_primal(alpha, J, Y, lam) -> BlockPrimal:
    n, k, m = J.shape
    Jf, a = J.reshape(n * k, m), jnp.repeat(alpha, k)
    A = Jf.T @ (a[:, None] * Jf) + lam * jnp.eye(m, dtype=J.dtype)
    Linv = cholesky_inverse_factor(A)
    Q = triu_matmul(Jf, Linv.T).reshape(n, k, m)

    T = Q.reshape(n * k, m).T @ (a * Y.reshape(-1))
    S = jnp.einsum("nkm,nlm->nkl", Q, Q)  # J_i C J_i^T
    IH = jnp.eye(k, dtype=J.dtype)[None] - alpha[:, None, None] * S
    return BlockPrimal(Linv.T @ T, Y - Q @ T, Q, Linv, S, IH)


def _block_dual(alpha, J, Y, lam) -> BlockDual:
    n, k, m = J.shape
    Jf, a = J.reshape(n * k, m), jnp.repeat(alpha, k)
    S, Minv = _solve_kernel(Jf @ Jf.T, a, lam)
    S = S.reshape(n, k, n, k)

    aY = a * Y.reshape(-1)
    R = Y - (S.reshape(n * k, n * k) @ aY).reshape(n, k)
    idx = jnp.arange(n)
    IH = lam * Minv.reshape(n, k, n, k)[idx, :, idx, :]  # I - H = lam M^{-1}
    return BlockDual(Jf.T @ (Minv.T @ aY), R, Minv, S, IH)


def solve(alpha, Z, Y, lam, solver: str):
    """Fits the weighted ridge and returns the state of the chosen form."""
    block = Z.ndim == 3
    if pick_solver(Z.shape, solver) == "primal":
        return (_block_primal if block else _primal)(alpha, Z, Y, lam)
    return (_block_dual if block else _dual)(alpha, Z, Y, lam)


def loo_from_state(state) -> Float[Array, "N K"]:
    """LOO residuals ``e_i = (I - H_i)^{-1} r_i`` (paper Prop. 3)."""
    if isinstance(state, (Primal, Dual)):
        return state.R / state.denom[:, None]
    return jnp.linalg.solve(state.IH, state.R[..., None])[..., 0]


def predict(W, Z):
    """Predictions ``Z W`` (N, K) for shared features or Jacobian blocks."""
    return Z @ W

