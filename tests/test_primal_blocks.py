"""The blocked symmetric products of the primal form against numpy, and the
closed-form derivative at sizes that use them against jax.grad."""

import numpy as np
import pytest
from oracles import assert_close

import diva_jax
from diva_jax._ridge import gram, tdot


@pytest.mark.parametrize("d", [40, 300, 512, 777, 1100])
def test_gram_equals_numpy(d):
    rng = np.random.default_rng(d)
    X, w = rng.standard_normal((60, d)), rng.uniform(-1, 2, 60)
    G = np.asarray(gram(X, w))
    assert_close(G, X.T @ (w[:, None] * X))
    assert np.array_equal(G, G.T)


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
