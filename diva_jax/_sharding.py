"""The sample axis sharded across devices and hosts.

Every sum over samples in the closed form (``Z^T D Z``, ``Z^T D Y``,
``Q^T U``, ``Q^T diag(v) Q``, the loss) is a reduction over the sample axis.
With ``Z`` sharded by rows over a mesh axis, XLA computes each sum on the rows
a device holds and all-reduces the d x d or d x K result; every per-sample
quantity (``s_i``, ``e_i``, the gradient) stays on the device that holds
sample i. The compiled program holds no N x N array and gathers no N x d data.

The same code runs on one host with several devices and on several hosts
under ``jax.distributed.initialize()``: there each process passes the rows it
holds, and :func:`shard_samples` assembles the global array.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SAMPLES = "samples"


def sample_mesh(devices=None, axis: str = SAMPLES) -> Mesh:
    """A 1-D mesh over ``devices`` (all devices of all hosts when None)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (axis,))


def _sample_sharding(mesh: Mesh, axis: str | None, ndim: int) -> NamedSharding:
    if axis is None:
        axis = SAMPLES if SAMPLES in mesh.axis_names else mesh.axis_names[0]
    if axis not in mesh.axis_names:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh "
                         f"{mesh.axis_names}; pass axis= one of them.")
    return NamedSharding(mesh, PartitionSpec(axis, *[None] * (ndim - 1)))


def shard_samples(array, mesh: Mesh | None = None, *, axis: str | None = None):
    """Places ``array`` (N, ...) with its rows split over a mesh axis.

    On one host ``array`` holds all N rows. Under ``jax.distributed``, each
    process passes the rows it holds (processes in order of
    ``jax.process_index()``), and the result is the global array of all of
    them. The dataset derivative of sharded arrays is sharded the same way.

    Args:
      array: features (N, d), labels (N,) or (N, K), weights or mask (N,).
      mesh: the device mesh; a 1-D mesh over every device when None.
      axis: the mesh axis that splits the samples: ``"samples"`` if the mesh
        has it, else its first axis.

    Returns:
      A ``jax.Array`` with ``NamedSharding(mesh, PartitionSpec(axis))``.

    Raises:
      ValueError: when the rows do not split evenly over the axis. Pad with
        zero rows given ``alpha = 0`` and ``mask = 0``: they change neither
        the fit nor the loss, and their derivative is 0.
    """
    mesh = sample_mesh() if mesh is None else mesh
    array = np.asarray(array) if not isinstance(array, jax.Array) else array
    if array.ndim == 0:
        raise ValueError("shard_samples needs an array with a sample axis first; "
                         "got a scalar.")
    sharding = _sample_sharding(mesh, axis, array.ndim)
    parts = mesh.shape[sharding.spec[0]]
    local_parts = parts // jax.process_count() if jax.process_count() > 1 else parts
    if array.shape[0] % local_parts:
        raise ValueError(f"{array.shape[0]} rows do not split evenly over "
                         f"{local_parts} devices of mesh axis {sharding.spec[0]!r}; "
                         f"pad with zero rows that get alpha=0 and mask=0.")
    if jax.process_count() > 1:
        return jax.make_array_from_process_local_data(sharding, np.asarray(array))
    return jax.device_put(array, sharding)


def match_sample_sharding(x, Z):
    """``x`` (N, ...) placed like the rows of ``Z`` when ``Z`` is sharded by rows.

    Leaves ``x`` as it is for unsharded ``Z`` and inside traced functions.
    """
    sharding = getattr(Z, "sharding", None)
    if isinstance(x, jax.core.Tracer) or not isinstance(sharding, NamedSharding):
        return x
    spec = tuple(sharding.spec)
    if not spec or spec[0] is None:
        return x
    rows = PartitionSpec(spec[0], *[None] * (x.ndim - 1))
    target = NamedSharding(sharding.mesh, rows)
    return x if x.sharding == target else jax.device_put(x, target)
