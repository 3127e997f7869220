"""Tests of diva_jax.detect: scores against brute-force refits, the paper's rule
against dataset_derivative, the confident joint against cleanlab, flips found on a
constructed problem, input errors, and jit against eager."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diva_jax
from diva_jax.curation._detect import (
    _scores,
    calibrated_counts,
    confident_joint,
    fit_inverse_temperature,
    largest_remainder,
    detect,
    rank_within_class,
    standardize_features,
)

RTOL = {np.float64: 1e-9, np.float32: 1e-4}


def clustered_problem(n=240, d=12, K=4, flip=0.15, seed=0):
    """Gaussian clusters (well separated) with a fraction of labels flipped."""
    rng = np.random.default_rng(seed)
    centers = 3.0 * rng.standard_normal((K, d))
    y = rng.integers(0, K, n)
    Z = centers[y] + rng.standard_normal((n, d))
    flipped = rng.random(n) < flip
    noisy = np.where(flipped, (y + rng.integers(1, K, n)) % K, y)
    return Z, noisy, flipped


def brute_force_loo(Z, y, lam, K):
    """LOO predictions by refitting the ridge N times with numpy (the oracle)."""
    Y = np.eye(K)[y]
    F = np.empty_like(Y)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        A = Z[keep].T @ Z[keep] + lam * np.eye(Z.shape[1])
        F[i] = Z[i] @ np.linalg.solve(A, Z[keep].T @ Y[keep])
    return F


def test_scores_match_brute_force_refits():
    Z, y, _ = clustered_problem(n=40, d=5, K=4)
    lam, K = 0.7, 4
    F = brute_force_loo(Z, y, lam, K)
    idx = np.arange(len(y))
    other = np.where(np.eye(K)[y] > 0, -np.inf, F).max(1)
    Y = np.eye(K)[y]
    beta = float(fit_inverse_temperature(jnp.asarray(F), jnp.asarray(Y)))
    logits = beta * F
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = {
        "margin": other - F[idx, y],
        "self_confidence": -log_p[idx, y],
        "residual": np.sum((Y - F) ** 2, 1),
    }
    for method, want in expected.items():
        got = detect(Z, y, lam=lam, method=method, standardize="none")
        np.testing.assert_allclose(got.scores, want, rtol=RTOL[np.float64], atol=1e-12)
        np.testing.assert_allclose(got.predictions, F, rtol=1e-9, atol=1e-12)


def test_inverse_temperature_matches_scipy():
    from scipy.optimize import minimize_scalar

    Z, y, _ = clustered_problem(n=40, d=5, K=4)
    F = brute_force_loo(Z, y, 0.7, 4)
    Y = np.eye(4)[y]

    def loss(log_beta):
        logits = np.exp(log_beta) * F
        logits -= logits.max(1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        return -np.mean(np.sum(Y * log_p, 1))

    want = minimize_scalar(loss, bounds=(-4, 9), method="bounded",
                           options={"xatol": 1e-10}).x
    got = fit_inverse_temperature(jnp.asarray(F), jnp.asarray(Y))
    np.testing.assert_allclose(np.log(float(got)), want, atol=1e-6)


def test_paper_rule_is_derivative_above_zero():
    Z, y, _ = clustered_problem()
    lam = 2.0
    result = detect(Z, y, lam=lam, method="derivative", standardize="none")
    grad = diva_jax.dataset_derivative(Z, y, lam)
    np.testing.assert_allclose(result.scores, grad, rtol=1e-10, atol=1e-15)
    np.testing.assert_array_equal(result.flags, np.asarray(grad) > 0)
    eps = float(np.median(np.asarray(grad)))
    shifted = detect(Z, y, lam=lam, method="derivative", standardize="none",
                     threshold=eps)
    np.testing.assert_array_equal(shifted.flags, np.asarray(grad) > eps)


@pytest.mark.parametrize("method", ["self_confidence", "margin", "derivative"])
@pytest.mark.parametrize("flag_rule", ["confident", "argmax", "threshold"])
def test_scores_flags_ranking_consistent(method, flag_rule):
    Z, y, _ = clustered_problem(seed=1)
    r = detect(Z, y, method=method, flag_rule=flag_rule)
    scores, flags, ranking = (np.asarray(a) for a in (r.scores, r.flags, r.ranking))
    assert scores.shape == flags.shape == ranking.shape == (len(y),)
    assert flags.dtype == bool
    np.testing.assert_array_equal(np.sort(ranking), np.arange(len(y)))
    assert np.all(np.diff(scores[ranking]) <= 0)
    margin_pos = np.asarray(detect(Z, y, lam=r.lam, method="margin").scores) > 0
    if flag_rule == "threshold":
        np.testing.assert_array_equal(flags, scores > 0)
    elif flag_rule == "argmax":
        np.testing.assert_array_equal(flags, margin_pos)
    else:
        np.testing.assert_array_equal(flags, confident_oracle(r.predictions, y, 4))
        assert not np.any(flags & ~margin_pos)


def confident_oracle(F, y, K):
    """The "confident" rule written out with loops in numpy (the oracle)."""
    F = np.asarray(F)
    t = np.array([F[y == j, j].mean() for j in range(K)])
    C = np.zeros((K, K))
    for i in range(len(y)):
        above = np.flatnonzero(F[i] >= t)
        if above.size:
            C[y[i], above[np.argmax(F[i, above])]] += 1
    C = C / C.sum(1, keepdims=True) * np.bincount(y, minlength=K)[:, None]
    flags = np.zeros(len(y), bool)
    for k in range(K):
        off = np.where(np.arange(K) == k, 0.0, C[k])
        n_kj = np.floor(off)
        extra = int(np.round(off.sum()) - n_kj.sum())
        n_kj[np.argsort(-(off - n_kj), kind="stable")[:extra]] += 1
        members = np.flatnonzero(y == k)
        for j in range(K):
            if j != k:
                cell = F[members, j] - F[members, k]
                flags[members[np.argsort(-cell, kind="stable")[:int(n_kj[j])]]] = True
    return flags & (F.argmax(1) != y)


def test_constructed_problem_flips_are_found():
    Z, y, flipped = clustered_problem(flip=0.2, seed=3)
    from sklearn.metrics import f1_score, roc_auc_score

    r = detect(Z, y)
    assert roc_auc_score(flipped, r.scores) > 0.98
    assert f1_score(flipped, r.flags) > 0.9
    top = np.asarray(r.ranking)[: flipped.sum() // 2]
    assert flipped[top].mean() > 0.95


def test_confident_joint_matches_cleanlab():
    count = pytest.importorskip("cleanlab.count")
    rng = np.random.default_rng(0)
    n, K = 500, 6
    y = rng.integers(0, K, n)
    logits = 2.0 * np.eye(K)[y] + rng.standard_normal((n, K))
    P = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    want = count.compute_confident_joint(y, P, calibrate=False)
    got = np.asarray(confident_joint(jnp.asarray(P), jnp.eye(K)[y]))
    off = ~np.eye(K, dtype=bool)
    np.testing.assert_array_equal(got[off], want[off])
    np.testing.assert_array_equal(np.maximum(np.diag(got), 1), np.diag(want))
    C = got / got.sum(1, keepdims=True) * np.bincount(y, minlength=K)[:, None]
    counts = np.asarray(calibrated_counts(jnp.asarray(P), jnp.eye(K)[y]))
    np.testing.assert_array_equal(np.diag(counts), 0)
    np.testing.assert_array_equal(counts.sum(1), np.round(C.sum(1) - np.diag(C)))
    assert np.all(np.abs(counts - np.where(np.eye(K) > 0, 0, C)) < 1)


def test_largest_remainder_keeps_row_totals():
    C = jnp.array([[9.0, 0.4, 0.4, 0.4], [0.2, 5.0, 2.5, 0.3], [1.6, 1.6, 0.0, 0.0],
                   [0.0, 0.0, 0.0, 7.0]])
    np.testing.assert_array_equal(largest_remainder(C), [
        [0, 1, 0, 0], [0, 0, 3, 0], [2, 1, 0, 0], [0, 0, 0, 0]])


def test_rank_within_class_against_numpy():
    rng = np.random.default_rng(1)
    scores, labels = rng.standard_normal(50), rng.integers(0, 4, 50)
    got = np.asarray(rank_within_class(jnp.asarray(scores), jnp.asarray(labels), 4))
    for i in range(50):
        same = labels == labels[i]
        assert got[i] == np.sum(scores[same] > scores[i])


def test_standardize_l2_rows():
    Z = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(standardize_features(Z), [[0.6, 0.8], [0, 0], [1, 0]])
    np.testing.assert_array_equal(standardize_features(Z, "none"), Z)


def test_lam_defaults_to_loo_choice():
    Z, y, _ = clustered_problem(seed=2)
    r = detect(Z, y)
    Zs = standardize_features(Z)
    assert r.lam == diva_jax.select_lambda(Zs, jax.nn.one_hot(y, 4, dtype=Zs.dtype))


def test_iterations_drop_flagged_and_rescore():
    Z, y, _ = clustered_problem(seed=4)
    once = detect(Z, y, lam=1.0)
    twice = detect(Z, y, lam=1.0, iterations=1)
    Zs = standardize_features(Z)
    alpha = jnp.where(once.flags, 0.0, 1.0)
    F = diva_jax.loo_predictions(alpha, Zs, y, 1.0, num_classes=4)
    np.testing.assert_allclose(twice.predictions, F, rtol=1e-9, atol=1e-12)

    paper = detect(Z, y, lam=1.0, method="derivative")
    paper2 = detect(Z, y, lam=1.0, method="derivative", iterations=1)
    alpha = jnp.where(paper.flags, 0.0, 1.0)
    grad = diva_jax.dataset_derivative(Zs, y, 1.0, alpha, mask=alpha)
    np.testing.assert_allclose(paper2.scores, grad, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("method", ["self_confidence", "derivative"])
def test_jit_matches_eager(method):
    Z, y, _ = clustered_problem(n=40, d=5, seed=5)
    Z, Y = jnp.asarray(Z), jax.nn.one_hot(y, 4)
    alpha = jnp.ones(len(y))
    jitted = _scores(alpha, Z, Y, 1.5, method)
    with jax.disable_jit():
        eager = _scores(alpha, Z, Y, 1.5, method)
    # beta sits at a flat minimum: it is found to about sqrt(eps) relative,
    # so the compiled and eager searches may end a few ulps of the loss apart.
    rtol = 1e-6 if method == "self_confidence" else 1e-10
    np.testing.assert_allclose(jitted[0], eager[0], rtol=rtol, atol=1e-14)
    np.testing.assert_allclose(jitted[1], eager[1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("method, rtol", [
    ("margin", RTOL[np.float32]),
    # beta is found to about sqrt(eps) of float32 (a flat minimum)
    ("self_confidence", 10 * np.sqrt(np.finfo(np.float32).eps)),
])
def test_float32_close_to_float64(method, rtol):
    Z, y, _ = clustered_problem(seed=6)
    r64 = detect(Z, y, lam=1.0, method=method)
    r32 = detect(Z.astype(np.float32), y, lam=1.0, method=method)
    assert r32.scores.dtype == jnp.float32
    np.testing.assert_allclose(r32.scores, r64.scores, rtol=rtol, atol=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "loss"}, "method must be one of"),
    ({"flag_rule": "top"}, "flag_rule must be"),
    ({"standardize": "zscore"}, "standardize must be one of"),
    ({"iterations": -1}, "iterations must be an int"),
    ({"lam": -1.0}, "lam must be a finite number > 0"),
    ({"num_classes": 2}, r"labels must lie in \[0, 2\)"),
])
def test_bad_options_raise(kwargs, match):
    Z, y, _ = clustered_problem(n=40)
    with pytest.raises(ValueError, match=match):
        detect(Z, y, **kwargs)


def test_bad_inputs_raise():
    Z, y, _ = clustered_problem(n=40)
    with pytest.raises(ValueError, match=r"labels must be int class labels"):
        detect(Z, y[:-1])
    with pytest.raises(ValueError, match=r"labels must be int class labels"):
        detect(Z, y.astype(float))
    with pytest.raises(ValueError, match=r"labels must lie in"):
        detect(Z, np.where(np.arange(40) == 0, -1, y))
    with pytest.raises(ValueError, match=r"features must have shape \(N, d\)"):
        detect(Z.reshape(40, 2, -1), y)
    with pytest.raises(ValueError, match="NaN or infinite"):
        detect(np.where(np.arange(40)[:, None] == 3, np.nan, Z), y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        detect(Z, np.zeros(40, int))
    with pytest.raises(TypeError, match="features is required"):
        detect(None, y)
