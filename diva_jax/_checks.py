"""Input checks for the public entry points.

Shapes and dtypes are checked always (also at trace time); values (finiteness,
signs, label range) are checked only on concrete arrays, since under ``jax.jit``
or ``jax.grad`` they are not known until run time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """Whether ``x`` holds values now (not a tracer inside jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def _float_dtype(*arrays):
    dtype = jnp.result_type(*[a.dtype for a in arrays])
    if not jnp.issubdtype(dtype, jnp.floating) or jnp.finfo(dtype).bits < 32:
        dtype = jnp.zeros((), float).dtype
    return dtype


def _require_finite(x, name: str) -> None:
    if is_concrete(x) and x.size and not bool(jnp.all(jnp.isfinite(x))):
        bad = int(jnp.sum(~jnp.isfinite(x)))
        raise ValueError(f"{name} has {bad} NaN or infinite entries; clean or drop "
                         f"them before computing the dataset derivative.")


def _as_array(x, name: str):
    if x is None:
        raise TypeError(f"{name} is required, got None.")
    if not isinstance(x, jax.Array):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as err:
            kind = type(x).__name__
            raise TypeError(f"{name} must be an array, got {kind}.") from err
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}.")
    return jnp.asarray(x)


def check_features(Z, name: str = "Z"):
    """Returns ``Z`` as a float array of shape (N, d) or (N, K, m)."""
    Z = _as_array(Z, name)
    if Z.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (N, d), or (N, K, m) for "
                         f"per-sample Jacobian blocks; got shape {Z.shape}.")
    if Z.shape[0] == 0 or Z.shape[-1] == 0:
        raise ValueError(f"{name} is empty (shape {Z.shape}); it needs at least one "
                         f"sample and one feature.")
    Z = Z.astype(_float_dtype(Z))
    _require_finite(Z, name)
    return Z


def check_targets(Y, n: int, dtype, *, num_classes=None, name: str = "Y"):
    """Returns float targets (N, K): one-hot when ``Y`` holds int labels (N,)."""
    Y = _as_array(Y, name)
    if Y.ndim == 1 and jnp.issubdtype(Y.dtype, jnp.integer):
        if num_classes is None:
            if not is_concrete(Y):
                raise ValueError(f"{name} holds int labels inside a traced function;"
                                 f" pass num_classes= so K is known at trace time.")
            num_classes = int(jnp.max(Y)) + 1
        if is_concrete(Y) and (int(jnp.min(Y)) < 0 or int(jnp.max(Y)) >= num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes}); got range "
                             f"[{int(jnp.min(Y))}, {int(jnp.max(Y))}].")
        Y = jax.nn.one_hot(Y, num_classes, dtype=dtype)
    elif Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != n:
        raise ValueError(f"{name} must be int labels (N,) or targets (N, K) with "
                         f"N={n} matching the features; got shape {Y.shape}.")
    Y = Y.astype(dtype)
    _require_finite(Y, name)
    return Y


def check_weights(alpha, n: int, dtype, *, name: str = "alpha"):
    """Returns sample weights (N,) of ``dtype``; None means all ones."""
    if alpha is None:
        return jnp.ones(n, dtype)
    alpha = _as_array(alpha, name)
    if alpha.shape != (n,):
        raise ValueError(f"{name} must have shape (N,) = ({n},), one weight per "
                         f"sample; got shape {alpha.shape}.")
    alpha = alpha.astype(dtype)
    _require_finite(alpha, name)
    if is_concrete(alpha) and bool(jnp.any(alpha < 0)):
        raise ValueError(f"{name} must be >= 0; {int(jnp.sum(alpha < 0))} weights are "
                         f"negative (project with jnp.maximum(alpha, 0)).")
    return alpha


def check_lam(lam, name: str = "lam"):
    """Checks the ridge strength: a positive finite scalar."""
    lam_arr = _as_array(lam, name)
    if lam_arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {lam_arr.shape}. "
                         f"Use select_lambda or jax.vmap for a grid of values.")
    if is_concrete(lam_arr) and not (0 < float(lam_arr) < np.inf):
        raise ValueError(f"{name} must be a finite number > 0, got {float(lam_arr)}; "
                         f"diva_jax.select_lambda picks one by leave-one-out loss.")
    return lam


def check_mask(mask, n: int, dtype, *, name: str = "mask"):
    """Returns the scoring mask (N,) as floats; None means every sample."""
    if mask is None:
        return jnp.ones(n, dtype)
    mask = _as_array(mask, name)
    if mask.shape != (n,):
        raise ValueError(f"{name} must have shape (N,) = ({n},); got {mask.shape}.")
    mask = mask.astype(dtype)
    if is_concrete(mask):
        if bool(jnp.any(mask < 0)) or not bool(jnp.all(jnp.isfinite(mask))):
            raise ValueError(f"{name} must be finite and >= 0 (bool or weights).")
        if float(jnp.sum(mask)) == 0:
            raise ValueError(f"{name} selects no sample; at least one must be scored.")
    return mask


def check_problem(Z, Y, alpha, lam, *, num_classes=None):
    """Checks and converts ``(Z, Y, alpha, lam)`` together; returns them."""
    Z = check_features(Z)
    n = Z.shape[0]
    Y = check_targets(Y, n, Z.dtype, num_classes=num_classes)
    if Z.ndim == 3 and Y.shape[1] != Z.shape[1]:
        raise ValueError(f"Jacobian blocks Z (N, K, m) need targets with K={Z.shape[1]}"
                         f" outputs; Y has shape {Y.shape}.")
    alpha = check_weights(alpha, n, Z.dtype)
    check_lam(lam)
    return Z, Y, alpha, lam


def one_hot(labels, num_classes: int | None = None, dtype=None):
    """One-hot targets (N, K) from int labels (N,), checked for range."""
    labels = _as_array(labels, "labels")
    if labels.ndim != 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be 1-D ints; got {labels.dtype} {labels.shape}.")
    dtype = jnp.zeros((), float).dtype if dtype is None else dtype
    return check_targets(labels, labels.shape[0], dtype, num_classes=num_classes,
                         name="labels")
