"""DIVA Extend and uniform selection against the derivative and brute-force refits."""

import jax.numpy as jnp
import numpy as np
import pytest

import diva_jax
from diva_jax.curation import extend, uniform_extend
from diva_jax.curation._extend import _value_and_gradient

K = 3


def _clusters(rng, n, d, centers, flip=0.0, shift=0.0):
    labels = rng.integers(0, K, n)
    Z = centers[labels] + shift + 0.8 * rng.standard_normal((n, d))
    wrong = rng.random(n) < flip
    return Z, np.where(wrong, (labels + 1) % K, labels), wrong


def _core_and_pool(seed=0, n_core=30, n_pool=40, d=5, pool_flip=0.4):
    """A small clean core set and a pool where ``pool_flip`` of the labels are
    wrong."""
    rng = np.random.default_rng(seed)
    centers = 2.0 * rng.standard_normal((K, d))
    Zc, yc, _ = _clusters(rng, n_core, d, centers)
    Zp, yp, wrong = _clusters(rng, n_pool, d, centers, flip=pool_flip)
    return Zc, yc, Zp, yp, wrong


def _merged(Zc, yc, Zp, yp):
    Z = np.concatenate([Zc, Zp])
    return Z, diva_jax.one_hot(np.concatenate([yc, yp]), K), len(yc)


def _loss_with(Z, Y, lam, num_core, added, scored):
    """Oracle: LOO loss of a refit with the core and ``added`` at weight 1,
    scoring the core and ``scored``."""
    alpha = np.zeros(len(Z))
    alpha[:num_core] = 1
    alpha[num_core + np.asarray(added, int)] = 1
    mask = np.zeros(len(Z))
    mask[:num_core] = 1
    mask[num_core + np.asarray(scored, int)] = 1
    return float(diva_jax.loo_loss(alpha, Z, Y, lam, mask))


def test_first_pick_is_the_most_negative_pool_derivative():
    Zc, yc, Zp, yp, _ = _core_and_pool()
    Z, Y, n = _merged(Zc, yc, Zp, yp)
    lam = 0.5
    alpha = np.r_[np.ones(n), np.zeros(len(yp))]
    g = diva_jax.dataset_derivative(Z, Y, lam, alpha, mask=alpha)

    result = extend(Zc, yc, Zp, yp, k=1, lam=lam, max_rounds=1)
    assert result.order[0] == int(np.argmin(g[n:]))
    np.testing.assert_allclose(result.pool_derivative, g[n:], rtol=1e-9, atol=1e-14)


def test_first_pick_helps_more_than_a_random_pool_sample_by_refit():
    """Brute force: refit with each pool sample added, score the core."""
    Zc, yc, Zp, yp, wrong = _core_and_pool(seed=1)
    Z, Y, n = _merged(Zc, yc, Zp, yp)
    lam = 0.5
    base = _loss_with(Z, Y, lam, n, [], [])
    gains = np.array([_loss_with(Z, Y, lam, n, [j], []) - base
                      for j in range(len(yp))])

    first = extend(Zc, yc, Zp, yp, k=1, lam=lam, max_rounds=1).order[0]
    assert gains[first] < 0
    assert gains[first] < gains.mean()
    assert not wrong[first]
    assert gains[first] <= np.quantile(gains, 0.1)


def test_rounds_add_k_samples_and_the_objective_matches_refits():
    Zc, yc, Zp, yp, _ = _core_and_pool(seed=2)
    Z, Y, n = _merged(Zc, yc, Zp, yp)
    lam, k = 0.4, 3
    result = extend(Zc, yc, Zp, yp, k=k, lam=lam, max_rounds=4)

    assert len(result.objective) == len(result.num_added) == 5
    assert np.all(np.diff(result.num_added) <= k)
    assert len(set(result.order.tolist())) == len(result.order)
    for r, m in enumerate(result.num_added):
        added = result.order[:m]
        expected = _loss_with(Z, Y, lam, n, added, added)
        np.testing.assert_allclose(result.objective[r], expected, rtol=1e-10)
    np.testing.assert_array_equal(result.rounds, np.repeat(np.arange(1, 5), k))
    np.testing.assert_array_equal(result.alpha[n:], result.pool_weights())


def test_stops_when_no_pool_derivative_is_negative():
    Zc, yc, Zp, yp, _ = _core_and_pool(seed=3, pool_flip=0.5)
    Z, Y, n = _merged(Zc, yc, Zp, yp)
    lam = 0.5
    result = extend(Zc, yc, Zp, yp, k=2, lam=lam)
    assert result.stop_reason == "no_negative_derivative"
    assert 0 < len(result.order) < len(yp)

    mask = result.alpha.copy()
    g = np.asarray(diva_jax.dataset_derivative(Z, Y, lam, result.alpha, mask))
    remaining = np.setdiff1d(np.arange(len(yp)), result.order)
    assert np.all(g[n + remaining] >= 0)


