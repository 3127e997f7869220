"""DIVA Reweight against autodiff oracles (jax.grad of the LOO and validation loss)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import diva_jax
from diva_jax.curation import reweight
from diva_jax.curation._reweight import gradient_scale, select_learning_rate

RTOL = {jnp.float64: 1e-9, jnp.float32: 1e-4}


def _problem(seed=0, n=60, d=6, K=3, flip=0.2):
    """Gaussian classes with a fraction of flipped labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    centers = 2.0 * rng.standard_normal((K, d))
    Z = centers[labels] + rng.standard_normal((n, d))
    flipped = rng.random(n) < flip
    noisy = np.where(flipped, (labels + 1) % K, labels)
    return Z, noisy, flipped


def _autodiff_gradient(alpha, Z, y, lam, mask=None):
    """Oracle: jax.grad of the LOO loss through the weighted ridge fit."""
    Y = diva_jax.one_hot(y, 3)
    return jax.grad(lambda a: diva_jax.loo_loss(a, Z, Y, lam, mask))(alpha)


@pytest.mark.parametrize("normalize", ["rms", "max", "sum", "none"])
def test_one_step_is_projected_normalised_gradient_step(normalize):
    Z, y, _ = _problem()
    lam, eta = 0.7, 0.3
    g = _autodiff_gradient(jnp.ones(len(y)), Z, y, lam)
    scale = {"rms": 1 / jnp.sqrt(jnp.mean(g * g)), "max": 1 / jnp.max(jnp.abs(g)),
             "sum": len(y), "none": 1.0}[normalize]
    expected = jnp.maximum(0.0, 1.0 - eta * scale * g)

    alpha = reweight(Z, y, lam=lam, steps=1, learning_rate=eta, normalize=normalize)
    np.testing.assert_allclose(alpha, expected, rtol=RTOL[jnp.float64], atol=1e-12)


def test_three_steps_match_a_hand_written_loop():
    """Oracle: the loop of eq. 14 with the step size fixed at the first step."""
    Z, y, _ = _problem(seed=1)
    lam, eta = 0.5, 0.4
    alpha = jnp.ones(len(y))
    g0 = _autodiff_gradient(alpha, Z, y, lam)
    scale = 1 / jnp.sqrt(jnp.mean(g0 * g0))
    for _ in range(3):
        alpha = jnp.maximum(0.0, alpha - eta * scale * _autodiff_gradient(
            alpha, Z, y, lam))
    result = reweight(Z, y, lam=lam, steps=3, learning_rate=eta, return_result=True)
    np.testing.assert_allclose(result.weights, alpha, rtol=1e-9, atol=1e-12)


def test_objective_trace_and_derivative_match_the_loss():
    Z, y, _ = _problem(seed=2)
    lam = 0.3
    result = reweight(Z, y, lam=lam, steps=2, learning_rate=0.2, return_result=True)
    Y = diva_jax.one_hot(y, 3)
    assert result.objective.shape == (3,)
    np.testing.assert_allclose(result.objective[0],
                               diva_jax.loo_loss(None, Z, Y, lam), rtol=1e-12)
    np.testing.assert_allclose(result.objective[-1],
                               diva_jax.loo_loss(result.weights, Z, Y, lam), rtol=1e-12)
    np.testing.assert_allclose(result.derivative,
                               _autodiff_gradient(jnp.ones(len(y)), Z, y, lam),
                               rtol=1e-9, atol=1e-14)
    assert result.lam == lam


def test_small_step_lowers_the_loo_loss_and_downweights_flipped_labels():
    Z, y, flipped = _problem(seed=3, n=120)
    result = reweight(Z, y, steps=1, learning_rate=0.05, return_result=True)
    assert result.objective[1] < result.objective[0]
    w = np.asarray(result.weights)
    assert w[flipped].mean() < w[~flipped].mean()


def test_mask_scores_only_the_masked_samples():
    Z, y, _ = _problem(seed=4)
    mask = (np.arange(len(y)) % 2).astype(float)
    lam, eta = 0.6, 0.2
    g = _autodiff_gradient(jnp.ones(len(y)), Z, y, lam, jnp.asarray(mask))
    expected = jnp.maximum(0.0, 1.0 - eta * g / jnp.sqrt(jnp.mean(g * g)))
    alpha = reweight(Z, y, lam=lam, steps=1, learning_rate=eta, mask=mask)
    np.testing.assert_allclose(alpha, expected, rtol=1e-9, atol=1e-12)


def test_validation_objective_uses_the_validation_derivative():
    Z, y, _ = _problem(seed=5)
    Zv, yv, _ = _problem(seed=6, flip=0.0)
    lam, eta = 0.4, 0.3
    Y, Yv = diva_jax.one_hot(y, 3), diva_jax.one_hot(yv, 3)
    g = jax.grad(lambda a: diva_jax.validation_loss(a, Z, Y, lam, Zv, Yv))(
        jnp.ones(len(y)))
    expected = jnp.maximum(0.0, 1.0 - eta * g / jnp.sqrt(jnp.mean(g * g)))
    result = reweight(Z, y, lam=lam, steps=1, learning_rate=eta,
                      validation=(Zv, yv), return_result=True)
    np.testing.assert_allclose(result.weights, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        result.objective[-1],
        diva_jax.validation_loss(result.weights, Z, Y, lam, Zv, Yv), rtol=1e-12)


