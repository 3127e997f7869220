"""Choosing lam by the LOO loss over a grid."""

import numpy as np
from oracles import assert_close, brute_loo_loss, random_problem
from sklearn.linear_model import RidgeCV

import diva_jax


def test_grid_losses_match_brute_force_refits():
    Z, Y, alpha = random_problem(np.random.default_rng(0), 25, 4, 2, zeros=3)
    grid = np.logspace(-3, 2, 6)
    lam, got_grid, losses = diva_jax.select_lambda(Z, Y, alpha, grid=grid,
                                                   return_losses=True)
    expected = [brute_loo_loss(Z, Y, alpha, g) for g in grid]
    assert_close(losses, expected)
    assert lam == grid[int(np.argmin(expected))]
    np.testing.assert_array_equal(got_grid, grid)


def test_masked_grid_losses_score_a_subset_like_refits_of_it():
    """Oracle: refits on the samples of nonzero weight, scored on the mask."""
    rng = np.random.default_rng(3)
    Z, Y, alpha = random_problem(rng, 30, 5, 2, zeros=8)
    mask = (alpha > 0) & (rng.random(30) < 0.7)
    grid = np.logspace(-2, 2, 5)
    _, _, losses = diva_jax.select_lambda(Z, Y, alpha, mask, grid=grid,
                                          return_losses=True)
    assert_close(losses, [brute_loo_loss(Z, Y, alpha, g, mask) for g in grid])

    kept = alpha > 0
    _, _, alone = diva_jax.select_lambda(Z[kept], Y[kept], alpha[kept], mask[kept],
                                         grid=grid, return_losses=True)
    assert_close(losses, alone)
    J = Z.reshape(30, 1, 5)
    _, _, blocks = diva_jax.select_lambda(J, Y[:, :1], alpha, mask, grid=grid,
                                          return_losses=True)
    assert_close(blocks, [brute_loo_loss(Z, Y[:, :1], alpha, g, mask)
                          for g in grid])


def test_default_grid_follows_the_weighted_scale():
    rng = np.random.default_rng(4)
    Z, Y, alpha = random_problem(rng, 20, 3, 1, zeros=5)
    lam, grid, _ = diva_jax.select_lambda(Z, Y, alpha, return_losses=True)
    scale = np.sum(alpha[:, None] * Z**2) / 3
    np.testing.assert_allclose(grid, scale * np.logspace(-6, 2, 25), rtol=1e-12)
    assert lam in grid


def test_selection_agrees_with_sklearn_ridgecv():
    rng = np.random.default_rng(1)
    Z = rng.standard_normal((80, 6))
    Y = Z @ rng.standard_normal((6, 2)) + 0.5 * rng.standard_normal((80, 2))
    grid = np.logspace(-2, 3, 12)
    sk = RidgeCV(alphas=grid, fit_intercept=False).fit(Z, Y)
    assert diva_jax.select_lambda(Z, Y, grid=grid) == sk.alpha_


def test_kernel_and_block_shapes_use_the_generic_path():
    rng = np.random.default_rng(2)
    Z, Y = rng.standard_normal((6, 10)), rng.standard_normal((6, 2))
    grid = np.array([0.1, 1.0, 10.0])
    _, _, losses = diva_jax.select_lambda(Z, Y, grid=grid, return_losses=True)
    assert_close(losses, [brute_loo_loss(Z, Y, np.ones(6), g) for g in grid])
    J = rng.standard_normal((8, 2, 3))
    _, _, losses = diva_jax.select_lambda(J, Y[:6].repeat(2, 0)[:8], grid=grid,
                                          return_losses=True)
    assert np.all(np.isfinite(losses))