def test_scoring_the_core_alone():
    Zc, yc, Zp, yp, _ = _core_and_pool(seed=4)
    Z, Y, n = _merged(Zc, yc, Zp, yp)
    lam = 0.5
    result = extend(Zc, yc, Zp, yp, k=2, lam=lam, max_rounds=3, score_added=False)
    for r, m in enumerate(result.num_added):
        expected = _loss_with(Z, Y, lam, n, result.order[:m], [])
        np.testing.assert_allclose(result.objective[r], expected, rtol=1e-10)

    # Round 2 picks the most negative derivatives with the core alone scored.
    alpha = np.r_[np.ones(n), np.zeros(len(yp))]
    core = alpha.copy()
    alpha[n + result.order[:2]] = 1
    g = np.array(diva_jax.dataset_derivative(Z, Y, lam, alpha, core))[n:]
    g[result.order[:2]] = np.inf
    np.testing.assert_array_equal(np.sort(result.order[2:4]),
                                  np.sort(np.argsort(g)[:2]))


def test_lam_is_chosen_once_on_the_core_by_default():
    Zc, yc, Zp, yp, _ = _core_and_pool(seed=12, n_core=20, n_pool=30)
    result = extend(Zc, yc, Zp, yp, k=3, max_rounds=3)
    expected = diva_jax.select_lambda(Zc, diva_jax.one_hot(yc, K))
    np.testing.assert_array_equal(result.lams, np.full(4, expected))
    assert result.lam == expected


@pytest.mark.parametrize("score_added", [True, False])
def test_lam_is_chosen_again_at_every_round_on_the_objective(score_added):
    """Each round's lam is the grid point of lowest objective at that round's
    weights, and the objective matches a refit at it."""
    Zc, yc, Zp, yp, _ = _core_and_pool(seed=11, n_core=12, n_pool=40, d=6)
    Z, Y, n = _merged(Zc, yc, Zp, yp)
    result = extend(Zc, yc, Zp, yp, k=4, max_rounds=4, score_added=score_added,
                    reselect_lam=True)
    assert result.lams.shape == result.objective.shape
    assert result.lam == result.lams[-1]
    for r, m in enumerate(result.num_added):
        added = result.order[:m]
        alpha = np.r_[np.ones(n), result.pool_weights(m)]
        scored = alpha if score_added else np.r_[np.ones(n), np.zeros(len(yp))]
        lam, grid, losses = diva_jax.select_lambda(Z, Y, alpha, scored,
                                                   return_losses=True)
        assert result.lams[r] == lam
        expected = _loss_with(Z, Y, lam, n, added, added if score_added else [])
        np.testing.assert_allclose(result.objective[r], expected, rtol=1e-10)
        np.testing.assert_allclose(result.objective[r], losses.min(), rtol=1e-8)
    assert len(set(result.lams.tolist())) > 1

    uniform = uniform_extend(Zc, yc, Zp, yp, k=4, max_rounds=2, seed=3,
                             reselect_lam=True)
    for r, m in enumerate(uniform.num_added):
        alpha = np.r_[np.ones(n), uniform.pool_weights(m)]
        assert uniform.lams[r] == diva_jax.select_lambda(Z, Y, alpha, alpha)


def test_balanced_rounds_take_the_best_of_each_class_in_turn():
    """Oracle: round-robin over classes, each class's pool derivatives ranked,
    classes ordered by their best."""
    Zc, yc, Zp, yp, _ = _core_and_pool(seed=13, n_pool=60, pool_flip=0.0)
    Z, Y, n = _merged(Zc, yc, Zp, yp)
    lam = 0.5
    result = extend(Zc, yc, Zp, yp, k=5, lam=lam, max_rounds=1,
                    balance_classes=True)
    g = np.asarray(diva_jax.dataset_derivative(
        Z, Y, lam, np.r_[np.ones(n), np.zeros(len(yp))],
        np.r_[np.ones(n), np.zeros(len(yp))]))[n:]
    queues = [sorted((j for j in range(len(yp)) if yp[j] == c and g[j] < 0),
                     key=lambda j: g[j]) for c in range(K)]
    expected = []
    for rank in range(max(map(len, queues))):
        tier = [q[rank] for q in queues if rank < len(q)]
        expected += sorted(tier, key=lambda j: g[j])
    np.testing.assert_array_equal(result.order, expected[:5])
    assert len(set(yp[result.order[:K]])) == K


def test_budgets_are_respected():
    Zc, yc, Zp, yp, _ = _core_and_pool(seed=5, pool_flip=0.0)
    result = extend(Zc, yc, Zp, yp, k=4, lam=0.5, max_added=6)
    assert len(result.order) == 6 and result.stop_reason == "max_added"
    result = extend(Zc, yc, Zp, yp, k=4, lam=0.5, max_rounds=0)
    assert len(result.order) == 0 and result.objective.shape == (1,)


