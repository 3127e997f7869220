"""Last-layer features of a whole dataset: batched, jitted, sharded, cached.

The last-layer linearization of DIVA (paper sec. 3.1) needs one forward pass
per image: ``z_i`` = the penultimate activations of the pretrained network.
:func:`extract_features` streams a dataset through a jitted ``apply_fn`` in
fixed-size batches (the last one padded, so nothing compiles twice), overlaps
reading the next batch on the host with the device's work on the current one,
optionally splits each batch over the devices of a 1-D mesh, and caches the
result in an ``.npz``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import zipfile
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from diva_jax._io import atomic_savez
from diva_jax.features._batching import check_batch_size, map_batches

logger = logging.getLogger(__name__)


def params_digest(params) -> str:
    """SHA-256 of the weights' shapes, dtypes and bytes (the cache's identity)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        leaf = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}{leaf.shape}{leaf.dtype}".encode())
        h.update(leaf.tobytes())
    return h.hexdigest()


def _read_cache(cache: Path, n: int, fingerprint: str) -> np.ndarray | None:
    """Features from a complete cache for this run, else None (and why, logged)."""
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as f:
            features, stored = f["features"], str(f["fingerprint"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        logger.warning("feature cache %s is unreadable (%s); recomputing.", cache, err)
        return None
    if stored != fingerprint or features.ndim != 2 or len(features) != n:
        logger.warning("feature cache %s belongs to other weights or data "
                       "(%d rows for %d images); recomputing.", cache,
                       len(features), n)
        return None
    logger.info("reusing %d cached feature rows from %s", n, cache)
    return features


def _batch_sharding(sharding) -> tuple[NamedSharding | None, NamedSharding | None]:
    """(batch sharding, replicated sharding) from a 1-D Mesh or a NamedSharding."""
    if sharding is None:
        return None, None
    if isinstance(sharding, Mesh):
        if len(sharding.axis_names) != 1:
            raise ValueError("sharding must be a 1-D Mesh (the batch axis); got "
                             f"axes {sharding.axis_names}.")
        sharding = NamedSharding(sharding, PartitionSpec(sharding.axis_names[0]))
    if not isinstance(sharding, NamedSharding):
        raise TypeError("sharding must be a jax.sharding.Mesh or NamedSharding, "
                        f"got {type(sharding).__name__}.")
    return sharding, NamedSharding(sharding.mesh, PartitionSpec())


@functools.partial(jax.jit, static_argnums=0)
def _features_step(apply_fn: Callable, params, images):
    """The features in ``apply_fn``'s output: an array, or a tuple's last entry."""
    outputs = apply_fn(params, images)
    return outputs[-1] if isinstance(outputs, (tuple, list)) else outputs


def extract_features(apply_fn: Callable, params, images, *, batch_size: int = 64,
                     cache: str | os.PathLike | None = None, cache_key: str = "",
                     sharding=None, progress: bool = True) -> np.ndarray:
    """Penultimate features ``Z`` (N, d) of every image, as a host float32 array.

    Args:
      apply_fn: ``apply_fn(params, images) -> features (b, d)``, or a tuple whose
        last entry is the features (the ``(logits, penultimate)`` of a
        :class:`ResNetApply`).
      params: the network's weights.
      images: anything with ``len()`` whose slices ``images[a:b]`` are image
        batches (b, h, w, c): an array, or a :class:`diva_jax.data.ImageDataset`.
      batch_size: images per step; with ``sharding``, a multiple of the devices.
      cache: ``.npz`` path. A complete cache made with the same weights and
        dataset size is returned without computing; a missing, partial,
        unreadable or stale one is (re)computed and written atomically.
      cache_key: more identity of the run for the cache (e.g. the dataset's
        name, split and preprocessing): a cache made with another key is stale.
      sharding: a 1-D ``jax.sharding.Mesh`` (or a ``NamedSharding`` of the batch
        axis): each batch is split over its devices, the weights replicated.
      progress: show a tqdm bar over images.
    """
    n = len(images)
    if n == 0:
        raise ValueError("images is empty; it needs at least one image.")
    check_batch_size(batch_size)
    batch_sharding, replicated = _batch_sharding(sharding)
    if batch_sharding is not None and batch_size % batch_sharding.mesh.size:
        raise ValueError(f"batch_size ({batch_size}) must be a multiple of the "
                         f"{batch_sharding.mesh.size} devices of the mesh.")
    cache = None if cache is None else Path(cache)
    fingerprint = f"{n}:{cache_key}:{params_digest(params)}" if cache else ""
    if cache is not None and (hit := _read_cache(cache, n, fingerprint)) is not None:
        return hit

    if replicated is not None:
        params = jax.device_put(params, replicated)
    step = functools.partial(_features_step, apply_fn, params)  # once per model
    features = map_batches(step, images, batch_size, desc="features", unit="img",
                           progress=progress, sharding=batch_sharding)
    features = features.astype(np.float32, copy=False)
    if cache is not None:
        atomic_savez(cache, features=features, fingerprint=np.asarray(fingerprint))
        logger.info("wrote %s feature rows to %s", features.shape, cache)
    return features
