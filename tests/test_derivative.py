"""The dataset derivative: closed forms against jax.grad, finite differences of
brute-force refits, and the influence-function formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import (
    assert_close, brute_loo_loss, central_differences, random_problem, ridge,
)

import diva_jax

SHAPES = [(30, 5, 3), (12, 20, 2), (7, 7, 1)]


def _huber(prediction, target):
    err = prediction - target
    return jnp.sum(jnp.where(jnp.abs(err) < 0.5, err**2, jnp.abs(err) - 0.25))


@pytest.mark.parametrize("n,d,k", SHAPES)
@pytest.mark.parametrize("solver", ["primal", "dual"])
@pytest.mark.parametrize("loss", ["squared", "cross_entropy", _huber])
def test_closed_form_equals_autodiff(n, d, k, solver, loss):
    Z, Y, alpha = random_problem(np.random.default_rng(n * k), n, d, k, zeros=2)
    mask = np.arange(n) % 4 != 1
    closed = diva_jax.value_and_dataset_derivative(
        Z, Y, 0.4, alpha, mask, loss=loss, solver=solver)
    auto = diva_jax.value_and_dataset_derivative(
        Z, Y, 0.4, alpha, mask, loss=loss, solver=solver, method="autodiff")
    assert_close(closed[0], auto[0])
    assert_close(closed[1], auto[1])


@pytest.mark.parametrize("n,d,k", SHAPES)
def test_loo_derivative_equals_differences_of_brute_force_refits(n, d, k):
    Z, Y, alpha = random_problem(np.random.default_rng(n + 1), n, d, k, zeros=2)
    grad = diva_jax.dataset_derivative(Z, Y, 0.5, alpha)
    expected = central_differences(lambda a: brute_loo_loss(Z, Y, a, 0.5), alpha)
    np.testing.assert_allclose(grad, expected, atol=1e-7 * np.abs(expected).max())


def test_derivative_at_zero_weight_is_finite_and_one_sided_exact():
    # Extend starts pool samples at alpha_i = 0: a forward difference there
    # (alpha_i stays >= 0) must match the closed form.
    Z, Y, alpha = random_problem(np.random.default_rng(2), 15, 4, 2)
    alpha[[0, 3, 9]] = 0.0
    grad = np.asarray(diva_jax.dataset_derivative(Z, Y, 0.3, alpha))
    assert np.all(np.isfinite(grad))
    for i in [0, 3, 9]:
        eps = np.zeros(15)
        eps[i] = 1e-6
        forward = (brute_loo_loss(Z, Y, alpha + eps, 0.3)
                   - brute_loo_loss(Z, Y, alpha, 0.3)) / 1e-6
        assert abs(grad[i] - forward) < 1e-5 * max(abs(forward), 1e-3)


def test_all_weights_but_one_zero():
    Z, Y, _ = random_problem(np.random.default_rng(3), 8, 3, 2)
    alpha = np.zeros(8)
    alpha[2] = 1.0
    closed = diva_jax.dataset_derivative(Z, Y, 0.2, alpha)
    auto = diva_jax.dataset_derivative(Z, Y, 0.2, alpha, method="autodiff")
    assert_close(closed, auto)


def test_ties_duplicate_samples_get_equal_derivatives():
    Z, Y, alpha = random_problem(np.random.default_rng(4), 12, 4, 2)
    Z[7], Y[7], alpha[7] = Z[3], Y[3], alpha[3]
    grad = np.asarray(diva_jax.dataset_derivative(Z, Y, 0.5, alpha))
    assert_close(grad[7], grad[3], scale=np.abs(grad).max())
    expected = central_differences(lambda a: brute_loo_loss(Z, Y, a, 0.5), alpha)
    np.testing.assert_allclose(grad, expected, atol=1e-7 * np.abs(expected).max())


@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_ill_conditioned_features(solver):
    Z, Y, alpha = random_problem(np.random.default_rng(5), 20, 20, 2, zeros=2,
                                 cond=1e6)
    closed = diva_jax.dataset_derivative(Z, Y, 1e4, alpha, solver=solver)
    auto = diva_jax.dataset_derivative(Z, Y, 1e4, alpha, solver="primal",
                                       method="autodiff")
    assert_close(closed, auto, scale=np.abs(auto).max() * 1e3)


def _influence(Z, Y, alpha, lam, Zv, Yv):
    """Koh & Liang: -grad L_val^T H^{-1} grad_W l_i for each training sample."""
    d, k = Z.shape[1], Y.shape[1]
    W = ridge(Z, Y, alpha, lam)
    hessian = 2 * np.kron(Z.T @ (alpha[:, None] * Z) + lam * np.eye(d), np.eye(k))
    grad_val = (2 * Zv.T @ (Zv @ W - Yv) / len(Zv)).reshape(-1)
    out = []
    for z, y in zip(Z, Y, strict=True):
        grad_i = (2 * np.outer(z, z @ W - y)).reshape(-1)
        out.append(-grad_val @ np.linalg.solve(hessian, grad_i))
    return np.array(out)


@pytest.mark.parametrize("n,d,k", SHAPES)
@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_validation_derivative_equals_influence_function(n, d, k, solver):
    rng = np.random.default_rng(n)
    Z, Y, alpha = random_problem(rng, n, d, k, zeros=1)
    Zv, Yv = rng.standard_normal((9, d)), rng.standard_normal((9, k))
    grad = diva_jax.dataset_derivative(Z, Y, 0.3, alpha, validation=(Zv, Yv),
                                       solver=solver)
    assert_close(grad, _influence(Z, Y, alpha, 0.3, Zv, Yv))
    auto = diva_jax.dataset_derivative(Z, Y, 0.3, alpha, validation=(Zv, Yv),
                                       method="autodiff")
    assert_close(grad, auto)


@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_block_closed_forms_equal_autodiff(solver):
    rng = np.random.default_rng(6)
    J, Y = rng.standard_normal((9, 3, 5)), rng.standard_normal((9, 3))
    alpha = rng.uniform(0.2, 2, 9)
    alpha[[2, 5]] = 0.0
    for loss in ["squared", "cross_entropy"]:
        closed = diva_jax.dataset_derivative(J, Y, 0.4, alpha, loss=loss,
                                             solver=solver)
        auto = diva_jax.dataset_derivative(J, Y, 0.4, alpha, loss=loss,
                                           solver=solver, method="autodiff")
        assert_close(closed, auto)
    Jv, Yv = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3))
    closed = diva_jax.dataset_derivative(J, Y, 0.4, alpha, validation=(Jv, Yv),
                                         solver=solver)
    auto = diva_jax.dataset_derivative(J, Y, 0.4, alpha, validation=(Jv, Yv),
                                       method="autodiff")
    assert_close(closed, auto)


def test_block_derivative_equals_differences_of_brute_force_refits():
    rng = np.random.default_rng(7)
    J, Y = rng.standard_normal((8, 2, 4)), rng.standard_normal((8, 2))
    alpha = rng.uniform(0.2, 2, 8)
    alpha[1] = 0.0
    grad = diva_jax.dataset_derivative(J, Y, 0.5, alpha)
    expected = central_differences(lambda a: brute_loo_loss(J, Y, a, 0.5), alpha)
    np.testing.assert_allclose(grad, expected, atol=1e-7 * np.abs(expected).max())


def test_shared_features_equal_kronecker_blocks():
    Z, Y, alpha = random_problem(np.random.default_rng(8), 10, 3, 2, zeros=2)
    J = np.einsum("kl,nd->nkld", np.eye(2), Z).reshape(10, 2, 6)
    assert_close(diva_jax.dataset_derivative(J, Y, 0.3, alpha),
                 diva_jax.dataset_derivative(Z, Y, 0.3, alpha))


@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_model_derivative_equals_jacobian_of_the_fit(solver):
    Z, Y, alpha = random_problem(np.random.default_rng(9), 12, 5, 3, zeros=2)
    dW = diva_jax.model_derivative(Z, Y, 0.3, alpha, solver=solver)
    jac = jax.jacobian(lambda a: diva_jax.fit_ridge(Z, Y, a, 0.3))(alpha)
    assert dW.shape == (12, 5, 3)
    assert_close(dW, jnp.moveaxis(jac, 2, 0))
    J = np.einsum("kl,nd->nkld", np.eye(3), Z).reshape(12, 3, 15)
    dw = diva_jax.model_derivative(J, Y, 0.3, alpha, solver=solver)
    assert_close(np.asarray(dw).reshape(12, 3, 5).transpose(0, 2, 1), dW)


def test_default_alpha_is_ones_and_jit_matches_eager():
    Z, Y, _ = random_problem(np.random.default_rng(10), 20, 4, 2)
    ones = diva_jax.dataset_derivative(Z, Y, 0.5, np.ones(20))
    assert_close(diva_jax.dataset_derivative(Z, Y, 0.5), ones)
    jitted = jax.jit(lambda a: diva_jax.dataset_derivative(Z, Y, 0.5, a))(
        jnp.ones(20))
    assert_close(jitted, ones)
    grad_of_loss = jax.grad(diva_jax.loo_loss)(jnp.ones(20), Z, Y, 0.5)
    assert_close(grad_of_loss, ones)


def test_float32_derivative_close_to_float64():
    Z, Y, alpha = random_problem(np.random.default_rng(11), 200, 16, 4, zeros=5)
    g64 = diva_jax.dataset_derivative(Z, Y, 1.0, alpha)
    g32 = diva_jax.dataset_derivative(Z.astype(np.float32), Y.astype(np.float32), 1.0,
                                      alpha.astype(np.float32))
    assert g32.dtype == jnp.float32
    assert_close(g32, g64, dtype=np.float32)