def test_rounds_do_not_recompile():
    Zc, yc, Zp, yp, _ = _core_and_pool(seed=6, n_core=23, n_pool=31)
    before = _value_and_gradient._cache_size()
    result = extend(Zc, yc, Zp, yp, k=1, lam=0.5, max_rounds=5)
    assert len(result.objective) == 6
    assert _value_and_gradient._cache_size() == before + 1
    uniform_extend(Zc, yc, Zp, yp, k=2, lam=0.5, max_rounds=5)
    assert _value_and_gradient._cache_size() == before + 1


def test_uniform_extend_follows_a_seeded_permutation():
    Zc, yc, Zp, yp, _ = _core_and_pool(seed=7)
    Z, Y, n = _merged(Zc, yc, Zp, yp)
    result = uniform_extend(Zc, yc, Zp, yp, k=5, lam=0.5, max_rounds=3, seed=11)
    expected = np.random.default_rng(11).permutation(len(yp))[:15]
    np.testing.assert_array_equal(result.order, expected)
    for r, m in enumerate(result.num_added):
        added = result.order[:m]
        np.testing.assert_allclose(
            result.objective[r], _loss_with(Z, Y, 0.5, n, added, added), rtol=1e-10)
    whole = uniform_extend(Zc, yc, Zp, yp, k=15, lam=0.5)
    assert whole.stop_reason == "pool_exhausted"
    assert sorted(whole.order.tolist()) == list(range(len(yp)))


def test_clean_core_skips_wrong_labels_in_the_pool():
    Zc, yc, Zp, yp, wrong = _core_and_pool(seed=8, n_pool=80, pool_flip=0.3)
    result = extend(Zc, yc, Zp, yp, k=2, score_added=False)
    assert 0 < len(result.order) < len(yp)
    assert wrong[result.order].mean() < 0.5 * wrong.mean()


def test_multimodal_pool_keeps_the_helpful_cluster():
    """A second modality in the same space (say text embeddings of class names):
    one cluster lies on the images of its own class (helpful), another on the
    images of the next class (harmful)."""
    rng = np.random.default_rng(0)
    d, classes = 8, 4
    centers = 1.5 * rng.standard_normal((classes, d))
    yc = np.arange(40) % classes
    Zc = centers[yc] + rng.standard_normal((40, d))
    names = np.arange(24) % classes
    helpful = centers[names] + 0.2 * rng.standard_normal((24, d))
    harmful = centers[(names + 1) % classes] + 0.2 * rng.standard_normal((24, d))
    Zp, yp = np.concatenate([helpful, harmful]), np.concatenate([names, names])

    result = extend(Zc, yc, Zp, yp, k=2)
    assert np.all(result.order[:12] < 24)
    assert np.sum(result.order < 24) >= 20 and np.sum(result.order >= 24) <= 8
    Z, Y, n = np.concatenate([Zc, Zp]), diva_jax.one_hot(np.r_[yc, yp]), len(yc)
    for lam in result.lams[[0, -1]]:
        everything = _loss_with(Z, Y, lam, n, np.arange(48), np.arange(48))
        assert result.objective[-1] < result.objective[0] < everything


def test_soft_targets_and_float32():
    Zc, yc, Zp, yp, _ = _core_and_pool(seed=10)
    a = extend(Zc, yc, Zp, yp, k=2, lam=0.5, max_rounds=3)
    b = extend(Zc.astype(np.float32), np.eye(K)[yc], Zp.astype(np.float32),
               np.eye(K)[yp], k=2, lam=0.5, max_rounds=3)
    np.testing.assert_array_equal(a.order, b.order)
    np.testing.assert_allclose(a.objective, b.objective, rtol=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k"), ({"max_rounds": -1}, "max_rounds"), ({"lam": 0.0}, "lam"),
    ({"lam": 1.0, "reselect_lam": True}, "reselect_lam"),
])
def test_bad_options(kwargs, match):
    Zc, yc, Zp, yp, _ = _core_and_pool()
    with pytest.raises(ValueError, match=match):
        extend(Zc, yc, Zp, yp, **kwargs)


def test_pool_in_another_space_is_rejected():
    Zc, yc, Zp, yp, _ = _core_and_pool()
    with pytest.raises(ValueError, match="pool_features"):
        extend(Zc, yc, Zp[:, :3], yp)
    with pytest.raises(ValueError, match="pool_labels"):
        extend(Zc, yc, Zp, yp[:-1])
    with pytest.raises(ValueError, match="pool_labels"):
        extend(Zc, jnp.eye(K)[yc], Zp, jnp.eye(K + 1)[yp])
