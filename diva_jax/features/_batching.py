"""Streaming a dataset through a compiled step in fixed-size batches.

Shared by feature extraction and Jacobian features: the last batch is padded
(so nothing compiles twice), batch t+1 is read on the host while the device
works on batch t (JAX dispatches asynchronously), and each result is copied to
the host before the next one is kept, so device memory holds one batch.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from tqdm.auto import tqdm


def check_batch_size(batch_size) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")


def first_samples(data, name: str, count: int = 1) -> np.ndarray:
    """``data[:count]`` as an array; ``data`` must be non-empty and sliceable."""
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise TypeError(f"{name} must be an array or a dataset with len() and "
                        f"slicing; got {type(data).__name__}.")
    if len(data) == 0:
        raise ValueError(f"{name} is empty; it needs at least one sample.")
    head = data[:count]
    return head if isinstance(head, jax.Array) else np.asarray(head)


def map_batches(step: Callable, data, batch_size: int, *, desc: str,
                progress: bool = True, unit: str = "sample",
                sharding=None) -> np.ndarray:
    """``concatenate([step(data[a:a+batch_size]) ...])`` on the host.

    Args:
      step: a compiled function of one batch (width, ...) -> (width, ...).
      data: anything with ``len()`` whose slices are arrays.
      batch_size: samples per step; every step sees this many (padded by
        repeating the last sample), or ``len(data)`` if smaller and unsharded.
      sharding: optional ``NamedSharding`` for each batch.
    """
    check_batch_size(batch_size)
    n = len(data)
    width = batch_size if n >= batch_size or sharding is not None else n
    rows, pending = [], None
    with tqdm(total=n, desc=desc, unit=unit, disable=not progress) as bar:
        for start in range(0, n, batch_size):
            batch = np.asarray(data[start:start + batch_size])
            count = len(batch)
            if count < width:
                batch = np.concatenate([batch, np.repeat(batch[-1:], width - count,
                                                         axis=0)])
            if sharding is not None:
                batch = jax.device_put(batch, sharding)
            result = step(batch)
            if pending is not None:
                rows.append(np.asarray(pending[0])[: pending[1]])
                bar.update(pending[1])
            pending = (result, count)
        rows.append(np.asarray(pending[0])[: pending[1]])
        bar.update(pending[1])
    return np.concatenate(rows)
