"""The blocked symmetric and triangular products of the primal form against
numpy, and the closed-form derivative at sizes that use them against jax.grad
and the kernel form."""

import numpy as np
import pytest
from oracles import assert_close

import diva_jax
from diva_jax._ridge import gram, row_quadratic_forms, tdot, triu_matmul


@pytest.mark.parametrize("d", [40, 300, 512, 777, 1100])
def test_gram_equals_numpy(d):
    rng = np.random.default_rng(d)
    X, w = rng.standard_normal((60, d)), rng.uniform(-1, 2, 60)
    G = np.asarray(gram(X, w))
    assert_close(G, X.T @ (w[:, None] * X))
    assert np.array_equal(G, G.T)


@pytest.mark.parametrize("d", [40, 1024, 1030])
def test_triu_matmul_equals_numpy(d):
    rng = np.random.default_rng(d)
    X, U = rng.standard_normal((30, d)), np.triu(rng.standard_normal((d, d)))
    assert_close(triu_matmul(X, U), X @ U)


@pytest.mark.parametrize("d", [40, 1030])
def test_row_quadratic_forms_equal_numpy(d):
    rng = np.random.default_rng(d + 1)
    X, S = rng.standard_normal((30, d)), rng.standard_normal((d, d))
    S = S + S.T
    assert_close(row_quadratic_forms(X, S), np.einsum("nd,de,ne->n", X, S, X))


def test_tdot_equals_numpy():
    rng = np.random.default_rng(1)
    X, V = rng.standard_normal((50, 30)), rng.standard_normal((50, 4))
    assert_close(tdot(X, V), X.T @ V)


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_closed_form_with_blocks_equals_autodiff(loss):
    # d = 520 splits A and Q^T diag(v) Q into two column blocks.
    rng = np.random.default_rng(2)
    Z, y = rng.standard_normal((600, 520)), rng.integers(0, 3, 600)
    alpha = rng.uniform(0, 2, 600)
    alpha[:7] = 0.0
    mask = np.arange(600) % 3 != 0
    closed = diva_jax.value_and_dataset_derivative(Z, y, 2.0, alpha, mask, loss=loss,
                                                   solver="primal")
    auto = diva_jax.value_and_dataset_derivative(Z, y, 2.0, alpha, mask, loss=loss,
                                                 solver="primal", method="autodiff")
    assert_close(closed[0], auto[0])
    assert_close(closed[1], auto[1])


def test_blocked_triangular_product_in_the_derivative():
    """d = 1030 splits ``Z L^{-T}`` into four uneven column blocks; oracles: the
    kernel form (no blocked products) and jax.grad through the primal fit."""
    rng = np.random.default_rng(3)
    Z, y = rng.standard_normal((40, 1030)), rng.integers(0, 3, 40)
    alpha = rng.uniform(0, 2, 40)
    alpha[:3] = 0.0
    primal = diva_jax.value_and_dataset_derivative(Z, y, 5.0, alpha, solver="primal")
    dual = diva_jax.value_and_dataset_derivative(Z, y, 5.0, alpha, solver="dual")
    auto = diva_jax.dataset_derivative(Z, y, 5.0, alpha, solver="primal",
                                       method="autodiff")
    assert_close(primal[0], dual[0])
    assert_close(primal[1], dual[1])
    assert_close(primal[1], auto)
