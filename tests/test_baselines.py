"""Ren et al. 2018 and Chang et al. 2017 baselines, and the shared evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import Ridge

import diva_jax
from diva_jax.curation import active_bias, learning_to_reweight, ridge_test_error
from diva_jax.curation._baselines import (
    SoftmaxHead, active_bias_weights, per_sample_loss, ren_batch_weights,
    threshold_closeness,
)
from diva_jax._losses import cross_entropy

K = 3


def _problem(seed=0, n=90, d=5, flip=0.2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    Z = 1.5 * rng.standard_normal((K, d))[labels] + rng.standard_normal((n, d))
    flipped = rng.random(n) < flip
    return Z, np.where(flipped, (labels + 1) % K, labels), flipped, labels


def test_ridge_test_error_matches_sklearn():
    Z, y, _, clean = _problem()
    Zt, _, _, yt = _problem(seed=1)
    w = np.random.default_rng(2).uniform(0, 2, len(y))
    ridge = Ridge(alpha=0.7, fit_intercept=False).fit(Z, np.eye(K)[y], sample_weight=w)
    expected = np.mean(np.argmax(ridge.predict(Zt), 1) != yt)
    assert ridge_test_error(Z, y, w, Zt, yt, lam=0.7) == pytest.approx(expected)

    lam = diva_jax.select_lambda(Z, y)
    ridge = Ridge(alpha=lam, fit_intercept=False).fit(Z, np.eye(K)[y])
    expected = np.mean(np.argmax(ridge.predict(Zt), 1) != yt)
    assert ridge_test_error(Z, y, None, Zt, yt) == pytest.approx(expected)


def _head(seed, d=5):
    rng = np.random.default_rng(seed)
    return SoftmaxHead(jnp.asarray(rng.standard_normal((d, K))),
                       jnp.asarray(rng.standard_normal(K)))


def test_ren_weights_are_clipped_normalised_gradient_agreement():
    """Oracle: u_i = step * grad l_i . grad L_val from per-sample Jacobians."""
    Z, y, _, _ = _problem(seed=3)
    Y = np.eye(K)[y]
    params, step = _head(4), 0.3
    Zb, Yb, Zv, Yv = Z[:20], Y[:20], Z[60:], Y[60:]

    per_sample = jax.jacobian(lambda p: per_sample_loss(p, Zb, Yb, cross_entropy))(
        params)
    val = jax.grad(lambda p: jnp.mean(per_sample_loss(p, Zv, Yv, cross_entropy)))(
        params)
    u = step * (jnp.einsum("ndk,dk->n", per_sample.W, val.W)
                + jnp.einsum("nk,k->n", per_sample.b, val.b))
    expected = np.maximum(u, 0) / np.sum(np.maximum(u, 0))

    w = ren_batch_weights(params, Zb, Yb, Zv, Yv, step_size=step)
    np.testing.assert_allclose(w, expected, rtol=1e-9, atol=1e-15)
    assert np.all(w >= 0) and np.isclose(np.sum(w), 1.0)
    assert np.all(np.asarray(w)[np.asarray(u) < 0] == 0)
    assert np.any(np.asarray(u) < 0)


def test_ren_weights_are_zero_when_every_gradient_disagrees():
    z = jnp.ones((1, 2))
    head = SoftmaxHead(jnp.zeros((2, 2)), jnp.zeros(2))
    w = ren_batch_weights(head, z, jnp.eye(2)[:1], z, jnp.eye(2)[1:], step_size=0.1)
    np.testing.assert_array_equal(w, [0.0])


def test_learning_to_reweight_output():
    Z, y, _, _ = _problem(seed=5)
    result = learning_to_reweight(Z, y, epochs=3, batch_size=16, return_result=True)
    assert result.weights.shape == (len(y),)
    assert result.is_validation.sum() == round(0.2 * len(y))
    np.testing.assert_array_equal(result.weights[result.is_validation], 1.0)
    assert np.all(result.weights >= 0)
    train_only = learning_to_reweight(Z, y, epochs=3, batch_size=16,
                                      validation_weight=0.0)
    np.testing.assert_array_equal(train_only[result.is_validation], 0.0)
    np.testing.assert_allclose(train_only[~result.is_validation],
                               result.weights[~result.is_validation], rtol=1e-6)


def test_threshold_closeness_peaks_at_one_half():
    p = np.linspace(0, 1, 101)
    score = threshold_closeness(p)
    assert p[np.argmax(score)] == pytest.approx(0.5)
    np.testing.assert_allclose(score, score[::-1], atol=1e-15)
    np.testing.assert_allclose(score.max(), 0.25)
    w = active_bias_weights(p)
    np.testing.assert_allclose(w.mean(), 1.0)
    order = np.argsort(np.abs(p - 0.5), kind="stable")
    assert np.all(np.diff(w[order]) <= 1e-12)


def test_active_bias_history_matches_hand_written_sgd():
    """Oracle: full-batch SGD without momentum, p(y_i) recorded before each step."""
    Z, y, _, _ = _problem(seed=6, n=40)
    Y = jnp.asarray(np.eye(K)[y])
    lr, epochs = 0.2, 4
    params = SoftmaxHead(jnp.zeros((Z.shape[1], K)), jnp.zeros(K))
    history = []
    for _ in range(epochs):
        history.append(jnp.sum(jax.nn.softmax(Z @ params.W + params.b[None, :]) * Y, 1))
        g = jax.grad(lambda p: jnp.mean(per_sample_loss(p, Z, Y, cross_entropy)))(
            params)
        params = jax.tree.map(lambda p, gp: p - lr * gp, params, g)
    p_bar = np.mean(history, 0)

    result = active_bias(Z, y, epochs=epochs, burn_in=epochs, batch_size=len(y),
                         learning_rate=lr, momentum=0.0, return_result=True)
    np.testing.assert_allclose(result.mean_probability, p_bar, rtol=1e-9)
    np.testing.assert_allclose(result.weights, active_bias_weights(p_bar), rtol=1e-9)
    np.testing.assert_allclose(result.head.W, params.W, rtol=1e-9, atol=1e-12)


def test_active_bias_weighted_epochs_and_weights():
    Z, y, _, _ = _problem(seed=7)
    result = active_bias(Z, y, epochs=6, burn_in=2, batch_size=30,
                         return_result=True)
    np.testing.assert_allclose(result.weights.mean(), 1.0)
    np.testing.assert_allclose(result.weights,
                               active_bias_weights(result.mean_probability),
                               rtol=1e-12)
    peak = np.argmin(np.abs(result.mean_probability - 0.5))
    assert result.weights[peak] == result.weights.max()


def test_baselines_improve_nothing_is_assumed_but_runs_on_digits_shape():
    Z, y, _, _ = _problem(seed=8)
    for fn in (learning_to_reweight, active_bias):
        w = fn(Z.astype(np.float32), y, epochs=2, batch_size=32)
        assert w.shape == (len(y),) and np.all(np.isfinite(w))


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"),
])
def test_bad_options(kwargs, match):
    Z, y, _, _ = _problem()
    for fn in (learning_to_reweight, active_bias):
        with pytest.raises(ValueError, match=match):
            fn(Z, y, **kwargs)
    with pytest.raises(ValueError, match="validation_fraction"):
        learning_to_reweight(Z, y, validation_fraction=1.0)
