"""Streaming over chunks of rows: equal to the in-memory closed form (itself
checked against brute-force refits in test_derivative.py) to float rounding,
and to finite differences of brute-force LOO refits directly."""

import logging

import jax.numpy as jnp
import numpy as np
import pytest
from oracles import (
    assert_close, brute_loo_loss, central_differences, random_problem,
)

import diva_jax
from diva_jax._streaming import streaming_value_and_dataset_derivative as stream

N, D, K = 240, 6, 3


def _problem(seed=0, zeros=7):
    Z, _, alpha = random_problem(np.random.default_rng(seed), N, D, K, zeros=zeros)
    labels = np.random.default_rng(seed + 1).integers(0, K, N)
    mask = np.arange(N) % 5 != 2
    return Z, labels, alpha, mask


@pytest.mark.parametrize("chunk_size,loss", [
    (37, "squared"), (80, "cross_entropy"), (N, "squared"), (1000, "cross_entropy")])
def test_loo_equals_in_memory_path(chunk_size, loss):
    # chunk sizes: ragged last chunk (240 = 6 * 37 + 18), exact division, one
    # chunk, one padded chunk larger than N.
    Z, labels, alpha, mask = _problem()
    value, grad = stream(Z, labels, 0.7, alpha=alpha, mask=mask, loss=loss,
                         chunk_size=chunk_size, progress=False)
    expected = diva_jax.value_and_dataset_derivative(Z, labels, 0.7, alpha, mask,
                                                     loss=loss, solver="primal")
    assert_close(value, expected[0])
    assert_close(grad, expected[1])
    assert grad.shape == (N,) and np.all(np.isfinite(grad[alpha == 0]))


@pytest.mark.parametrize("chunk_size", [50])
def test_validation_equals_in_memory_path(chunk_size):
    Z, labels, alpha, _ = _problem(3)
    rng = np.random.default_rng(4)
    Z_val, y_val = rng.standard_normal((40, D)), rng.integers(0, K, 40)
    value, grad = stream(Z, labels, 0.3, alpha=alpha, validation=(Z_val, y_val),
                         chunk_size=chunk_size, progress=False)
    expected = diva_jax.value_and_dataset_derivative(
        Z, labels, 0.3, alpha, validation=(Z_val, y_val), solver="primal")
    assert_close(value, expected[0])
    assert_close(grad, expected[1])


def test_loo_equals_differences_of_brute_force_refits():
    Z, Y, alpha = random_problem(np.random.default_rng(5), 25, 4, 2, zeros=0)
    grad = diva_jax.streaming_dataset_derivative(Z, Y, 0.5, alpha=alpha,
                                                 chunk_size=7, progress=False)
    expected = central_differences(lambda a: brute_loo_loss(Z, Y, a, 0.5), alpha)
    np.testing.assert_allclose(grad, expected, atol=1e-7 * np.abs(expected).max())


def test_float_targets_and_float32():
    Z, Y, alpha = random_problem(np.random.default_rng(6), N, D, K, zeros=3)
    Z32, Y32 = Z.astype(np.float32), Y.astype(np.float32)
    grad = diva_jax.streaming_dataset_derivative(Z32, Y32, 1.0, alpha=alpha,
                                                 chunk_size=64, progress=False)
    expected = diva_jax.dataset_derivative(Z, Y, 1.0, alpha)
    assert grad.dtype == np.float32
    assert_close(grad, expected, dtype=np.float32)


def test_sources_npy_path_memmap_callable_and_list(tmp_path):
    Z, labels, alpha, mask = _problem(7)
    path = tmp_path / "features.npy"
    np.save(path, Z)
    expected = np.asarray(diva_jax.dataset_derivative(Z, labels, 0.5, alpha, mask))
    chunks = [Z[i:i + 50] for i in range(0, N, 50)]
    sources = {
        "path": str(path),
        "memmap": np.load(path, mmap_mode="r"),
        "memmap view": np.load(path, mmap_mode="r")[:],
        "callable": lambda: (Z[i:i + 50] for i in range(0, N, 50)),
        "list": chunks,
        "jax array": jnp.asarray(Z),
    }
    for name, source in sources.items():
        grad = diva_jax.streaming_dataset_derivative(
            source, labels, 0.5, alpha=alpha, mask=mask, chunk_size=50,
            progress=False)
        assert_close(grad, expected), name


def test_each_pass_is_logged_with_its_time(caplog):
    Z, labels, _, _ = _problem(8)
    with caplog.at_level(logging.INFO, logger="diva_jax._streaming"):
        diva_jax.streaming_dataset_derivative(Z, labels, 0.5, chunk_size=100,
                                              progress=False)
    passes = [r.pass_name for r in caplog.records if hasattr(r, "pass_seconds")]
    assert passes == ["pass 1: Z^T D Z", "pass 2: Q^T diag(v) Q",
                      "pass 3: per-sample terms"]


def test_bad_inputs_raise_clear_errors():
    Z, labels, _, _ = _problem(9)
    bad = Z.copy()
    bad[100, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        diva_jax.streaming_dataset_derivative(bad, labels, 0.5, chunk_size=64,
                                              progress=False)
    with pytest.raises(ValueError, match="labels"):
        diva_jax.streaming_dataset_derivative(Z, labels[:-1], 0.5, progress=False)
    with pytest.raises(ValueError, match="chunk_size"):
        diva_jax.streaming_dataset_derivative(Z, labels, 0.5, chunk_size=0)
    with pytest.raises(ValueError, match="lam"):
        diva_jax.streaming_dataset_derivative(Z, labels, -1.0)
    with pytest.raises(TypeError, match="one-shot iterator"):
        diva_jax.streaming_dataset_derivative(iter([Z]), labels, 0.5)
    with pytest.raises(ValueError, match="rows"):
        diva_jax.streaming_dataset_derivative([Z[:100]], labels, 0.5,
                                              progress=False)
    with pytest.raises(ValueError, match="Z_val"):
        diva_jax.streaming_dataset_derivative(
            Z, labels, 0.5, validation=(np.ones((4, D + 1)), np.zeros(4, int)))

