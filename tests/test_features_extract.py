"""Whole-dataset feature extraction: batching, caching, sharding.

Oracle: the same function applied to the whole array at once.
"""

import logging
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diva_jax.features import extract_features
from test_features_resnet import random_tiny_resnet


def two_headed(params, x):
    """A small stand-in network: ``(logits, features)`` of flattened images."""
    flat = x.reshape(x.shape[0], -1)
    return flat @ params["w"], jnp.tanh(flat @ params["v"])


def problem(n=7, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, 4, 4, 3)).astype(np.float32)
    params = {"w": rng.standard_normal((48, 3)), "v": rng.standard_normal((48, 5))}
    return params, images


@pytest.mark.parametrize("batch_size", [1, 3, 7, 16])
def test_features_equal_one_whole_batch(batch_size):
    params, images = problem()
    expected = np.asarray(two_headed(params, images)[1])
    Z = extract_features(two_headed, params, images, batch_size=batch_size,
                         progress=False)
    assert Z.shape == (7, 5) and Z.dtype == np.float32
    np.testing.assert_allclose(Z, expected, rtol=1e-6, atol=1e-6)
    logits_only = extract_features(lambda p, x: two_headed(p, x)[0], params, images,
                                   batch_size=batch_size, progress=False)
    np.testing.assert_allclose(logits_only, two_headed(params, images)[0],
                               rtol=1e-6, atol=1e-5)


def test_resnet_penultimate_features():
    apply_fn, params = random_tiny_resnet(1)
    images = np.random.default_rng(2).standard_normal((5, 16, 16, 3)).astype(
        np.float32)
    Z = extract_features(apply_fn, params, images, batch_size=2, progress=False)
    np.testing.assert_allclose(Z, jax.jit(apply_fn.features)(params, images),
                               rtol=1e-5, atol=1e-6)


def failing(params, x):
    raise AssertionError("the cache should have been used")


def test_complete_cache_is_reused(tmp_path):
    params, images = problem()
    cache = tmp_path / "z.npz"
    first = extract_features(two_headed, params, images, batch_size=4, cache=cache,
                             progress=False)
    assert cache.is_file() and not list(tmp_path.glob("*.tmp"))
    again = extract_features(failing, params, images, batch_size=4, cache=cache,
                             progress=False)
    np.testing.assert_array_equal(again, first)


@pytest.mark.parametrize("damage", ["corrupt", "partial", "other weights",
                                    "other key"])
def test_partial_corrupt_or_stale_cache_is_recomputed(tmp_path, caplog, damage):
    params, images = problem()
    cache = tmp_path / "z.npz"
    expected = extract_features(two_headed, params, images, batch_size=4,
                                cache=cache, cache_key="flowers/train",
                                progress=False)
    key = "flowers/train"
    if damage == "corrupt":
        cache.write_bytes(cache.read_bytes()[:100])
    elif damage == "partial":
        stored = dict(np.load(cache))
        np.savez(cache, features=stored["features"][:3],
                 fingerprint=stored["fingerprint"])
    elif damage == "other weights":
        extract_features(two_headed, problem(seed=1)[0], images, batch_size=4,
                         cache=cache, cache_key=key, progress=False)
    else:
        key = "flowers/test"
    with caplog.at_level(logging.WARNING):
        Z = extract_features(two_headed, params, images, batch_size=4, cache=cache,
                             cache_key=key, progress=False)
    assert "recomputing" in caplog.text
    np.testing.assert_allclose(Z, expected, rtol=1e-6)
    if key == "flowers/train":  # the rewritten cache is complete again
        np.testing.assert_array_equal(
            extract_features(failing, params, images, batch_size=4, cache=cache,
                             cache_key=key, progress=False), Z)


def test_bad_arguments_are_named():
    params, images = problem()
    with pytest.raises(ValueError, match="images is empty"):
        extract_features(two_headed, params, images[:0], progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        extract_features(two_headed, params, images, batch_size=0)
    with pytest.raises(TypeError, match="Mesh or NamedSharding"):
        extract_features(two_headed, params, images, sharding="devices")


SHARDED = textwrap.dedent("""
    import jax, numpy as np
    import jax.numpy as jnp
    from jax.sharding import Mesh
    from diva_jax.features import extract_features
    assert jax.device_count() == 2, jax.devices()
    rng = np.random.default_rng(0)
    images = rng.standard_normal((7, 4, 4, 3)).astype(np.float32)
    params = {"v": rng.standard_normal((48, 5)).astype(np.float32)}
    f = lambda p, x: jnp.tanh(x.reshape(x.shape[0], -1) @ p["v"])
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    Z = extract_features(f, params, images, batch_size=4, sharding=mesh,
                         progress=False)
    np.testing.assert_allclose(Z, f(params, images), rtol=1e-5, atol=1e-6)
    try:
        extract_features(f, params, images, batch_size=3, sharding=mesh)
    except ValueError as err:
        assert "multiple of the 2 devices" in str(err)
    else:
        raise AssertionError("odd batch on 2 devices was accepted")
    print("sharded ok")
""")


def test_sharded_over_two_cpu_devices_equals_unsharded():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", SHARDED], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sharded ok" in result.stdout
