"""The sample axis sharded over 8 forced CPU devices (in a subprocess): results
equal the single-device path (itself checked against brute-force refits in
test_derivative.py), gradients stay sharded like Z, and the compiled program
only all-reduces."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from oracles import assert_close

import diva_jax

CHILD = textwrap.dedent("""
    import json, os, re, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import diva_jax
    from diva_jax._derivative import _closed_loo
    from diva_jax._losses import squared

    out, results = sys.argv[1], {}
    rng = np.random.default_rng(0)
    Z, y = rng.standard_normal((800, 12)), rng.integers(0, 4, 800)
    alpha, mask = rng.uniform(0, 2, 800), rng.random(800) < 0.8
    alpha[:9] = 0.0
    Z_val, y_val = rng.standard_normal((50, 12)), rng.integers(0, 4, 50)
    Zd, yd = rng.standard_normal((16, 40)), rng.integers(0, 3, 16)
    Zs, ys, As, Ms = (diva_jax.shard_samples(x) for x in (Z, y, alpha, mask))

    def record(name, value, grad):
        results[name] = {"value": float(value), "grad": np.asarray(grad).tolist(),
                         "spec": str(grad.sharding.spec),
                         "devices": len(grad.sharding.device_set)}

    record("loo", *diva_jax.value_and_dataset_derivative(Zs, ys, 0.5, As, Ms))
    record("ones", *diva_jax.value_and_dataset_derivative(Zs, ys, 0.5))
    record("validation", *diva_jax.value_and_dataset_derivative(
        Zs, ys, 0.5, As, validation=(Z_val, y_val)))
    record("autodiff", *diva_jax.value_and_dataset_derivative(
        Zs, ys, 0.5, As, Ms, method="autodiff"))
    record("dual", *diva_jax.value_and_dataset_derivative(
        diva_jax.shard_samples(Zd), yd, 0.5))
    mesh2 = Mesh(np.asarray(jax.devices()).reshape(4, 2), ("samples", "model"))
    record("mesh2", *diva_jax.value_and_dataset_derivative(
        diva_jax.shard_samples(Z, mesh2), y, 0.5, alpha, mask))
    Y = diva_jax.shard_samples(diva_jax.one_hot(y, 4))
    record("jit", *jax.jit(lambda Z, Y, a, m: diva_jax.value_and_dataset_derivative(
        Z, Y, 0.5, a, m))(Zs, Y, As, Ms))
    hlo = _closed_loo.lower(As, Zs, Y, 0.5, Ms, solver="primal",
                            loss=squared).compile().as_text()
    results["collectives"] = sorted(set(re.findall(
        r"(all-reduce|all-gather|all-to-all|reduce-scatter|collective-permute)\\(",
        hlo)))
    results["n_by_n"] = re.search(r"\\[800,800\\]", hlo) is not None
    try:
        diva_jax.shard_samples(Z[:803 - 8])
    except ValueError as err:
        results["uneven"] = str(err)
    with open(out, "w") as f:
        json.dump(results, f)
""")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    path = tmp_path_factory.mktemp("sharding")
    script, out = path / "child.py", path / "results.json"
    script.write_text(CHILD)
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def _problem():
    rng = np.random.default_rng(0)
    Z, y = rng.standard_normal((800, 12)), rng.integers(0, 4, 800)
    alpha, mask = rng.uniform(0, 2, 800), rng.random(800) < 0.8
    alpha[:9] = 0.0
    Z_val, y_val = rng.standard_normal((50, 12)), rng.integers(0, 4, 50)
    return Z, y, alpha, mask, (Z_val, y_val), rng.standard_normal((16, 40)), \
        rng.integers(0, 3, 16)


def test_sharded_equals_single_device(sharded):
    Z, y, alpha, mask, validation, Zd, yd = _problem()
    expected = {
        "loo": diva_jax.value_and_dataset_derivative(Z, y, 0.5, alpha, mask),
        "ones": diva_jax.value_and_dataset_derivative(Z, y, 0.5),
        "validation": diva_jax.value_and_dataset_derivative(
            Z, y, 0.5, alpha, validation=validation),
        "dual": diva_jax.value_and_dataset_derivative(Zd, yd, 0.5),
    }
    expected["autodiff"] = expected["mesh2"] = expected["jit"] = expected["loo"]
    for name, (value, grad) in expected.items():
        assert_close(sharded[name]["value"], value), name
        assert_close(sharded[name]["grad"], grad), name


def test_gradient_keeps_the_sample_sharding(sharded):
    for name in ("loo", "ones", "validation", "autodiff", "dual", "jit"):
        assert sharded[name]["spec"] == "P('samples',)", name
        assert sharded[name]["devices"] == 8, name
    assert sharded["mesh2"]["spec"] == "P('samples',)"


def test_only_all_reduces_and_no_n_by_n_array(sharded):
    assert sharded["collectives"] == ["all-reduce"]
    assert not sharded["n_by_n"]


def test_uneven_rows_raise_a_clear_error(sharded):
    assert "do not split evenly over 8 devices" in sharded["uneven"]
    assert "alpha=0" in sharded["uneven"]
