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
