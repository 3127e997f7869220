"""The dataset derivative of features that do not fit in memory, in passes over chunks.

Every sum over samples in the closed form (MATH.md) is a sum of per-chunk
terms, so ``Z`` can be read from disk in chunks of rows ``Z_c`` while only
d x d and d x K sums stay in memory. With ``A = L L^T``, ``C = A^{-1}``,
``Q_c = Z_c L^{-T}`` and the notation of MATH.md:

1. fit: ``A = sum_c Z_c^T D_c Z_c + lam I`` and ``B = sum_c Z_c^T D_c Y_c``;
   then ``L`` and ``W = C B``.
2. LOO only: per sample ``s_i = |q_i|^2``, ``r_i``, ``e_i = r_i / (1 - h_i)``,
   ``g_i = dL/de_i``, ``u_i = g_i / (1 - h_i)``, ``v_i = alpha_i g_i.e_i / (1 - h_i)``
   and ``term2_i = (u_i . e_i) s_i``; accumulate the loss, ``Q^T U`` (d x K) and
   ``P = Q^T diag(v) Q`` (d x d).
3. per sample: ``dL/dalpha_j = -r_j . (Z C Z^T U)_j + term2_j - z_j^T C M C z_j``
   with ``C Z^T U = L^{-T} Q^T U`` and ``C M C = L^{-T} P L^{-1}``, so this pass
   needs one GEMM per chunk and not ``Q_c``.

A pass can only use sums that an earlier pass completed. The LOO residual
``e_i`` needs ``C``, a sum over every sample (pass 1); terms 1 and 3 of every
sample need ``Q^T U`` and ``P``, sums over every sample of quantities built
from ``e_i`` (pass 2): hence three passes, about four GEMMs of the size of
``Z^T Z`` in all, as in memory. The validation derivative
``r_i . (z_i^T C Z_val^T G)`` needs only ``W`` and ``C``: after pass 1 the
validation set (in memory) gives ``G = dL/dF_val``, and one more pass gives
every entry, so it reads the features twice.

Sources of features: a path to a ``.npy`` file, a ``numpy.memmap`` (read with
plain file reads, so the process' resident memory stays about one chunk), any
object sliceable by rows with a ``shape`` (numpy or jax arrays, h5py or zarr
datasets), or, for data made on the fly, a callable returning a fresh iterable
of chunks (each pass calls it once) or a re-iterable of chunks.
"""

from __future__ import annotations

import collections
import logging
import mmap
import os
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from diva_jax import _checks
from diva_jax._losses import mean_loss, resolve_loss
from diva_jax._ridge import (
    cholesky_inverse_factor, gram, row_quadratic_forms, tdot, triu_matmul,
)

logger = logging.getLogger(__name__)

_IN_FLIGHT = 2  # chunks dispatched to the device and not yet finished


