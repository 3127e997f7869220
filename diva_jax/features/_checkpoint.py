"""The library's model file: one msgpack document with architecture and weights.

Layout (``flax.serialization.msgpack_serialize`` of a dict)::

    {"format": "diva-jax/resnet", "version": 1,
     "architecture": ResNet.metadata(),          # block, stage_sizes, ...
     "params": {...}, "batch_stats": {...}}      # Flax variable trees

Why msgpack rather than orbax: a feature extractor is loaded whole, on one
host, and is at most a few hundred MB, so one self-describing file is all
that is needed. Flax's msgpack codec is already a dependency, stores numpy
arrays natively, and the bytes are written atomically with
:func:`diva_jax._io.atomic_write_bytes`; orbax's directory checkpoints, async
writers and sharded layouts serve training state, which we do not save.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from diva_jax._io import atomic_write_bytes
from diva_jax.features._resnet import ResNetApply, resnet_from_metadata
from diva_jax.features._torchvision import load_torchvision_resnet

FORMAT = "diva-jax/resnet"
VERSION = 1
SUFFIX = ".msgpack"


def save_resnet(path: str | os.PathLike, apply_fn: ResNetApply, params) -> Path:
    """Writes ``(apply_fn, params)`` of a :class:`ResNet` to ``path`` atomically."""
    if not isinstance(apply_fn, ResNetApply):
        raise TypeError("apply_fn must be the ResNetApply returned by "
                        "load_torchvision_resnet/load_resnet/init_resnet; got "
                        f"{type(apply_fn).__name__}.")
    document = {"format": FORMAT, "version": VERSION,
                "architecture": apply_fn.model.metadata(),
                "params": jax.tree.map(np.asarray, params),
                "batch_stats": jax.tree.map(np.asarray, apply_fn.batch_stats)}
    return atomic_write_bytes(path, serialization.msgpack_serialize(document))


def load_resnet(path: str | os.PathLike, *, dtype=None) -> tuple[ResNetApply, dict]:
    """Reads a file written by :func:`save_resnet` (or ``diva convert``).

    Returns:
      ``(apply_fn, params)`` as :func:`load_torchvision_resnet` does.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist; make "
                                "one with `diva convert`.")
    document = serialization.msgpack_restore(path.read_bytes())
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{path} is not a diva-jax model file (format "
                         f"{FORMAT!r}); convert torchvision weights with "
                         "`diva convert`.")
    if document.get("version") != VERSION:
        raise ValueError(f"{path}: unsupported model file version "
                         f"{document.get('version')}; this library reads {VERSION}.")
    architecture = dict(document["architecture"], dtype=dtype)
    model = resnet_from_metadata(architecture)
    batch_stats = jax.tree.map(jnp.asarray, document["batch_stats"])
    params = jax.tree.map(jnp.asarray, document["params"])
    return ResNetApply(model, batch_stats), params


def load_model(path: str | os.PathLike, *, dtype=None) -> tuple[ResNetApply, dict]:
    """Loads weights by file type: ``.msgpack`` (ours) or a torchvision state_dict.

    ``.pth``/``.pt``/``.npz`` go through :func:`load_torchvision_resnet`.
    """
    if Path(path).suffix == SUFFIX:
        return load_resnet(path, dtype=dtype)
    if Path(path).suffix in (".pth", ".pt", ".npz"):
        return load_torchvision_resnet(path, dtype=dtype)
    raise ValueError(f"weights file {str(path)!r}: expected a {SUFFIX} model file "
                     "or a torchvision state_dict (.pth, .pt, .npz).")
