"""Two processes on loopback compute one derivative under jax.distributed; the
oracle is the single-process path on all the samples (itself checked against
brute-force refits in test_derivative.py)."""

import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from oracles import assert_close

import diva_jax

N, D, K, LAM = 96, 7, 3, 0.5
TIMEOUT_S = 120

WORKER = textwrap.dedent("""
    import os, sys
    process_id, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{{port}}",
                               num_processes=2, process_id=process_id,
                               initialization_timeout=60)
    import numpy as np
    from jax.experimental import multihost_utils
    import diva_jax

    rng = np.random.default_rng(0)
    Z, y = rng.standard_normal(({n}, {d})), rng.integers(0, {k}, {n})
    alpha = rng.uniform(0, 2, {n})
    alpha[:5] = 0.0
    mine = slice(process_id * {n} // 2, (process_id + 1) * {n} // 2)
    Z, y, alpha = (diva_jax.shard_samples(x[mine]) for x in (Z, y, alpha))
    assert len(jax.devices()) == 4 and len(jax.local_devices()) == 2

    value, grad = diva_jax.value_and_dataset_derivative(Z, y, {lam}, alpha)
    ones = diva_jax.dataset_derivative(Z, y, {lam})
    spec = str(grad.sharding.spec)
    grad, ones = (multihost_utils.process_allgather(g, tiled=True)
                  for g in (grad, ones))
    if process_id == 0:
        np.savez(out, value=float(value), grad=grad, ones=ones, spec=spec)
""").format(n=N, d=D, k=K, lam=LAM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(tmp_path):
    script, out = tmp_path / "worker.py", tmp_path / "result.npz"
    script.write_text(WORKER)
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(script), str(i), str(port),
                               str(out)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"the two processes did not finish in {TIMEOUT_S} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log[-3000:]
    return np.load(out)


@pytest.mark.slow
def test_two_processes_agree_with_one(tmp_path):
    result = _run_two_processes(tmp_path)
    rng = np.random.default_rng(0)
    Z, y = rng.standard_normal((N, D)), rng.integers(0, K, N)
    alpha = rng.uniform(0, 2, N)
    alpha[:5] = 0.0
    value, grad = diva_jax.value_and_dataset_derivative(Z, y, LAM, alpha)
    assert_close(result["value"], value)
    assert_close(result["grad"], grad)
    assert_close(result["ones"], diva_jax.dataset_derivative(Z, y, LAM))
    assert str(result["spec"]).endswith("('samples',)")
