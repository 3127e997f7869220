"""The reweighting baselines of the paper's Table 1, and the shared evaluation.

Both baselines train a linear softmax head ``f(z) = W^T z + b`` by minibatch SGD
(``optax.sgd`` with momentum 0.9), which is what their papers do to a network,
and return per-sample weights. Every method is then judged the same way: a
weighted ridge head trained with its weights (:func:`ridge_test_error`).

* Ren et al. 2018, "Learning to reweight examples for robust deep learning":
  at each SGD step, weights are the negative meta-gradient of the validation
  loss after a one-step lookahead, clipped at 0 and normalised over the batch.
* Chang et al. 2017, "Active bias": weights ``p_bar (1 - p_bar) + eps`` from the
  history of predicted probabilities of each sample's label (threshold
  closeness, SGD-WTC), emphasising samples near the decision threshold.

Hyper-parameters (defaults, used for the paper's table on digits):
``epochs=30``, ``batch_size=100`` (Ren et al.'s batch size), learning rate
``0.5 / mean_i ||z_i||^2`` (a scale-free step: the softmax loss has curvature
at most ``||z||^2 / 2`` per sample), momentum 0.9, no weight decay (the weights,
not the SGD head, are what is evaluated, by a ridge head with its own ``lam``).
Active bias uses 5 burn-in epochs with uniform weights, as its paper does
before weighting starts, and ``eps`` equal to the mean score (our choice: it
bounds the ratio of largest to smallest weight by about 1 + 0.25 / eps).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float
from tqdm.auto import tqdm

from diva_jax import _checks
from diva_jax._lambda import select_lambda
from diva_jax._losses import resolve_loss
from diva_jax._loo import fit_ridge


def ridge_test_error(
    features: ArrayLike, labels: ArrayLike, weights: ArrayLike | None,
    test_features: ArrayLike, test_labels: ArrayLike, *, lam: float | None = None,
    num_classes: int | None = None,
) -> float:
    """Test error of the weighted ridge head: the evaluation shared by all methods.

    Fits ``W = (Z^T D Z + lam I)^{-1} Z^T D Y`` (paper eq. 6) on one-hot labels
    and predicts ``argmax_k (Z_test W)_k``.

    Args:
      features, labels: (N, d) training features and (N,) int labels.
      weights: (N,) sample weights ``alpha >= 0``; None for ones.
      test_features, test_labels: (N_test, d) and (N_test,).
      lam: ridge strength; ``select_lambda(features, labels)`` (unweighted)
        when None, so that every method is compared at the same ``lam``.
      num_classes: K; from the labels when None.

    Returns:
      The fraction of misclassified test samples.
    """
    test_labels = np.asarray(test_labels)
    if num_classes is None:
        num_classes = int(max(np.max(labels), np.max(test_labels))) + 1
    lam = select_lambda(features, labels, num_classes=num_classes) if lam is None \
        else lam
    W = fit_ridge(features, labels, weights, lam, num_classes=num_classes)
    Z_test = _checks.check_features(test_features, "test_features")
    predictions = np.argmax(np.asarray(Z_test @ W.astype(Z_test.dtype)), 1)
    return float(np.mean(predictions != test_labels))


class SoftmaxHead(NamedTuple):
    """A linear head ``f(z) = W^T z + b``."""

    W: Float[Array, "d K"]
    b: Float[Array, " K"]


def per_sample_loss(params: SoftmaxHead, Z, Y, loss) -> Float[Array, " n"]:
    """``l(f(z_i), y_i)`` for each row of ``Z`` (n, d) and ``Y`` (n, K)."""
    return jax.vmap(loss)(Z @ params.W + params.b[None, :], Y)


def default_learning_rate(Z) -> float:
    """``0.5 / mean_i ||z_i||^2``: a step the softmax head tolerates at any scale."""
    return 0.5 / max(float(jnp.mean(jnp.sum(Z * Z, 1))), 1e-12)


def _init(Z, Y, learning_rate):
    params = SoftmaxHead(jnp.zeros((Z.shape[1], Y.shape[1]), Z.dtype),
                         jnp.zeros(Y.shape[1], Z.dtype))
    lr = default_learning_rate(Z) if learning_rate is None else learning_rate
    return params, lr


def _batches(rng, n, batch_size):
    """Index arrays of one epoch: a permutation cut into full batches."""
    size = min(batch_size, n)
    order = rng.permutation(n)
    return order[: n - n % size].reshape(-1, size)


def _prepare(features, labels, num_classes, batch_size, epochs):
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}.")
    if not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1; got {epochs!r}.")
    Z = _checks.check_features(features, "features")
    if Z.ndim != 2:
        raise ValueError(f"features must be (N, d); got shape {Z.shape}.")
    Y = _checks.check_targets(labels, Z.shape[0], Z.dtype, num_classes=num_classes,
                              name="labels")
    return Z, Y


def ren_batch_weights(
    params: SoftmaxHead, Z_batch, Y_batch, Z_val, Y_val, *, step_size: float,
    loss="cross_entropy",
) -> Float[Array, " B"]:
    """Ren et al.'s weights of one batch: the one-step lookahead meta-gradient.

    With ``theta_hat(eps) = theta - step_size * grad sum_i eps_i l_i(theta)``,
    ``u = -d L_val(theta_hat(eps)) / d eps`` at ``eps = 0``; the weights are
    ``max(u, 0) / sum_j max(u_j, 0)`` (all zero when no ``u_j`` is positive).
    To first order ``u_i = step_size * grad l_i . grad L_val``: a sample whose
    gradient disagrees with the validation gradient gets weight 0.

    Args:
      params: the current head.
      Z_batch, Y_batch: (B, d) features and (B, K) targets of the batch.
      Z_val, Y_val: (V, d) and (V, K) of the held-out set.
      step_size: the SGD step of the lookahead.
      loss: per-sample loss of the head (``"cross_entropy"`` or ``"squared"``).

    Returns:
      (B,) weights ``>= 0`` that sum to 1 (or are all 0).
    """
    loss = resolve_loss(loss)

    def validation_after_step(eps):
        def train(p):
            return jnp.sum(eps * per_sample_loss(p, Z_batch, Y_batch, loss))

        g = jax.grad(train)(params)
        ahead = jax.tree.map(lambda p, gp: p - step_size * gp, params, g)
        return jnp.mean(per_sample_loss(ahead, Z_val, Y_val, loss))

    u = -jax.grad(validation_after_step)(jnp.zeros(Z_batch.shape[0], Z_batch.dtype))
    w = jnp.maximum(u, 0.0)
    total = jnp.sum(w)
    return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 0.0)


@partial(jax.jit, static_argnames=("optimizer", "loss"))
def _ren_step(params, opt_state, Zb, Yb, Zv, Yv, step_size, optimizer, loss):
    w = ren_batch_weights(params, Zb, Yb, Zv, Yv, step_size=step_size, loss=loss)

    def weighted(p):
        return jnp.sum(w * per_sample_loss(p, Zb, Yb, resolve_loss(loss)))

    updates, opt_state = optimizer.update(jax.grad(weighted)(params), opt_state,
                                          params)
    return optax.apply_updates(params, updates), opt_state, w


class RenResult(NamedTuple):
    """Learning to reweight (Ren et al. 2018).

    Attributes:
      weights: (N,) per-sample weights: on the training part, the mean over
        its batches of the batch weight times the batch size (mean 1 per
        batch); ``validation_weight`` on the held-out part.
      is_validation: (N,) bool, the held-out 20% used by the meta-gradient.
      head: the softmax head trained with the weights.
    """

    weights: np.ndarray
    is_validation: np.ndarray
    head: SoftmaxHead


def learning_to_reweight(
    features: ArrayLike, labels: ArrayLike, *, validation_fraction: float = 0.2,
    epochs: int = 30, batch_size: int = 100, learning_rate: float | None = None,
    momentum: float = 0.9, validation_weight: float = 1.0, loss="cross_entropy",
    num_classes: int | None = None, seed: int = 0, return_result: bool = False,
    progress: bool = False,
):
    """Ren et al. 2018's learning to reweight, on a linear softmax head.

    A random ``validation_fraction`` of the training set is held out. The head
    is trained by SGD on the rest; at every step the batch is weighted by
    :func:`ren_batch_weights` against the whole held-out set (small here, so
    one batch). The final training uses all samples: the held-out ones with
    ``validation_weight`` (1 by default; 0 trains on the reweighted 80% only).

    Args:
      features: (N, d) features. labels: (N,) int labels.
      validation_fraction: share of samples held out for the meta-gradient.
      epochs, batch_size, learning_rate, momentum: SGD settings (see module).
      validation_weight: weight of the held-out samples in the result.
      loss: ``"cross_entropy"`` (the papers' setting) or ``"squared"``.
      num_classes: K. seed: seed of the split and the batches.
      return_result: return a :class:`RenResult` instead of the weights.
      progress: show a tqdm bar of the epochs.

    Returns:
      (N,) weights, or a :class:`RenResult`.
    """
    Z, Y = _prepare(features, labels, num_classes, batch_size, epochs)
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1); got "
                         f"{validation_fraction}.")
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(validation_fraction * Z.shape[0])))
    is_val = np.zeros(Z.shape[0], bool)
    is_val[rng.permutation(Z.shape[0])[:n_val]] = True
    train = np.flatnonzero(~is_val)

    params, lr = _init(Z, Y, learning_rate)
    optimizer = optax.sgd(lr, momentum=momentum)
    opt_state = optimizer.init(params)
    total, seen = np.zeros(Z.shape[0]), np.zeros(Z.shape[0])
    for _ in tqdm(range(epochs), desc="Ren et al.", disable=not progress):
        for batch in train[_batches(rng, train.size, batch_size)]:
            params, opt_state, w = _ren_step(params, opt_state, Z[batch], Y[batch],
                                             Z[is_val], Y[is_val], lr, optimizer, loss)
            total[batch] += np.asarray(w) * batch.size
            seen[batch] += 1

    weights = np.where(is_val, validation_weight, total / np.maximum(seen, 1))
    return RenResult(weights, is_val, params) if return_result else weights


def threshold_closeness(p_bar: ArrayLike) -> np.ndarray:
    """Chang et al.'s score ``p_bar (1 - p_bar)``: largest (1/4) at ``p_bar = 1/2``."""
    p_bar = np.asarray(p_bar)
    return p_bar * (1.0 - p_bar)


def active_bias_weights(p_bar: ArrayLike, smoothness: float | None = None):
    """Weights ``p_bar (1 - p_bar) + eps`` normalised to mean 1.

    ``p_bar`` (N,) is each sample's mean predicted probability of its label;
    ``eps`` (the smoothness constant) is the mean score when None.
    """
    score = threshold_closeness(p_bar)
    eps = float(np.mean(score)) if smoothness is None else smoothness
    if eps < 0:
        raise ValueError(f"smoothness must be >= 0; got {smoothness}.")
    weights = score + eps
    mean = float(np.mean(weights))
    return weights / mean if mean > 0 else np.ones_like(weights)


@partial(jax.jit, static_argnames=("optimizer", "loss"))
def _weighted_step(params, opt_state, Zb, Yb, wb, optimizer, loss):
    """One SGD step on ``mean_b w_b l_b``; also ``p(y_b | z_b)`` before the step."""
    probability = jnp.sum(jax.nn.softmax(Zb @ params.W + params.b[None, :]) * Yb, 1)

    def weighted(p):
        return jnp.mean(wb * per_sample_loss(p, Zb, Yb, resolve_loss(loss)))

    updates, opt_state = optimizer.update(jax.grad(weighted)(params), opt_state,
                                          params)
    return optax.apply_updates(params, updates), opt_state, probability


class ActiveBiasResult(NamedTuple):
    """Active bias (Chang et al. 2017), threshold closeness.

    Attributes:
      weights: (N,) weights from the whole prediction history, mean 1.
      mean_probability: (N,) ``p_bar``: mean predicted probability of the
        label over the times the sample was visited.
      head: the softmax head trained with the weights.
    """

    weights: np.ndarray
    mean_probability: np.ndarray
    head: SoftmaxHead


def active_bias(
    features: ArrayLike, labels: ArrayLike, *, epochs: int = 30,
    burn_in: int = 5, batch_size: int = 100, learning_rate: float | None = None,
    momentum: float = 0.9, smoothness: float | None = None, loss="cross_entropy",
    num_classes: int | None = None, seed: int = 0, return_result: bool = False,
    progress: bool = False,
):
    """Chang et al. 2017's active bias (SGD weighted by threshold closeness).

    A softmax head is trained by SGD; each time a sample is visited, the
    probability the head gives its label is appended to its history. After
    ``burn_in`` epochs with uniform weights, each epoch's loss weights are
    :func:`active_bias_weights` of the history so far. The returned weights
    use the whole history and are meant to retrain the head
    (:func:`ridge_test_error`).

    Args:
      features: (N, d) features. labels: (N,) int labels.
      epochs, burn_in, batch_size, learning_rate, momentum: SGD settings.
      smoothness: ``eps`` of :func:`active_bias_weights`.
      loss: ``"cross_entropy"`` or ``"squared"``.
      num_classes: K. seed: seed of the batches.
      return_result: return an :class:`ActiveBiasResult` instead.
      progress: show a tqdm bar of the epochs.

    Returns:
      (N,) weights with mean 1, or an :class:`ActiveBiasResult`.
    """
    Z, Y = _prepare(features, labels, num_classes, batch_size, epochs)
    rng = np.random.default_rng(seed)
    params, lr = _init(Z, Y, learning_rate)
    optimizer = optax.sgd(lr, momentum=momentum)
    opt_state = optimizer.init(params)
    history, visits = np.zeros(Z.shape[0]), np.zeros(Z.shape[0])
    weights = np.ones(Z.shape[0])

    for epoch in tqdm(range(epochs), desc="active bias", disable=not progress):
        if epoch >= burn_in:
            weights = active_bias_weights(history / np.maximum(visits, 1), smoothness)
        for batch in _batches(rng, Z.shape[0], batch_size):
            params, opt_state, p = _weighted_step(
                params, opt_state, Z[batch], Y[batch],
                jnp.asarray(weights[batch], Z.dtype), optimizer, loss)
            history[batch] += np.asarray(p)
            visits[batch] += 1

    p_bar = history / np.maximum(visits, 1)
    weights = active_bias_weights(p_bar, smoothness)
    return ActiveBiasResult(weights, p_bar, params) if return_result else weights
