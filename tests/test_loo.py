"""Weighted ridge fits and LOO residuals against brute-force refits and sklearn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import (
    assert_close, block_ridge, brute_loo_loss, brute_loo_residuals, random_problem,
    ridge,
)
from sklearn.linear_model import Ridge, RidgeCV

import diva_jax

SHAPES = [(30, 5, 3), (12, 20, 2), (9, 9, 1)]  # N > d, N < d, N = d


@pytest.mark.parametrize("n,d,k", SHAPES)
@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_fit_ridge_matches_direct_solve(n, d, k, solver):
    Z, Y, alpha = random_problem(np.random.default_rng(n * d), n, d, k, zeros=2)
    W = diva_jax.fit_ridge(Z, Y, alpha, 0.7, solver=solver)
    assert_close(W, ridge(Z, Y, alpha, 0.7))


def test_fit_ridge_matches_sklearn_ridge():
    Z, Y, alpha = random_problem(np.random.default_rng(1), 40, 6, 3)
    sk = Ridge(alpha=0.5, fit_intercept=False).fit(Z, Y, sample_weight=alpha)
    assert_close(diva_jax.fit_ridge(Z, Y, alpha, 0.5), sk.coef_.T)


@pytest.mark.parametrize("n,d,k", SHAPES)
@pytest.mark.parametrize("solver", ["primal", "dual"])
@pytest.mark.parametrize("zeros", [0, 3])
def test_loo_residuals_match_brute_force_refits(n, d, k, solver, zeros):
    Z, Y, alpha = random_problem(np.random.default_rng(n + zeros), n, d, k, zeros=zeros)
    e = diva_jax.loo_residuals(alpha, Z, Y, 0.3, solver=solver)
    assert_close(e, brute_loo_residuals(Z, Y, alpha, 0.3))


def test_loo_residual_of_zero_weight_sample_is_its_plain_residual():
    Z, Y, alpha = random_problem(np.random.default_rng(2), 20, 4, 2)
    alpha[5] = 0.0
    W = ridge(Z, Y, alpha, 0.1)
    e = diva_jax.loo_residuals(alpha, Z, Y, 0.1)
    assert_close(e[5], Y[5] - Z[5] @ W)


@pytest.mark.parametrize("weighted", [False, True])
def test_loo_values_match_sklearn_ridgecv(weighted):
    # RidgeCV's efficient LOO rescales rows by sqrt(sample_weight), so it stores
    # sample_weight_i * e_i^2 for each sample and output, shape (N, K, n_alphas).
    Z, Y, alpha = random_problem(np.random.default_rng(3), 50, 8, 3)
    sw = alpha if weighted else None
    sk = RidgeCV(alphas=[0.4], fit_intercept=False, store_cv_results=True)
    sk.fit(Z, Y, sample_weight=sw)
    e = np.asarray(diva_jax.loo_residuals(alpha if weighted else None, Z, Y, 0.4))
    ours = (alpha[:, None] if weighted else 1.0) * e**2
    assert_close(ours, sk.cv_results_[:, :, 0])


@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_loo_loss_matches_brute_force_with_mask(solver):
    Z, Y, alpha = random_problem(np.random.default_rng(4), 15, 6, 2, zeros=2)
    mask = np.arange(15) % 3 != 0
    value = diva_jax.loo_loss(alpha, Z, Y, 0.2, mask, solver=solver)
    assert_close(value, brute_loo_loss(Z, Y, alpha, 0.2, mask))


def test_int_labels_give_one_hot_targets():
    rng = np.random.default_rng(5)
    Z, labels = rng.standard_normal((25, 4)), rng.integers(0, 3, 25)
    Y = np.eye(3)[labels]
    assert_close(diva_jax.loo_residuals(None, Z, labels, 1.0),
                 brute_loo_residuals(Z, Y, np.ones(25), 1.0))
    with_k = diva_jax.loo_residuals(None, Z, labels, 1.0, num_classes=5)
    assert with_k.shape == (25, 5)


@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_block_loo_matches_brute_force(solver):
    rng = np.random.default_rng(6)
    J, Y = rng.standard_normal((10, 3, 7)), rng.standard_normal((10, 3))
    alpha = rng.uniform(0.1, 2, 10)
    alpha[[1, 4]] = 0.0
    assert_close(diva_jax.fit_ridge(J, Y, alpha, 0.5, solver=solver),
                 block_ridge(J, Y, alpha, 0.5))
    e = diva_jax.loo_residuals(alpha, J, Y, 0.5, solver=solver)
    assert_close(e, brute_loo_residuals(J, Y, alpha, 0.5))


def test_shared_features_equal_kronecker_blocks():
    # J_i = I_K (x) z_i^T turns the block LOO into the shared-feature LOO.
    Z, Y, alpha = random_problem(np.random.default_rng(7), 14, 4, 3, zeros=1)
    J = np.einsum("kl,nd->nkld", np.eye(3), Z).reshape(14, 3, 12)
    for solver in ["primal", "dual"]:
        assert_close(diva_jax.loo_residuals(alpha, J, Y, 0.3, solver=solver),
                     diva_jax.loo_residuals(alpha, Z, Y, 0.3))
    W = np.asarray(diva_jax.fit_ridge(J, Y, alpha, 0.3)).reshape(3, 4).T
    assert_close(W, diva_jax.fit_ridge(Z, Y, alpha, 0.3))


def test_primal_equals_dual_on_ill_conditioned_features():
    # cond(Z) = 1e6 and lam that regularises the smallest directions: the
    # condition number of A (and of K D + lam I) is ||Z||^2 / lam = 1e8.
    Z, Y, alpha = random_problem(np.random.default_rng(8), 20, 20, 2, cond=1e6)
    brute = brute_loo_residuals(Z, Y, alpha, 1e4)
    for solver in ["primal", "dual"]:
        e = diva_jax.loo_residuals(alpha, Z, Y, 1e4, solver=solver)
        assert_close(e, brute, scale=np.abs(brute).max() * 1e3)


def test_validation_loss_matches_refit():
    Z, Y, alpha = random_problem(np.random.default_rng(9), 30, 5, 2)
    Zv, Yv = np.random.default_rng(10).standard_normal((2, 8, 5))[0], np.ones((8, 2))
    W = ridge(Z, Y, alpha, 0.5)
    expected = np.mean(np.sum((Zv @ W - Yv) ** 2, 1))
    assert_close(diva_jax.validation_loss(alpha, Z, Y, 0.5, Zv, Yv), expected)


def test_jit_and_vmap_agree_with_eager():
    Z, Y, alpha = random_problem(np.random.default_rng(11), 20, 4, 2, zeros=2)
    eager = diva_jax.loo_loss(alpha, Z, Y, 0.5)
    jitted = jax.jit(diva_jax.loo_loss)(alpha, Z, Y, 0.5)
    assert_close(jitted, eager)
    alphas = np.stack([alpha, np.ones(20), 2 * alpha])
    batched = jax.vmap(diva_jax.loo_loss, in_axes=(0, None, None, None))(
        alphas, Z, Y, 0.5)
    assert_close(batched, [diva_jax.loo_loss(a, Z, Y, 0.5) for a in alphas])
    lams = jnp.array([0.1, 1.0])
    over_lam = jax.vmap(diva_jax.loo_loss, in_axes=(None, None, None, 0))(
        alpha, Z, Y, lams)
    assert_close(over_lam, [brute_loo_loss(Z, Y, alpha, lam) for lam in [0.1, 1.0]])


def test_float32_runs_in_float32_and_is_accurate():
    Z, Y, alpha = random_problem(np.random.default_rng(12), 60, 10, 3, zeros=3)
    e32 = diva_jax.loo_residuals(alpha.astype(np.float32), Z.astype(np.float32),
                                 Y.astype(np.float32), 0.5)
    assert e32.dtype == jnp.float32
    assert_close(e32, brute_loo_residuals(Z, Y, alpha, 0.5), dtype=np.float32)