class _RowSource:
    """Reads an (N, d) source of features as ``(start, chunk)`` pairs, pass by pass."""

    def __init__(self, features, chunk_size: int):
        if isinstance(features, (str, os.PathLike)):
            features = np.load(Path(features), mmap_mode="r")
        self.features, self.chunk_size = features, chunk_size
        self.sliceable = hasattr(features, "shape") and hasattr(features, "__getitem__")
        if self.sliceable and len(features.shape) != 2:
            raise ValueError(f"features must have shape (N, d); got {features.shape}.")
        if not self.sliceable and not callable(features) and \
                iter(features) is features:
            raise TypeError("features is a one-shot iterator, but the derivative reads "
                            "the features two or three times: pass a callable that "
                            "returns a fresh iterable of chunks, or a list of chunks.")

    @property
    def n(self) -> int | None:
        return int(self.features.shape[0]) if self.sliceable else None

    def _file(self):
        """An open file and data offset when features is an unsliced memmap."""
        f = self.features
        if isinstance(f, np.memmap) and f.filename and isinstance(f.base, mmap.mmap) \
                and f.flags.c_contiguous:
            return open(f.filename, "rb"), f.offset
        return None, None

    def chunks(self):
        if not self.sliceable:
            source = self.features() if callable(self.features) else self.features
            start = 0
            for chunk in source:
                chunk = np.asarray(chunk)
                yield start, chunk
                start += chunk.shape[0]
            return
        n, (file, offset) = self.n, self._file()
        row_bytes = self.features.shape[1] * self.features.dtype.itemsize
        try:
            for start in range(0, n, self.chunk_size):
                stop = min(start + self.chunk_size, n)
                if file is None:
                    yield start, np.asarray(self.features[start:stop])
                    continue
                file.seek(offset + start * row_bytes)
                count = (stop - start) * self.features.shape[1]
                rows = np.fromfile(file, self.features.dtype, count)
                yield start, rows.reshape(stop - start, -1)
        finally:
            if file is not None:
                file.close()

    def num_chunks(self) -> int | None:
        return None if self.n is None else -(-self.n // self.chunk_size)


class _Targets:
    """Rows of the targets: one-hot from int labels (N,), or float targets (N, K)."""

    def __init__(self, labels, n: int, num_classes: int | None, dtype):
        if not hasattr(labels, "shape") or labels.shape[0] != n:
            shape = getattr(labels, "shape", None)
            raise ValueError(f"labels must be an array with N={n} rows like the "
                             f"features; got shape {shape}.")
        self.labels, self.dtype = labels, dtype
        self.is_int = len(labels.shape) == 1 and np.issubdtype(labels.dtype, np.integer)
        if self.is_int:
            self.labels = np.asarray(labels)
            low, high = int(self.labels.min()), int(self.labels.max())
            self.K = high + 1 if num_classes is None else num_classes
            if low < 0 or high >= self.K:
                raise ValueError(f"labels must lie in [0, {self.K}); got range "
                                 f"[{low}, {high}].")
        else:
            self.K = 1 if len(labels.shape) == 1 else labels.shape[1]

    def rows(self, start: int, stop: int) -> np.ndarray:
        if self.is_int:
            return np.eye(self.K, dtype=self.dtype)[self.labels[start:stop]]
        return np.asarray(self.labels[start:stop], self.dtype).reshape(stop - start, -1)


def _pad(x: np.ndarray, rows: int) -> np.ndarray:
    """``x`` with zero rows appended up to ``rows`` (zero weight, zero mask)."""
    if x.shape[0] >= rows:
        return x
    return np.concatenate([x, np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)])


@jax.jit
def _fit_step(A, B, bad, Zc, Yc, ac):
    """Pass 1: adds ``Z_c^T D_c Z_c`` and ``Z_c^T D_c Y_c``; counts non-finite."""
    bad = bad + jnp.sum(~jnp.isfinite(Zc)) + jnp.sum(~jnp.isfinite(Yc))
    return A + gram(Zc, ac), B + tdot(Zc, ac[:, None] * Yc), bad


@jax.jit
def _fit_solve(A, B, lam):
    """``L^{-1}`` and ``W = C B`` from the sums of pass 1."""
    Linv = cholesky_inverse_factor(A + lam * jnp.eye(A.shape[0], dtype=A.dtype))
    return Linv, Linv.T @ (Linv @ B)


@partial(jax.jit, static_argnames="loss")
def _loo_step(sums, Zc, Yc, ac, mc, Linv, W, msum, loss):
    """Pass 2: per-sample ``s, e, g, u, v`` of a chunk; adds the loss, ``Q^T U``, P."""
    value, QtU, P = sums
    Q = triu_matmul(Zc, Linv.T)
    s = jnp.sum(Q * Q, 1)
    denom = 1.0 - ac * s
    e = (Yc - Zc @ W) / denom[:, None]

    per_sample, dl_dF = jax.vmap(jax.value_and_grad(loss))(Yc - e, Yc)
    g = -(mc / msum)[:, None] * dl_dF  # dL/de, with F = Y - e
    u = g / denom[:, None]
    v = ac * jnp.sum(g * e, 1) / denom

    sums = (value + jnp.sum(mc * per_sample) / msum, QtU + tdot(Q, u),
            P + gram(Q, v))
    return sums, jnp.sum(u * e, 1) * s


@jax.jit
def _loo_terms(Zc, Yc, W, CZU, CMC, term2):
    """Pass 3: ``-r_j . (Z C Z^T U)_j + term2_j - z_j^T C M C z_j`` for a chunk."""
    R = Yc - Zc @ W
    return term2 - jnp.sum(R * (Zc @ CZU), 1) - row_quadratic_forms(Zc, CMC)


@jax.jit
def _validation_terms(Zc, Yc, W, t):
    """Prop. 2 for a chunk: ``r_i . (z_i^T t)`` with ``t = C Z_val^T G``."""
    return jnp.sum((Yc - Zc @ W) * (Zc @ t), 1)


