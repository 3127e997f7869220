"""Full-network linearization: Jacobian features, their sketch, and the NTK.

Around pretrained weights ``w0`` a network is replaced by its first-order
Taylor expansion (paper sec. 3.1, after Achille et al. 2020)

    f_lin(x) = f_w0(x) + J(x) (w - w0),        J(x) = df_w(x)/dw at w0  (K x P)

which is linear in ``w``: fitting ``w - w0`` by weighted ridge regression on
targets ``y_i - f_w0(x_i)`` is the DIVA problem with per-sample Jacobian blocks
``Z_i = J(x_i)`` (MATH.md, "Several outputs per sample"). The helpers here
build those blocks and the kernel ``J J^T``:

- :func:`jacobian_features` with ``num_directions=None``: exact rows
  ``J(x_i)`` (n, K, P), for networks small enough that n K P numbers fit.
- :func:`jacobian_features` with ``num_directions=m``: the sketch
  ``Z_i = J(x_i) V^T`` (n, K, m) along m random tangents ``V`` (m, P) with
  i.i.d. ``N(0, 1/m)`` entries, so ``E[V^T V] = I_P`` and every inner product
  ``Z_i Z_j^T`` is an unbiased estimate of ``J(x_i) J(x_j)^T`` (its relative
  error shrinks like ``1/sqrt(m)``). Each column is one ``jax.jvp``.
- :func:`empirical_ntk`: ``Theta(x1, x2)[i, j] = J(x1_i) J(x2_j)^T``.
- :func:`linearize`: ``f_lin`` itself, through ``jax.jvp``.

Cost of the sketch (ResNet-34 at 224 x 224, P = 21.8M, forward ~3.6 GMAC =
7.3 GFLOP per image). Per sample batch the primal runs once
(``jax.linearize``), then each direction is one tangent pass, which costs about
two forwards (the product rule doubles every convolution: ``conv(dx, w) +
conv(x, dv)``). Per sample: ~(1 + 2m) x 7.3 GFLOP, i.e. ~0.95 TFLOP for
m = 64, plus m x P normal draws per batch (the tangents are regenerated from
``key``, never stored: an m x P matrix is 5.6 GB at m = 64). Memory, for a
batch of b samples and c = ``direction_batch_size`` directions in flight: the
primal's saved activations (~b x 0.1 GB at 224 px in float32), c tangents of
P floats (c x 87 MB), c x b tangent activations, and the b x K x m block of
output; nothing grows with n, because sample batches are processed one at a
time and copied to the host. The normal draws are repeated for every batch,
so their cost is shared by ``batch_size`` samples: on a CPU at small image
sizes they can cost as much as the JVPs (pass ``tangents=`` to reuse a stored
V when m x P floats fit). ``benchmarks/bench_jacobian.py`` measures time
and peak memory per sample. The exact Jacobian of ResNet-34 would be
K x P = 21.8G floats per sample with K = 1000: only the sketch scales.

All functions require ``apply_fn(params, x) -> (n, K)`` to treat samples
independently (BatchNorm in eval mode, as :class:`ResNetApply` runs it).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from diva_jax.features._batching import check_batch_size, first_samples, map_batches

ApplyFn = Callable[..., Array]


def _check_outputs(apply_fn: ApplyFn, params, x, name: str = "x") -> int:
    """Checks ``apply_fn(params, x) -> (n, K)`` on shapes only; returns K."""
    out = jax.eval_shape(apply_fn, params, first_samples(x, name))
    if isinstance(out, (tuple, list)):
        raise TypeError("apply_fn must return one (n, K) array; it returned a "
                        f"{type(out).__name__}. For a ResNetApply pass "
                        "apply_fn.logits (the K outputs to linearize).")
    if len(out.shape) != 2 or out.shape[0] != 1:
        raise ValueError("apply_fn(params, x) must return shape (n, K); for one "
                         f"sample it returned {out.shape}.")
    return out.shape[1]


def _per_sample(f: Callable) -> Callable:
    """``f(w, x (n, ...)) -> (n, K)`` as a function of one sample ``x_i``."""
    return lambda w, x_i: f(w, x_i[None])[0]


def jacobian_features(apply_fn: ApplyFn, params, x, *,
                      num_directions: int | None = None,
                      key: jax.Array | None = None,
                      tangents: Float[Array, "m P"] | None = None,
                      batch_size: int = 32, direction_batch_size: int = 8,
                      progress: bool = True) -> np.ndarray:
    """Per-sample Jacobian blocks of ``apply_fn`` in its weights: exact or sketched.

    Args:
      apply_fn: ``apply_fn(params, x) -> (n, K)``, e.g. ``ResNetApply.logits``.
      params: the weights ``w0`` (any pytree; flattened with ``ravel_pytree`` in
        leaf order, so P is the total number of parameters).
      x: inputs (n, ...): an array, or a dataset with ``len()`` and slicing
        (a :class:`diva_jax.data.ImageDataset`).
      num_directions: m; None gives the exact Jacobian (n, K, P).
      key: PRNG key of the random tangents (default ``jax.random.key(0)``).
        Tangent j is drawn from ``fold_in(key, j)``: every sample batch sees
        the same directions, and no m x P matrix is stored.
      tangents: explicit flat tangents (m, P), used as given instead of random
        ones (e.g. an orthonormal basis: then ``Z @ tangents = J``).
      batch_size: samples per jitted step; one batch of blocks lives at a time.
      direction_batch_size: tangents pushed through the network together.
      progress: show a tqdm bar over sample batches.

    Returns:
      ``Z`` (n, K, P) exact, or (n, K, m) sketched, as a host numpy array: the
      ``Z`` of ``diva_jax.dataset_derivative(Z, Y - f0, lam)``.
    """
    _check_outputs(apply_fn, params, x)
    check_batch_size(batch_size)
    if num_directions is None and tangents is None:
        step = functools.partial(exact_jacobian_block, apply_fn, params)
        desc = "exact Jacobian"
    else:
        source, m = _tangent_source(params, num_directions, key, tangents)
        chunk = max(1, min(direction_batch_size, m))
        step = functools.partial(_sketch_step, apply_fn, m, chunk, params, source)
        desc = f"Jacobian sketch m={m}"
    return map_batches(step, x, batch_size, desc=desc, progress=progress)


def _sketch_step(apply_fn, m, chunk, params, source, x_b):
    return sketch_block(apply_fn, m, chunk, params, x_b, source)


def _flat(apply_fn: ApplyFn, params):
    """``(w0 (P,), f(w, x))``: the network as a function of its flat weights."""
    flat_w0, unravel = ravel_pytree(params)
    return flat_w0, lambda w, x_b: apply_fn(unravel(w), x_b)


@functools.partial(jax.jit, static_argnums=0)
def exact_jacobian_block(apply_fn: ApplyFn, params, x_b) -> Float[Array, "b K P"]:
    """``J(x_i)`` for each sample of one batch: K reverse passes per sample."""
    flat_w0, f = _flat(apply_fn, params)
    return jax.vmap(jax.jacrev(_per_sample(f)), in_axes=(None, 0))(flat_w0, x_b)


def _tangent_source(params, num_directions, key, tangents):
    """Returns ``(source, m)``: explicit tangents (m, P), or a PRNG key."""
    P = sum(leaf.size for leaf in jax.tree.leaves(params))
    if tangents is not None:
        if num_directions is not None or key is not None:
            raise ValueError("pass either tangents= or num_directions=/key=, not both.")
        tangents = jnp.asarray(tangents, ravel_pytree(params)[0].dtype)
        if tangents.ndim != 2 or tangents.shape[1] != P:
            raise ValueError(f"tangents must have shape (m, P) with P={P} "
                             f"parameters; got {tangents.shape}.")
        return tangents, tangents.shape[0]
    if not isinstance(num_directions, int) or num_directions < 1:
        raise ValueError(f"num_directions must be a positive int (m), got "
                         f"{num_directions!r}; None gives the exact Jacobian.")
    key = jax.random.key(0) if key is None else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)  # a raw jax.random.PRNGKey
    return key, num_directions


def _tangent(source, j, m: int, like) -> Float[Array, " P"]:
    """Tangent ``v_j``: row j of explicit tangents, or ``N(0, I/m)`` from the key."""
    if jnp.issubdtype(source.dtype, jax.dtypes.prng_key):
        normal = jax.random.normal(jax.random.fold_in(source, j), like.shape,
                                   like.dtype)
        return normal / math.sqrt(m)  # E[V^T V] = I_P: unbiased inner products
    return source[j]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def sketch_block(apply_fn: ApplyFn, m: int, chunk: int, params, x_b, source
                 ) -> Float[Array, "b K m"]:
    """``J(x_i) V^T`` for one batch: the primal once, then one JVP per tangent.

    ``chunk`` tangents go through the network together (``lax.map`` with a
    batch size); ``source`` is a PRNG key or explicit tangents (m, P).
    """
    flat_w0, f = _flat(apply_fn, params)
    _, jvp_fn = jax.linearize(lambda w: f(w, x_b), flat_w0)
    columns = jax.lax.map(lambda j: jvp_fn(_tangent(source, j, m, flat_w0)),
                          jnp.arange(m), batch_size=chunk)  # (m, b, K)
    return jnp.transpose(columns, (1, 2, 0))


def empirical_ntk(apply_fn: ApplyFn, params, x1, x2=None, *,
                  method: str = "auto", batch_size: int = 8
                  ) -> Float[Array, "n1 n2 K K"]:
    """The empirical neural tangent kernel ``Theta[i, j] = J(x1_i) J(x2_j)^T``.

    Two algorithms, whose costs for n1 x n2 pairs with F = FLOPs of one
    forward pass and P parameters are (Novak et al. 2022, "Fast Finite Width
    Neural Tangent Kernel", sec. 3):

    - ``"jacobian"``: per-sample Jacobians (K reverse passes per sample), then
      ``sum_leaves J1_leaf J2_leaf^T`` leaf by leaf (no flattened copy):
      ~(n1 + n2) K 3F + n1 n2 K^2 2P FLOPs, memory (n1 + n2) K P;
    - ``"ntvp"``: for each ``x2_j`` its K Jacobian rows (reverse passes), each
      pushed through a JVP on ``x1`` (the primal of ``x1`` linearized once):
      ~n2 K 3F + n1 n2 K 2F FLOPs, memory ``batch_size`` x K x P.

    ``"auto"`` picks ``"ntvp"`` when ``F < K P`` (wide dense layers, many
    outputs: a forward pass is cheap next to K copies of the parameters) and
    ``"jacobian"`` otherwise (convolutions reuse each weight many times, so
    F >> K P for ResNets with few classes), with F from XLA's cost analysis.

    Args:
      apply_fn: ``apply_fn(params, x) -> (n, K)``.
      params: the weights ``w0`` (pytree).
      x1, x2: inputs (n1, ...) and (n2, ...); ``x2=None`` means ``x1``.
      method: ``"auto"``, ``"jacobian"`` or ``"ntvp"``.
      batch_size: samples of ``x2`` per vectorized step (``"ntvp"`` only).

    Returns:
      ``Theta`` (n1, n2, K, K), float like ``params``.
    """
    K = _check_outputs(apply_fn, params, x1, "x1")
    same = x2 is None
    x2 = x1 if same else x2
    if _check_outputs(apply_fn, params, x2, "x2") != K:
        raise ValueError("apply_fn gives a different K for x1 and x2.")
    if method == "auto":
        method = ntk_method(apply_fn, params, x1)
    if method == "jacobian":
        return _ntk_by_jacobians(apply_fn, params, x1, x2, same)
    if method == "ntvp":
        return _ntk_by_jvp_of_vjp(apply_fn, params, x1, x2, batch_size)
    raise ValueError(f"method must be 'auto', 'jacobian' or 'ntvp', got {method!r}.")


def ntk_method(apply_fn: ApplyFn, params, x) -> str:
    """The cheaper NTK algorithm: ``"ntvp"`` if ``F < K P``, else ``"jacobian"``."""
    abstract = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)  # noqa: E731
    one = jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype)
    lowered = jax.jit(apply_fn).lower(jax.tree.map(abstract, params), one)
    analysis = lowered.cost_analysis() or {}
    F = float(analysis.get("flops", 0.0))
    K = jax.eval_shape(apply_fn, params, one).shape[1]
    P = sum(leaf.size for leaf in jax.tree.leaves(params))
    return "ntvp" if 0 < F < K * P else "jacobian"


@functools.partial(jax.jit, static_argnums=(0, 4))
def _ntk_by_jacobians(apply_fn, params, x1, x2, same: bool):
    """``sum_leaves J1_leaf J2_leaf^T``: no flattening copy of the Jacobians."""
    per_sample_jac = jax.vmap(jax.jacrev(_per_sample(apply_fn)), in_axes=(None, 0))
    J1 = per_sample_jac(params, x1)  # leaves (n1, K, *leaf_shape)
    J2 = J1 if same else per_sample_jac(params, x2)

    def contract(a, b):
        a = a.reshape(a.shape[0], a.shape[1], -1)
        b = b.reshape(b.shape[0], b.shape[1], -1)
        return jnp.einsum("iap,jbp->ijab", a, b)

    return sum(jax.tree.leaves(jax.tree.map(contract, J1, J2)))


@functools.partial(jax.jit, static_argnums=(0, 4))
def _ntk_by_jvp_of_vjp(apply_fn, params, x1, x2, batch_size: int):
    """``Theta[:, j] = J(x1) J(x2_j)^T``: K reverse passes, then K JVPs on x1."""
    _, jvp_on_x1 = jax.linearize(lambda p: apply_fn(p, x1), params)
    rows_of = jax.jacrev(_per_sample(apply_fn))  # J(x2_j): leaves (K, *leaf)

    def kernel_column(x2_j):
        return jax.vmap(jvp_on_x1)(rows_of(params, x2_j))  # (K_b, n1, K_a)

    columns = jax.lax.map(kernel_column, x2,
                          batch_size=min(batch_size, x2.shape[0]))
    return jnp.transpose(columns, (2, 0, 3, 1))  # (n1, n2, K_a, K_b)


def linearize(apply_fn: Callable, params0) -> Callable:
    """Returns ``f_lin(params, x) = f_w0(x) + J(x) (params - params0)`` (by JVP).

    ``f_lin`` is exactly linear in ``params``; it agrees with ``apply_fn`` to
    first order, ``f(w0 + eps d) - f_lin(w0 + eps d) = O(eps^2)``. ``apply_fn``
    may return any pytree of arrays (a ResNetApply's ``(logits, features)``).
    """
    def f_lin(params, x):
        delta = jax.tree.map(jnp.subtract, params, params0)
        f0, df = jax.jvp(lambda p: apply_fn(p, x), (params0,), (delta,))
        return jax.tree.map(jnp.add, f0, df)

    return f_lin
