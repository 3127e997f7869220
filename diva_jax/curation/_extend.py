"""DIVA Extend: grow a core set with the pool samples that lower its LOO loss.

The core set ``D`` and the pool ``E`` are merged into one weighted dataset with
``alpha_i = 1`` on ``D`` and ``alpha_i = 0`` on ``E`` (paper sec. 3.4). At
``alpha_i = 0`` a pool sample does not change the fit, and the closed-form LOO
residuals stay exact there (MATH.md), so ``dL/dalpha_i`` says how the loss
would move if sample i were added. Each round adds the ``k`` pool samples with
the most negative derivative and recomputes; it stops when none is negative.

The pool may come from another modality embedded in the same space (text
embeddings of class names from a CLIP-style model, images of another domain):
:func:`extend` is the code path for multimodal extension as well, since it only
sees (embedding, label) pairs.

What is scored: by default the core and the samples added so far, so the
objective grows with the dataset; ``score_added=False`` scores the core alone.
Measured on the digits (core of 200 training images, the other 1,000 as the
pool, k = 10; test error on split 0 at budgets of 200 / 400 / 600 added):

* clean core, clean pool: core and added 2.01 / 1.01 / 1.01%, core alone
  1.17 / 1.01 / 1.34%, uniform 2.18 / 1.84 / 1.51%, whole pool 1.34%;
* 20% flipped labels in core and pool: core and added 5.36 / 3.69 / 3.85%,
  core alone 6.87 / 6.70 / 5.86% (it overfits the small noisy core), uniform
  6.70 / 4.52 / 3.52%, whole pool 3.18%;
* clean core, 20% flipped pool: scoring the added samples lets the run feed
  itself (once a few wrong labels are in, more of the same lower the LOO loss
  of those already added): it took 95% of the pool, 17% of it mislabeled,
  against 78% and 14% for the core alone; best test errors on the path over
  three splits 3.18, 3.52, 2.35% against 2.01, 3.52, 2.35%.

So score the core alone when it is clean and the pool is not trusted, and
always when the pool comes from another modality or domain: on PACS (a photo
core of 5 images per class, the art, cartoon and sketch images as the pool;
``experiments/multimodal.py``, ``lam`` chosen at every round) scoring the
added samples let the run fill itself with pool samples that predict each
other well, and the photo test error rose from 4.9% to over 20% within 1,000
additions (seed 0), while scoring the photo core alone lowered it.

The ridge strength. With ``lam=None`` it is chosen by
:func:`diva_jax.select_lambda` on the objective itself (the LOO loss of the
scored samples at the current weights; at round 0, the core's), once, or at
every round with ``reselect_lam=True``. A ``lam`` chosen once on a few-shot
core (far fewer samples than features) is tiny, and adding samples at that
``lam`` walks into the interpolation peak of the test error near ``N = d``;
re-choosing it keeps every subset on the path at its own LOO-optimal ``lam``
(on PACS with the core alone scored, 3 seeds: photo test error 4.4% -> 3.3%
where Extend stops; with ``lam`` fixed at the core's choice, seed 0 stopped
after 200 additions at 4.3%).
On digits with 20% flipped labels in core and pool (200 + 1,000, scoring the
added samples) the fixed ``lam`` did better: 6% of the selected samples were
mislabeled against 15% as ``lam`` fell with the growing set. Because the
objective is minimised over ``lam`` at each round, its derivative in
``alpha`` at that ``lam`` is the derivative of the minimised objective
(envelope theorem, up to the grid's resolution).

Balanced rounds. The k most negative derivatives can crowd into a few
classes: on the digits (a core of 10 per class, the other ~1,100 training
images as the pool) the first 50 picks of seed 0 held no 0 or 6 and 13 ones.
``balance_classes=True`` takes the best of each class in turn. Over 5 seeds
(``experiments/extend.py --balance-classes``) the test error was below uniform
selection at 74% of the budgets against 66%, and the early gap closed in two
seeds, but not in all: the best subset beat the whole pool in 4 seeds
against 5.

Every round evaluates one compiled function on arrays of fixed shape (only
``alpha``, the scoring mask and ``lam`` change), so nothing is compiled after
round 0; choosing ``lam`` again adds one ``d x d`` eigendecomposition a round.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import NamedTuple

import jax
import numpy as np
from jaxtyping import ArrayLike
from tqdm.auto import tqdm

from diva_jax import _checks
from diva_jax._derivative import value_and_dataset_derivative
from diva_jax._lambda import select_lambda

logger = logging.getLogger(__name__)


class ExtendResult(NamedTuple):
    """The path of an extension run.

    Attributes:
      order: (m,) pool indices in the order they were added.
      rounds: (m,) the round (1, 2, ...) in which each was added.
      objective: (R + 1,) LOO loss of the scored samples with the core alone
        (entry 0) and after each of the R rounds.
      num_added: (R + 1,) pool samples added so far at each entry of
        ``objective``.
      alpha: (N_core + M,) final weights, core first, then the pool.
      pool_derivative: (M,) the pool's dataset derivative with the core alone
        (round 0): negative means adding the sample would lower the loss.
      num_core: N_core.
      lam: the ridge strength of the last round.
      lams: (R + 1,) the ridge strength of each entry of ``objective``.
      stop_reason: ``"no_negative_derivative"``, ``"max_rounds"``,
        ``"max_added"`` or ``"pool_exhausted"``.
    """

    order: np.ndarray
    rounds: np.ndarray
    objective: np.ndarray
    num_added: np.ndarray
    alpha: np.ndarray
    pool_derivative: np.ndarray
    num_core: int
    lam: float
    lams: np.ndarray
    stop_reason: str

    def pool_weights(self, num_added: int | None = None) -> np.ndarray:
        """(M,) 0/1 weights of the pool: the first ``num_added`` picks (all if None)."""
        weights = np.zeros(len(self.alpha) - self.num_core, self.alpha.dtype)
        weights[self.order[:num_added]] = 1
        return weights


@partial(jax.jit, static_argnames="loss")
def _value_and_gradient(alpha, Z, Y, lam, mask, loss):
    """The masked LOO loss and its dataset derivative: one compiled function."""
    return value_and_dataset_derivative(Z, Y, lam, alpha, mask, loss=loss)


def merge_core_and_pool(core_features, core_labels, pool_features, pool_labels,
                        num_classes=None):
    """Checks both sets and stacks them: ``(Z, Y, num_core)``, core rows first."""
    Zc = _checks.check_features(core_features, "core_features")
    Zp = _checks.check_features(pool_features, "pool_features")
    if Zp.shape[1:] != Zc.shape[1:]:
        raise ValueError(f"pool_features must have the feature shape of "
                         f"core_features, {Zc.shape[1:]}; got {Zp.shape[1:]}. Embed "
                         f"the pool with the same model.")
    if num_classes is None:
        num_classes = _max_label(core_labels, pool_labels)
    dtype = np.promote_types(Zc.dtype, Zp.dtype)
    Yc = _checks.check_targets(core_labels, Zc.shape[0], dtype,
                               num_classes=num_classes, name="core_labels")
    Yp = _checks.check_targets(pool_labels, Zp.shape[0], dtype,
                               num_classes=num_classes, name="pool_labels")
    if Yp.shape[1] != Yc.shape[1]:
        raise ValueError(f"pool_labels must have K={Yc.shape[1]} outputs like "
                         f"core_labels; got shape {Yp.shape}.")
    Z = np.concatenate([np.asarray(Zc, dtype), np.asarray(Zp, dtype)])
    return Z, np.concatenate([Yc, Yp]), Zc.shape[0]


def _max_label(*label_sets):
    """K for int labels: one more than the largest label in any set; else None."""
    arrays = [np.asarray(y) for y in label_sets]
    if all(a.ndim == 1 and np.issubdtype(a.dtype, np.integer) for a in arrays):
        return int(max(a.max() for a in arrays if a.size)) + 1
    return None


def _check_budget(k, max_rounds, max_added):
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (samples added per round) must be an int >= 1; got "
                         f"{k!r}.")
    for name, value in (("max_rounds", max_rounds), ("max_added", max_added)):
        if value is not None and (not isinstance(value, (int, np.integer))
                                  or value < 0):
            raise ValueError(f"{name} must be None or an int >= 0; got {value!r}.")


def _pick(g_pool, available, k, room, classes=None):
    """Up to ``min(k, room)`` available pool indices with ``g < 0``, most negative
    first; with ``classes`` (M,), the best of each class first, then the second
    best of each, and so on."""
    candidates = np.flatnonzero(available & (g_pool < 0))
    ranked = candidates[np.argsort(g_pool[candidates], kind="stable")]
    if classes is not None:
        labels = classes[ranked]
        within = np.zeros(len(ranked), np.int64)
        for c in np.unique(labels):
            within[labels == c] = np.arange(np.sum(labels == c))
        ranked = ranked[np.argsort(within, kind="stable")]
    return ranked[: min(k, room)]


class _Path:
    """Bookkeeping shared by DIVA Extend and uniform selection."""

    def __init__(self, num_core, num_pool, dtype, score_added):
        self.num_core, self.score_added = num_core, score_added
        self.alpha = np.concatenate([np.ones(num_core, dtype),
                                     np.zeros(num_pool, dtype)])
        self.mask = self.alpha.copy()
        self.order, self.rounds, self.objective, self.num_added = [], [], [], []
        self.lams, self.pool_derivative = [], None

    def add(self, picks, round_):
        self.alpha[self.num_core + picks] = 1
        if self.score_added:
            self.mask[self.num_core + picks] = 1
        self.order.extend(picks.tolist())
        self.rounds.extend([round_] * len(picks))

    def lam(self, Z, Y, lam, reselect):
        """The given ``lam``, or the one of lowest objective at the current
        weights (chosen at the first round, or at every round)."""
        if lam is None and (reselect or not self.lams):
            lam = select_lambda(Z, Y, self.alpha, self.mask)
        self.lams.append(float(self.lams[-1] if lam is None else lam))
        return self.lams[-1]

    def record(self, value, g):
        self.objective.append(float(value))
        self.num_added.append(len(self.order))
        if self.pool_derivative is None:
            self.pool_derivative = np.asarray(g)[self.num_core:]

    def result(self, stop_reason):
        return ExtendResult(
            np.asarray(self.order, np.int64), np.asarray(self.rounds, np.int64),
            np.asarray(self.objective), np.asarray(self.num_added, np.int64),
            self.alpha.copy(), self.pool_derivative, self.num_core, self.lams[-1],
            np.asarray(self.lams), stop_reason)


def _setup(core_features, core_labels, pool_features, pool_labels, lam,
           num_classes, score_added, reselect_lam):
    Z, Y, num_core = merge_core_and_pool(core_features, core_labels, pool_features,
                                         pool_labels, num_classes)
    if lam is not None:
        lam = float(_checks.check_lam(lam))
        if reselect_lam:
            raise ValueError("reselect_lam=True chooses lam at every round; pass "
                             "lam=None with it, or a lam without it.")
    path = _Path(num_core, Z.shape[0] - num_core, Z.dtype, score_added)
    return jax.device_put(Z), jax.device_put(Y), lam, path


def extend(
    core_features: ArrayLike, core_labels: ArrayLike, pool_features: ArrayLike,
    pool_labels: ArrayLike, *, k: int = 10, lam: float | None = None,
    max_rounds: int | None = None, max_added: int | None = None,
    score_added: bool = True, reselect_lam: bool = False,
    balance_classes: bool = False, loss="squared", num_classes: int | None = None,
    progress: bool = False,
) -> ExtendResult:
    """DIVA Extend: add pool samples in order of most negative dataset derivative.

    Args:
      core_features: (N_core, d) features of the core set ``D``.
      core_labels: (N_core,) int labels or (N_core, K) targets.
      pool_features: (M, d) features of the pool ``E``, in the same space (for
        multimodal extension: embeddings of the other modality).
      pool_labels: (M,) int labels or (M, K) targets.
      k: pool samples added per round.
      lam: ridge strength; None chooses it by the LOO loss of the core (see
        the module note).
      max_rounds: stop after this many rounds (None: no limit).
      max_added: stop once this many pool samples were added (None: no limit).
      score_added: score the added samples by the LOO loss along with the
        core (default); False scores the core alone (see the module note).
      reselect_lam: with ``lam=None``, choose ``lam`` again at every round on
        the current objective (for few-shot cores; see the module note).
      balance_classes: each round, take the most negative derivative of each
        class (the argmax of the pool's targets) in turn instead of the k most
        negative overall.
      loss: per-sample loss of the LOO objective, as in :func:`diva_jax.loo_loss`.
      num_classes: K for int labels; ``max + 1`` over both sets when None.
      progress: show a tqdm bar of the rounds.

    Returns:
      An :class:`ExtendResult`: the selection order, the objective after each
      round and the final weights.
    """
    _check_budget(k, max_rounds, max_added)
    Z, Y, lam, path = _setup(core_features, core_labels, pool_features,
                             pool_labels, lam, num_classes, score_added,
                             reselect_lam)
    available = np.ones(len(path.alpha) - path.num_core, bool)
    room = np.inf if max_added is None else max_added
    classes = np.argmax(np.asarray(Y)[path.num_core:], 1) if balance_classes \
        else None
    bar = tqdm(desc="extend", unit="round", disable=not progress)

    while True:
        lam_r = path.lam(Z, Y, lam, reselect_lam)
        value, g = _value_and_gradient(path.alpha, Z, Y, lam_r, path.mask, loss)
        path.record(value, g)
        stop = _stop_reason(len(path.objective) - 1, max_rounds, room,
                            len(path.order), available)
        picks = np.empty(0, np.int64) if stop else _pick(
            np.asarray(g)[path.num_core:], available, k, room - len(path.order),
            classes)
        if stop or picks.size == 0:
            break
        available[picks] = False
        path.add(picks, len(path.objective))
        bar.update()
    bar.close()
    reason = stop or "no_negative_derivative"
    logger.info("extend: added %d pool samples in %d rounds (%s)", len(path.order),
                len(path.objective) - 1, reason)
    return path.result(reason)


def _stop_reason(rounds_done, max_rounds, room, num_added, available):
    if max_rounds is not None and rounds_done >= max_rounds:
        return "max_rounds"
    if num_added >= room:
        return "max_added"
    if not available.any():
        return "pool_exhausted"
    return None


def uniform_extend(
    core_features: ArrayLike, core_labels: ArrayLike, pool_features: ArrayLike,
    pool_labels: ArrayLike, *, k: int = 10, lam: float | None = None,
    max_rounds: int | None = None, max_added: int | None = None,
    score_added: bool = True, reselect_lam: bool = False, loss="squared",
    num_classes: int | None = None, seed: int = 0, progress: bool = False,
) -> ExtendResult:
    """The uniform baseline of DIVA Extend: pool samples in a random order.

    Adds ``k`` pool samples per round, drawn uniformly without replacement
    (``numpy.random.default_rng(seed)``), until the budget or the pool runs out,
    and records the same objective as :func:`extend`, so both paths can be
    compared at every budget.

    Args:
      seed: seed of the random order.
      Others: as in :func:`extend`.

    Returns:
      An :class:`ExtendResult`.
    """
    _check_budget(k, max_rounds, max_added)
    Z, Y, lam, path = _setup(core_features, core_labels, pool_features,
                             pool_labels, lam, num_classes, score_added,
                             reselect_lam)
    order = np.random.default_rng(seed).permutation(len(path.alpha) - path.num_core)
    available = np.ones(order.size, bool)
    room = np.inf if max_added is None else max_added
    rounds = -(-int(min(order.size, room)) // k)
    rounds = rounds if max_rounds is None else min(rounds, max_rounds)

    for _ in tqdm(range(rounds + 1), desc="uniform", disable=not progress):
        lam_r = path.lam(Z, Y, lam, reselect_lam)
        value, g = _value_and_gradient(path.alpha, Z, Y, lam_r, path.mask, loss)
        path.record(value, g)
        stop = _stop_reason(len(path.objective) - 1, max_rounds, room,
                            len(path.order), available)
        if stop:
            break
        start = len(path.order)
        picks = order[start: start + int(min(k, room - start))]
        available[picks] = False
        path.add(picks, len(path.objective))
    return path.result(stop)