class _Pass:
    """One pass over the chunks: padded device arrays, progress, timing."""

    def __init__(self, source, targets, alpha, mask, dtype, progress):
        self.source, self.targets, self.dtype = source, targets, dtype
        self.alpha, self.mask, self.progress = alpha, mask, progress
        self.d = None

    def _chunk(self, start, chunk):
        if chunk.ndim != 2 or (self.d is not None and chunk.shape[1] != self.d):
            raise ValueError(f"features chunk at row {start} has shape {chunk.shape}; "
                             f"every chunk must be (rows, d) with one d.")
        self.d, rows = chunk.shape[1], chunk.shape[0]
        stop, padded = start + rows, max(rows, self.source.chunk_size)
        if stop > self.alpha.shape[0]:
            raise ValueError(f"features has more rows than labels "
                             f"({self.alpha.shape[0]}).")
        arrays = (chunk.astype(self.dtype, copy=False), self.targets.rows(start, stop),
                  self.alpha[start:stop], self.mask[start:stop])
        return stop, [jnp.asarray(_pad(x, padded)) for x in arrays]

    def run(self, name: str, step) -> int:
        """Calls ``step(start, stop, Zc, Yc, ac, mc)`` on every chunk; returns N."""
        clock, in_flight, stop = time.perf_counter(), collections.deque(), 0
        total = self.source.num_chunks()
        for start, chunk in tqdm(self.source.chunks(), total=total, desc=name,
                                 unit="chunk", disable=not self.progress):
            stop, arrays = self._chunk(start, chunk)
            in_flight.append(step(start, stop, *arrays))
            if len(in_flight) > _IN_FLIGHT:  # bounds the memory of queued chunks
                jax.block_until_ready(in_flight.popleft())
        jax.block_until_ready(list(in_flight))
        if stop != self.alpha.shape[0]:
            raise ValueError(f"features gave {stop} rows but labels have "
                             f"{self.alpha.shape[0]}.")
        seconds = time.perf_counter() - clock
        logger.info("%s: %d rows in %.2f s", name, stop, seconds,
                    extra={"pass_name": name, "pass_seconds": seconds})
        return stop


def _fit(run: _Pass, K: int, lam):
    """Pass 1: ``L^{-1}`` and ``W`` from ``A`` and ``B`` summed over the chunks."""
    sums = []

    def step(start, stop, Zc, Yc, ac, mc):
        if not sums:
            d = Zc.shape[1]
            sums.append((jnp.zeros((d, d), Zc.dtype), jnp.zeros((d, K), Zc.dtype),
                         jnp.zeros((), jnp.int32)))
        sums[0] = _fit_step(*sums[0], Zc, Yc, ac)
        return sums[0]

    run.run("pass 1: Z^T D Z", step)
    A, B, bad = sums[0]
    if int(bad):
        raise ValueError(f"features or labels have {int(bad)} NaN or infinite entries;"
                         f" clean or drop them before computing the derivative.")
    return _fit_solve(A, B, jnp.asarray(lam, A.dtype))


def _per_sample_pass(run: _Pass, name: str, fn) -> np.ndarray:
    """A pass whose ``fn(index, Zc, Yc, ac, mc)`` gives per-sample values of a chunk."""
    outputs = []

    def step(start, stop, *arrays):
        outputs.append((stop - start, fn(len(outputs), *arrays)))
        return outputs[-1][1]

    run.run(name, step)
    return outputs


def _gather(outputs) -> np.ndarray:
    return np.concatenate([np.asarray(values[:rows]) for rows, values in outputs])


def _loo(run: _Pass, Linv, W, msum, loss):
    """Passes 2 and 3 of the LOO derivative; returns the loss and (N,) gradient."""
    d, K = W.shape
    sums = [(jnp.zeros((), W.dtype), jnp.zeros((d, K), W.dtype),
             jnp.zeros((d, d), W.dtype))]

    def second(index, Zc, Yc, ac, mc):
        sums[0], term2 = _loo_step(sums[0], Zc, Yc, ac, mc, Linv, W, msum, loss)
        return term2

    term2 = _per_sample_pass(run, "pass 2: Q^T diag(v) Q", second)
    value, QtU, P = sums[0]
    CZU, CMC = Linv.T @ QtU, Linv.T @ P @ Linv  # C Z^T U and C M C

    def third(index, Zc, Yc, ac, mc):
        return _loo_terms(Zc, Yc, W, CZU, CMC, term2[index][1])

    return float(value), _gather(_per_sample_pass(run, "pass 3: per-sample terms",
                                                  third))


def _validation(run: _Pass, Linv, W, Z_val, Y_val, loss):
    """Pass 2 of the validation derivative; returns the loss and (N,) gradient."""
    value, G = jax.value_and_grad(mean_loss, 1)(loss, Z_val @ W, Y_val)
    t = Linv.T @ (Linv @ tdot(Z_val, G))  # C Z_val^T G

    def second(index, Zc, Yc, ac, mc):
        return _validation_terms(Zc, Yc, W, t)

    return float(value), _gather(_per_sample_pass(run, "pass 2: validation terms",
                                                  second))


