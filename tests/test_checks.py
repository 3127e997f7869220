"""Bad input raises a ValueError/TypeError that names the argument."""

import numpy as np
import pytest

import diva_jax

RNG = np.random.default_rng(0)
Z, Y = RNG.standard_normal((10, 3)), RNG.integers(0, 3, 10)


def _nan_features():
    bad = Z.copy()
    bad[2, 1] = np.nan
    return bad


CASES = [
    (dict(Z=np.zeros((10,))), ValueError, "Z must have shape"),
    (dict(Z=np.zeros((0, 3)), Y=np.zeros(0, int)), ValueError, "Z is empty"),
    (dict(Z=_nan_features()), ValueError, "Z has 1 NaN"),
    (dict(Z=np.full((10, 3), np.inf)), ValueError, "Z has 30 NaN or infinite"),
    (dict(Z=np.array([["a"] * 3] * 10)), TypeError, "Z must be numeric"),
    (dict(Y=np.zeros((9,), int)), ValueError, "Y must be int labels"),
    (dict(Y=np.zeros((10, 2, 2))), ValueError, "Y must be int labels"),
    (dict(Y=np.arange(10) - 1), ValueError, "Y labels must lie"),
    (dict(Y=np.arange(10), num_classes=5), ValueError, "Y labels must lie in .0, 5."),
    (dict(Y=np.full((10, 2), np.nan)), ValueError, "Y has 20 NaN"),
    (dict(alpha=-np.ones(10)), ValueError, "alpha must be >= 0"),
    (dict(alpha=np.ones(9)), ValueError, "alpha must have shape \\(N,\\) = \\(10,\\)"),
    (dict(alpha=np.full(10, np.nan)), ValueError, "alpha has 10 NaN"),
    (dict(lam=0.0), ValueError, "lam must be a finite number > 0"),
    (dict(lam=-1.0), ValueError, "lam must be a finite number > 0"),
    (dict(lam=np.inf), ValueError, "lam must be a finite number > 0"),
    (dict(lam=np.ones(2)), ValueError, "lam must be a scalar"),
    (dict(mask=np.zeros(10, bool)), ValueError, "mask selects no sample"),
    (dict(mask=np.ones(3, bool)), ValueError, "mask must have shape"),
    (dict(method="magic"), ValueError, "method must be 'closed' or 'autodiff'"),
    (dict(solver="qr"), ValueError, "solver must be 'auto', 'primal' or 'dual'"),
    (dict(loss="hinge"), ValueError, "loss must be one of"),
    (dict(validation=np.zeros((3, 3))), TypeError, "validation must be a pair"),
    (dict(validation=(np.zeros((3, 4)), np.zeros(3, int))), ValueError,
     "Z_val must have the feature shape"),
    (dict(validation=(np.zeros((3, 3)), np.zeros(4, int))), ValueError, "Y_val must"),
    (dict(Z=np.zeros((10, 2, 3)), Y=np.zeros((10, 3))), ValueError,
     "Jacobian blocks Z \\(N, K, m\\) need targets with K=2"),
    (dict(Z=None), TypeError, "Z is required"),
]


@pytest.mark.parametrize("kwargs,error,message", CASES)
def test_dataset_derivative_rejects_bad_input(kwargs, error, message):
    args = dict(Z=Z, Y=Y, lam=1.0) | kwargs
    with pytest.raises(error, match=message):
        diva_jax.dataset_derivative(**args)


@pytest.mark.parametrize("fn", [diva_jax.loo_loss, diva_jax.loo_residuals])
def test_alpha_first_functions_check_too(fn):
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        fn(-np.ones(10), Z, Y, 1.0)
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        fn(None, Z, Y, 0.0)


def test_fit_and_select_lambda_check():
    with pytest.raises(ValueError, match="Y must be int labels"):
        diva_jax.fit_ridge(Z, Y[:5], None, 1.0)
    with pytest.raises(ValueError, match="grid must be a non-empty 1-D array"):
        diva_jax.select_lambda(Z, Y, grid=[1.0, -1.0])
    with pytest.raises(ValueError, match="labels must be 1-D ints"):
        diva_jax.one_hot(np.ones(3))


def test_int_labels_inside_jit_need_num_classes():
    import jax

    with pytest.raises(ValueError, match="pass num_classes="):
        jax.jit(lambda y: diva_jax.loo_loss(None, Z, y, 1.0))(Y)
    value = jax.jit(lambda y: diva_jax.loo_loss(None, Z, y, 1.0, num_classes=3))(Y)
    assert np.isfinite(value)


def test_non_finite_result_says_how_to_fix_it():
    huge = (np.random.default_rng(1).standard_normal((8, 64)) * 1e6).astype(np.float32)
    with pytest.raises(ValueError, match="raise lam"):
        diva_jax.dataset_derivative(huge, np.arange(8) % 2, 1e-30)
