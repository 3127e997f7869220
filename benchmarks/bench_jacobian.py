"""Cost of the Jacobian sketch: time, FLOPs and memory per sample of a ResNet.

For a ResNet (default: ResNet-18, K = 10 logits, random weights, 64 x 64
images) this measures, on the current device:

- the forward pass per sample (jitted logits), the floor;
- the sketch ``Z_i = J(x_i) V^T`` along m random tangents per sample (the
  compiled step of ``jacobian_features``), for each ``direction_batch_size``;
- XLA's FLOP count of both, and the sketch/forward ratio (the cost model in
  ``diva_jax/features/_jacobian.py`` predicts about 1 + 2m forwards);
- peak memory: XLA's memory analysis of one compiled step (arguments +
  outputs + temporaries) and the process' maximum RSS. Each configuration runs
  in its own subprocess, so each RSS high-water mark is its own.

Every timing compiles first, blocks until ready, and reports the median of
``--repeats`` runs; the answer is checked against ``jax.jvp`` along the same
tangents. Results go to ``benchmarks/results/bench_jacobian.json``.

    python benchmarks/bench_jacobian.py --directions 64 --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def random_resnet(arch: str, num_classes: int, seed: int = 0):
    """``(apply_fn, params)`` with He-scaled random weights made in numpy."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from diva_jax import features

    model = getattr(features, arch)(num_classes)
    shapes = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, 32, 32, 3), jnp.float32))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            fan_in = math.prod(leaf.shape[:-1])
            return rng.standard_normal(leaf.shape, np.float32) * np.sqrt(2 / fan_in)
        return np.ones(leaf.shape, np.float32) if "scale" in name or "var" in name \
            else np.zeros(leaf.shape, np.float32)

    variables = jax.tree_util.tree_map_with_path(fill, shapes)
    return features.ResNetApply(model, variables["batch_stats"]), variables["params"]


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_against_jvp(apply_fn, params, x, key, m, Z) -> float:
    """Max relative error of sketch columns 0 and m-1 (sample 0) vs ``jax.jvp``."""
    import jax
    import numpy as np
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(params)
    errors = []
    for j in (0, m - 1):
        v = jax.random.normal(jax.random.fold_in(key, j), flat.shape) / np.sqrt(m)
        column = jax.jit(lambda p, t: jax.jvp(lambda q: apply_fn.logits(q, x[:1]),
                                              (p,), (t,))[1])(params, unravel(v))
        errors.append(np.max(np.abs(Z[0, :, j] - column[0])) /
                      np.max(np.abs(column)))
    return float(max(errors))


def worker(config: dict) -> dict:
    """Runs one configuration; returns its measurements."""
    import jax
    import numpy as np

    from diva_jax.features._jacobian import sketch_block

    apply_fn, params = random_resnet(config["arch"], config["num_classes"])
    b, m, chunk = config["batch_size"], config["directions"], config["chunk"]
    size = config["image_size"]
    x = np.random.default_rng(1).standard_normal((b, size, size, 3), np.float32)
    key = jax.random.key(2)

    forward = jax.jit(apply_fn.logits).lower(params, x).compile()
    forward(params, x).block_until_ready()
    t_forward = median_seconds(lambda: forward(params, x).block_until_ready(),
                               config["repeats"])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    sketch = sketch_block.lower(apply_fn.logits, m, chunk, params, x, key).compile()
    Z = np.asarray(sketch(params, x, key))
    t_sketch = median_seconds(lambda: sketch(params, x, key).block_until_ready(),
                              config["repeats"])
    memory = sketch.memory_analysis()
    step_bytes = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                  + memory.temp_size_in_bytes)
    num_params = sum(p.size for p in jax.tree.leaves(params))
    return dict(
        config, num_params=int(num_params),
        forward_ms_per_sample=1e3 * t_forward / b,
        sketch_ms_per_sample=1e3 * t_sketch / b,
        sketch_over_forward=t_sketch / t_forward,
        forward_gflop_per_sample=_flops(forward) / b / 1e9,
        sketch_gflop_per_sample=_flops(sketch) / b / 1e9,
        step_peak_mib=step_bytes / 2**20,
        step_temp_mib=memory.temp_size_in_bytes / 2**20,
        rss_before_sketch_mib=rss_before / 2**20,
        rss_peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        max_relative_error_vs_jvp=check_against_jvp(apply_fn, params, x, key, m, Z))


def _flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis.get("flops", float("nan")))


def environment() -> dict:
    import jax

    return {"device": str(jax.devices()[0]), "platform": jax.default_backend(),
            "jax": jax.__version__, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18",
                        choices=("resnet18", "resnet34", "resnet50"))
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--directions", type=int, default=64, help="m")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--direction-batch-sizes", default="8,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "bench_jacobian.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    runs = []
    for chunk in (int(c) for c in args.direction_batch_sizes.split(",")):
        config = dict(arch=args.arch, num_classes=args.num_classes,
                      image_size=args.image_size, directions=args.directions,
                      batch_size=args.batch_size, chunk=chunk, repeats=args.repeats)
        out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(config)],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = runs[-1]
        print(f"{args.arch} {args.image_size}px m={args.directions} b={args.batch_size}"
              f" chunk={chunk}: forward {r['forward_ms_per_sample']:.1f} ms/sample, "
              f"sketch {r['sketch_ms_per_sample']:.0f} ms/sample "
              f"({r['sketch_over_forward']:.0f}x forward of the batch), "
              f"{r['sketch_gflop_per_sample']:.1f} GFLOP/sample, step memory "
              f"{r['step_peak_mib']:.0f} MiB, RSS peak {r['rss_peak_mib']:.0f} MiB, "
              f"error vs jvp {r['max_relative_error_vs_jvp']:.1e}")
        assert r["max_relative_error_vs_jvp"] < 1e-3, "sketch disagrees with jax.jvp"

    from diva_jax._io import atomic_write_json

    atomic_write_json(args.out, {"benchmark": "jacobian_sketch",
                                 "environment": environment(), "runs": runs})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