def test_custom_optax_optimizer_and_projection():
    Z, y, _ = _problem(seed=7)
    lam = 0.5
    g = _autodiff_gradient(jnp.ones(len(y)), Z, y, lam)
    alpha = reweight(Z, y, lam=lam, steps=1, optimizer=optax.sgd(1e4),
                     normalize="none")
    np.testing.assert_allclose(alpha, jnp.maximum(0.0, 1.0 - 1e4 * g), rtol=1e-9)
    assert np.all(np.asarray(alpha) >= 0) and np.any(np.asarray(alpha) == 0)

    adam = reweight(Z, y, lam=lam, steps=2, optimizer=optax.adam(0.1))
    assert adam.shape == (len(y),) and np.all(np.asarray(adam) >= 0)


def test_feature_scale_does_not_change_the_weights():
    """With ``lam`` scaled like ``Z^T Z`` the fit and the normalised step agree."""
    Z, y, _ = _problem(seed=8)
    a = reweight(Z, y, lam=0.5, steps=2, learning_rate=0.3)
    b = reweight(10.0 * Z, y, lam=50.0, steps=2, learning_rate=0.3)
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_default_lambda_is_chosen_by_loo():
    Z, y, _ = _problem(seed=9)
    result = reweight(Z, y, steps=0, return_result=True)
    assert result.lam == diva_jax.select_lambda(Z, y)
    np.testing.assert_array_equal(result.weights, np.ones(len(y)))


def test_float32_matches_float64():
    Z, y, _ = _problem(seed=10)
    a64 = reweight(Z, y, lam=0.5, steps=2, learning_rate=0.3)
    a32 = reweight(Z.astype(np.float32), y, lam=0.5, steps=2, learning_rate=0.3)
    assert a32.dtype == jnp.float32
    np.testing.assert_allclose(a32, a64, rtol=RTOL[jnp.float32], atol=1e-4)


def test_rms_scale_gives_a_unit_rms_direction():
    g = jnp.asarray(np.random.default_rng(0).standard_normal(50))
    direction = gradient_scale(g, None, "rms") * g
    np.testing.assert_allclose(jnp.sqrt(jnp.mean(direction**2)), 1.0, rtol=1e-12)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"steps": -1}, ValueError, "steps"),
    ({"normalize": "l1"}, ValueError, "normalize"),
    ({"optimizer": "sgd"}, TypeError, "optimizer"),
    ({"lam": -1.0}, ValueError, "lam"),
    ({"mask": np.ones(3), "learning_rate": 0.1}, ValueError, "mask"),
    ({"mask": np.ones(60)}, ValueError, "auto"),
    ({"learning_rate": -0.1}, ValueError, "learning_rate"),
    ({"learning_rate": "fast"}, ValueError, "learning_rate"),
])
def test_bad_options_raise_clear_errors(kwargs, error, match):
    Z, y, _ = _problem()
    with pytest.raises(error, match=match):
        reweight(Z, y, **kwargs)


def test_bad_labels_raise_before_any_computation():
    Z, y, _ = _problem()
    with pytest.raises(ValueError, match="Y"):
        reweight(Z, y[:-1])


def _split_oracle(Z, y, lam, train, val, eta):
    """Oracle: one step by hand on ``train``, then the error on ``val``."""
    Y = np.eye(3)[y]
    g = _autodiff_gradient(jnp.ones(len(train)), Z[train], y[train], lam)
    alpha = jnp.maximum(0.0, 1.0 - eta * g / jnp.sqrt(jnp.mean(g * g)))
    W = diva_jax.fit_ridge(Z[train], Y[train], alpha, lam)
    return np.mean(np.argmax(Z[val] @ np.asarray(W), 1) != y[val])


def test_select_learning_rate_scores_held_out_parts():
    Z, y, _ = _problem(seed=11, n=80, flip=0.3)
    lam, grid = 0.5, (0.0, 0.2, 1.0)
    eta, errors = select_learning_rate(Z, y, lam=lam, grid=grid, splits=2, seed=3,
                                       return_errors=True)
    rng = np.random.default_rng(3)
    for s in range(2):
        order = rng.permutation(80)
        val, train = order[:16], order[16:]
        expected = [_split_oracle(Z, y, lam, train, val, e) for e in grid]
        np.testing.assert_allclose(errors[s], expected, atol=1e-12)
    assert eta == grid[int(np.argmin(errors.mean(0)))]


def test_select_learning_rate_prefers_no_change_on_ties_and_uses_validation():
    Z, y, _ = _problem(seed=12, flip=0.0)
    Zv, yv, _ = _problem(seed=13, flip=0.0)
    far = np.eye(3)[y] @ (50.0 * np.eye(3, 6))  # classes far apart: no errors
    eta, errors = select_learning_rate(Z + far, y, lam=0.5, return_errors=True)
    np.testing.assert_array_equal(errors, 0.0)
    assert eta == 0.0

    eta, errors = select_learning_rate(Z, y, lam=0.5, validation=(Zv, yv),
                                       return_errors=True)
    assert errors.shape == (1, 4)
    auto = reweight(Z, y, lam=0.5, validation=(Zv, yv), return_result=True)
    assert auto.learning_rate == eta
    np.testing.assert_allclose(
        auto.weights, reweight(Z, y, lam=0.5, validation=(Zv, yv),
                               learning_rate=eta), rtol=1e-12)


def test_auto_learning_rate_is_the_selected_one():
    Z, y, _ = _problem(seed=14, n=100, flip=0.3)
    eta = select_learning_rate(Z, y, lam=0.7, seed=5)
    result = reweight(Z, y, lam=0.7, seed=5, return_result=True)
    assert result.learning_rate == eta
    np.testing.assert_allclose(result.weights,
                               reweight(Z, y, lam=0.7, learning_rate=eta),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="grid"):
        select_learning_rate(Z, y, grid=(0.3, 0.1))