def _compute_dtype(source: _RowSource):
    if source.sliceable:
        return _checks._float_dtype(source.features)
    return jnp.zeros((), float).dtype


def _check_validation(validation, d, K, dtype):
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        raise TypeError("validation must be a pair (Z_val, Y_val) of arrays in memory.")
    Z_val = _checks.check_features(validation[0], "Z_val").astype(dtype)
    if Z_val.ndim != 2 or (d is not None and Z_val.shape[1] != d):
        raise ValueError(f"Z_val must have shape (N_val, d={d}); got {Z_val.shape}.")
    Y_val = _checks.check_targets(validation[1], Z_val.shape[0], dtype,
                                  num_classes=K, name="Y_val")
    if Y_val.shape[1] != K:
        raise ValueError(f"Y_val must have K={K} outputs like the labels; got "
                         f"shape {Y_val.shape}.")
    return Z_val, Y_val


def streaming_value_and_dataset_derivative(
    features, labels, lam: float, *, alpha=None, mask=None, validation=None,
    loss="squared", num_classes: int | None = None, chunk_size: int = 65_536,
    progress: bool = True,
) -> tuple[float, np.ndarray]:
    """The loss and its dataset derivative, reading the features in chunks.

    Equals :func:`diva_jax.value_and_dataset_derivative` (primal form) to
    float rounding, with memory O(chunk_size d + d^2 + N K) instead of O(N d).
    The LOO derivative reads the features three times, the validation
    derivative twice (see the module docstring for why).

    Args:
      features: (N, d) features: a path to a ``.npy`` file, a ``numpy.memmap``
        (e.g. ``np.load(path, mmap_mode="r")``), anything sliceable by rows
        with a ``shape`` (h5py/zarr datasets, arrays), a callable returning a
        fresh iterable of (rows, d) chunks, or a re-iterable of chunks.
      labels: (N,) int labels or (N, K) float targets, in memory or sliceable.
      lam: ridge strength ``> 0``.
      alpha: (N,) weights ``>= 0`` at which to differentiate; None for ones.
      mask: (N,) samples scored by the LOO loss; None for all. Ignored with
        ``validation``.
      validation: optional ``(Z_val, Y_val)`` held in memory.
      loss: ``"squared"``, ``"cross_entropy"`` or a differentiable callable
        ``l(prediction (K,), target (K,))``.
      num_classes: K for int labels; ``max(labels) + 1`` when None.
      chunk_size: rows per chunk for sliceable sources; the last chunk is
        padded with zero-weight rows so that each pass compiles once.
      progress: show a tqdm bar per pass (each pass is also logged).

    Returns:
      ``(value, gradient)``: a float and a numpy (N,) array.
    """
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}.")
    source = _RowSource(features, int(chunk_size))
    _checks.check_lam(lam)
    loss, dtype = resolve_loss(loss), _compute_dtype(source)
    n = source.n if source.n is not None else getattr(labels, "shape", (None,))[0]
    targets = _Targets(labels, n, num_classes, dtype)
    alpha = np.asarray(_checks.check_weights(alpha, n, dtype))
    mask = np.asarray(_checks.check_mask(mask, n, dtype))
    d = source.features.shape[1] if source.sliceable else None
    if validation is not None:
        validation = _check_validation(validation, d, targets.K, dtype)

    run = _Pass(source, targets, alpha, mask, dtype, progress)
    Linv, W = _fit(run, targets.K, lam)
    if validation is not None:
        Z_val, Y_val = _check_validation(validation, W.shape[0], targets.K, dtype)
        return _validation(run, Linv, W, Z_val, Y_val, loss)
    return _loo(run, Linv, W, jnp.asarray(mask.sum(), dtype), loss)


def streaming_dataset_derivative(features, labels, lam: float, **kwargs) -> np.ndarray:
    """The dataset derivative (N,) reading the features in chunks.

    Arguments as in :func:`streaming_value_and_dataset_derivative`.

    Example:
      >>> import numpy as np, diva_jax
      >>> Z = np.random.default_rng(0).standard_normal((1000, 8)).astype("f4")
      >>> y = np.arange(1000) % 3
      >>> diva_jax.streaming_dataset_derivative(Z, y, 1.0, chunk_size=300,
      ...                                       progress=False).shape
      (1000,)
    """
    return streaming_value_and_dataset_derivative(features, labels, lam, **kwargs)[1]
