"""Full-network linearization: Jacobian features, sketch, NTK, f_lin, LOO.

Oracles: ``jax.jacfwd`` of the whole batch (forward mode, the other AD
direction), an orthonormal basis of tangents, the exact variance of a Gaussian
sketch, first-order Taylor expansion, and brute-force refits of the linearized
network with central finite differences of the LOO loss.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import diva_jax
from diva_jax.features import empirical_ntk, jacobian_features, linearize
from diva_jax.features._jacobian import sketch_block
from test_features_resnet import as_float64, random_tiny_resnet

K = 3


def mlp_params(seed=0, sizes=(4, 6, K)):
    rng = np.random.default_rng(seed)
    return [{"w": rng.standard_normal((a, b)) / np.sqrt(a),
             "b": 0.1 * rng.standard_normal(b)}
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)]


def mlp(params, x):
    """A tanh MLP, ``(n, 4) -> (n, K)``."""
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"][None])
    return x @ params[-1]["w"] + params[-1]["b"][None]


def forward_mode_jacobian(apply_fn, params, x):
    """``J`` (n, K, P) by ``jax.jacfwd`` of the whole batch, diagonal blocks."""
    flat, unravel = ravel_pytree(params)
    full = jax.jacfwd(lambda w: apply_fn(unravel(w), x))(flat)  # (n, K, P)
    return np.asarray(full)


def inputs(n, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 4))


def test_exact_jacobian_matches_forward_mode_for_every_batch_size():
    params, x = mlp_params(), inputs(7)
    expected = forward_mode_jacobian(mlp, params, x)
    for batch_size in (1, 3, 7, 32):
        J = jacobian_features(mlp, params, x, batch_size=batch_size, progress=False)
        assert J.shape == (7, K, 4 * 6 + 6 + 6 * K + K) and J.dtype == np.float64
        np.testing.assert_allclose(J, expected, rtol=0, atol=1e-13)


def test_sketch_along_an_orthonormal_basis_is_the_exact_jacobian():
    params, x = mlp_params(), inputs(5)
    J = forward_mode_jacobian(mlp, params, x)
    P = J.shape[-1]
    Q = np.linalg.qr(np.random.default_rng(2).standard_normal((P, P)))[0]
    Z = jacobian_features(mlp, params, x, tangents=Q.T, batch_size=2,
                          direction_batch_size=7, progress=False)
    np.testing.assert_allclose(Z, J @ Q, rtol=0, atol=1e-13)  # Z = J V^T
    np.testing.assert_allclose(Z @ Q.T, J, rtol=0, atol=1e-13)
    identity = jacobian_features(mlp, params, x, tangents=np.eye(P), progress=False)
    np.testing.assert_allclose(identity, J, rtol=0, atol=1e-13)


def test_random_sketch_inner_products_are_unbiased():
    """Each entry of ``Z Z^T`` is within 5 standard deviations of ``J J^T``.

    For ``v ~ N(0, I/m)``, ``sum_k (a.v_k)(b.v_k)`` has mean ``a.b`` and
    variance ``(|a|^2 |b|^2 + (a.b)^2) / m``.
    """
    params, x, m = mlp_params(), inputs(4), 4000
    J = forward_mode_jacobian(mlp, params, x).reshape(4 * K, -1)
    Z = jacobian_features(mlp, params, x, num_directions=m, key=jax.random.key(3),
                          batch_size=3, direction_batch_size=1000, progress=False)
    assert Z.shape == (4, K, m)
    Z = Z.reshape(4 * K, m)
    gram, sketch = J @ J.T, Z @ Z.T
    norms = np.sum(J**2, axis=1)
    std = np.sqrt((np.outer(norms, norms) + gram**2) / m)
    assert np.max(np.abs(sketch - gram) / std) < 5
    assert np.max(np.abs(sketch - gram) / std) > 0.1  # random, not exact


def test_sketch_is_reproducible_and_independent_of_batching():
    params, x = mlp_params(), inputs(6)
    a = jacobian_features(mlp, params, x, num_directions=9, key=jax.random.key(4),
                          batch_size=4, direction_batch_size=2, progress=False)
    b = jacobian_features(mlp, params, x, num_directions=9,
                          key=jax.random.PRNGKey(4), batch_size=6,
                          direction_batch_size=9, progress=False)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-14)
    compiled = sketch_block._cache_size()
    c = jacobian_features(mlp, params, x, num_directions=9, key=jax.random.key(5),
                          batch_size=6, direction_batch_size=9, progress=False)
    assert np.max(np.abs(a - c)) > 1e-3
    assert sketch_block._cache_size() == compiled  # a new key does not recompile


def test_tiny_resnet_sketch_and_ntk_match_its_exact_jacobian():
    apply_fn, params = as_float64(*random_tiny_resnet(0, K, layers=(1, 1), base=4))
    x = np.random.default_rng(5).standard_normal((2, 8, 8, 3))
    J = jacobian_features(apply_fn.logits, params, x, batch_size=2, progress=False)
    P = J.shape[-1]
    assert J.shape == (2, K, P) and P > 1000
    rows = np.random.default_rng(6).choice(P, 5, replace=False)
    tangents = np.zeros((5, P))
    tangents[np.arange(5), rows] = 1.0  # coordinate directions pick J's columns
    Z = jacobian_features(apply_fn.logits, params, x, tangents=tangents,
                          progress=False)
    np.testing.assert_allclose(Z, J[:, :, rows], rtol=0, atol=1e-12)
    theta = empirical_ntk(apply_fn.logits, params, x)
    expected = np.einsum("iap,jbp->ijab", J, J)
    np.testing.assert_allclose(theta, expected, rtol=0,
                               atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("method", ["jacobian", "ntvp", "auto"])
def test_empirical_ntk_is_J_J_transpose(method):
    params, x1, x2 = mlp_params(), inputs(5), inputs(3, seed=7)
    J1 = forward_mode_jacobian(mlp, params, x1)
    J2 = forward_mode_jacobian(mlp, params, x2)
    theta = empirical_ntk(mlp, params, x1, x2, method=method, batch_size=2)
    assert theta.shape == (5, 3, K, K)
    np.testing.assert_allclose(theta, np.einsum("iap,jbp->ijab", J1, J2),
                               rtol=0, atol=1e-13)
    same = empirical_ntk(mlp, params, x1, method=method)
    np.testing.assert_allclose(same, np.einsum("iap,jbp->ijab", J1, J1),
                               rtol=0, atol=1e-13)
    np.testing.assert_allclose(same, same.transpose(1, 0, 3, 2), atol=1e-14)


def test_linearized_network_is_first_order_taylor():
    params, x = mlp_params(), inputs(5)
    f_lin = linearize(mlp, params)
    rng = np.random.default_rng(8)
    direction = jax.tree.map(lambda a: rng.standard_normal(a.shape), params)
    step = lambda eps: jax.tree.map(lambda w, d: w + eps * d, params,  # noqa: E731
                                    direction)
    np.testing.assert_allclose(f_lin(params, x), mlp(params, x), atol=1e-15)

    # f_lin is linear: f_lin(w0 + eps d) = f(w0) + eps J d, with J by jacfwd.
    J = forward_mode_jacobian(mlp, params, x)
    d_flat = ravel_pytree(direction)[0]
    np.testing.assert_allclose(f_lin(step(0.3), x), mlp(params, x) + 0.3 * J @ d_flat,
                               rtol=0, atol=1e-13)

    # The Taylor remainder is O(eps^2): halving eps divides it by ~4.
    errors = [np.max(np.abs(f_lin(step(eps), x) - mlp(step(eps), x)))
              for eps in (1e-2, 5e-3, 2.5e-3)]
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    np.testing.assert_allclose(ratios, 4.0, rtol=0.05)
    assert jax.jit(f_lin)(step(1e-2), x).shape == (5, K)


def brute_force_loo_loss(f_lin, params0, x, Y, alpha, lam):
    """``mean_i ||y_i - f_lin_{-i}(x_i)||^2``, refitting the linearized net n times.

    Each refit minimizes ``sum_{k != i} alpha_k ||y_k - f_lin(w, x_k)||^2 +
    lam ||w - w0||^2`` over w by its normal equations; the design matrix is
    read off ``f_lin`` itself (exactly linear) with ``jax.jacfwd``, and the
    held-out prediction is a call of ``f_lin`` at the refitted weights.
    """
    flat0, unravel = ravel_pytree(params0)
    n, P = x.shape[0], flat0.shape[0]
    F = lambda w: f_lin(unravel(w), x)  # noqa: E731
    A = np.asarray(jax.jacfwd(F)(flat0))  # (n, K, P), the map w - w0 -> f_lin - f0
    R = Y - np.asarray(F(flat0))
    loss = 0.0
    for i in range(n):
        keep = np.arange(n) != i
        a, Ak, Rk = alpha[keep], A[keep], R[keep]
        gram = np.einsum("n,nkp,nkq->pq", a, Ak, Ak) + lam * np.eye(P)
        delta = np.linalg.solve(gram, np.einsum("n,nkp,nk->p", a, Ak, Rk))
        prediction = np.asarray(F(flat0 + delta))[i]
        loss += np.sum((Y[i] - prediction) ** 2) / n
    return loss


def test_loo_derivative_on_jacobian_features_matches_refits():
    """dL_LOO/dalpha on Z = J(x) equals finite differences of brute-force refits."""
    params, x = mlp_params(seed=9, sizes=(4, 5, K)), inputs(8, seed=10)
    Y = np.random.default_rng(11).standard_normal((8, K))
    alpha = np.random.default_rng(12).uniform(0.5, 1.5, 8)
    lam = 0.3
    f_lin = linearize(mlp, params)
    Z = jacobian_features(mlp, params, x, progress=False)
    f0 = np.asarray(mlp(params, x))

    value = diva_jax.loo_loss(alpha, Z, Y - f0, lam)
    np.testing.assert_allclose(value, brute_force_loo_loss(f_lin, params, x, Y, alpha,
                                                           lam), rtol=1e-10)
    grad = np.asarray(diva_jax.dataset_derivative(Z, Y - f0, lam, alpha))
    eps = 1e-5
    fd = np.array([(brute_force_loo_loss(f_lin, params, x, Y, alpha + eps * e, lam)
                    - brute_force_loo_loss(f_lin, params, x, Y, alpha - eps * e, lam))
                   / (2 * eps) for e in np.eye(8)])
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9 * np.abs(fd).max())

    # A full orthonormal sketch rotates Z, which the ridge penalty does not see.
    P = Z.shape[-1]
    Q = np.linalg.qr(np.random.default_rng(13).standard_normal((P, P)))[0]
    Z_rotated = jacobian_features(mlp, params, x, tangents=Q.T, progress=False)
    np.testing.assert_allclose(diva_jax.dataset_derivative(Z_rotated, Y - f0, lam,
                                                           alpha), grad, rtol=1e-9)


def test_bad_arguments_are_named():
    params, x = mlp_params(), inputs(3)
    with pytest.raises(TypeError, match="apply_fn.logits"):
        jacobian_features(lambda p, x: (mlp(p, x), x), params, x)
    with pytest.raises(ValueError, match=r"shape \(n, K\)"):
        jacobian_features(lambda p, x: mlp(p, x)[:, 0], params, x)
    with pytest.raises(ValueError, match="num_directions must be a positive int"):
        jacobian_features(mlp, params, x, num_directions=0)
    with pytest.raises(ValueError, match="tangents must have shape"):
        jacobian_features(mlp, params, x, tangents=np.ones((2, 5)))
    with pytest.raises(ValueError, match="either tangents"):
        jacobian_features(mlp, params, x, tangents=np.ones((2, 5)), num_directions=2)
    with pytest.raises(ValueError, match="at least one sample"):
        jacobian_features(mlp, params, x[:0])
    with pytest.raises(ValueError, match="batch_size"):
        jacobian_features(mlp, params, x, batch_size=0)
    with pytest.raises(ValueError, match="method must be"):
        empirical_ntk(mlp, params, x, method="structured")
