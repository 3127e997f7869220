"""Property tests over shapes, lam and weights (hypothesis)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracles import assert_close, brute_loo_residuals

import diva_jax

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    # A few shapes (N > d, N < d, tiny) so compiled functions are reused; the
    # values, lam and the set of zero weights vary freely.
    n, d, k = draw(st.sampled_from([(2, 1, 1), (9, 3, 2), (5, 8, 3), (12, 12, 1)]))
    seed = draw(st.integers(0, 2**16))
    lam = draw(st.floats(1e-2, 1e2))
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(0.0, 3.0, n)
    zeros = draw(st.lists(st.integers(0, n - 1), max_size=n - 1))
    alpha[zeros] = 0.0
    return rng.standard_normal((n, d)), rng.standard_normal((n, k)), alpha, lam


@SETTINGS
@given(problems())
def test_loo_residuals_match_refits(problem):
    Z, Y, alpha, lam = problem
    assert_close(diva_jax.loo_residuals(alpha, Z, Y, lam),
                 brute_loo_residuals(Z, Y, alpha, lam))


@SETTINGS
@given(problems())
def test_closed_form_matches_autodiff_and_dual(problem):
    Z, Y, alpha, lam = problem
    closed = diva_jax.dataset_derivative(Z, Y, lam, alpha)
    auto = diva_jax.dataset_derivative(Z, Y, lam, alpha, method="autodiff")
    dual = diva_jax.dataset_derivative(Z, Y, lam, alpha, solver="dual")
    scale = max(float(np.abs(auto).max()), 1e-12)
    assert_close(closed, auto, scale=scale)
    assert_close(dual, auto, scale=scale * 10)


@SETTINGS
@given(problems())
def test_leverage_bounds_and_scale_invariance(problem):
    # 0 <= h_i < 1, so LOO residuals are at least the training residuals; and
    # scaling every weight and lam together leaves the fit unchanged.
    Z, Y, alpha, lam = problem
    e = np.asarray(diva_jax.loo_residuals(alpha, Z, Y, lam))
    r = Y - Z @ np.asarray(diva_jax.fit_ridge(Z, Y, alpha, lam))
    assert np.all(np.abs(e) >= np.abs(r) * (1 - 1e-9))
    e2 = diva_jax.loo_residuals(3.0 * alpha, Z, Y, 3.0 * lam)
    assert_close(e2, e, scale=max(np.abs(e).max(), 1.0))
