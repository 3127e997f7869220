"""The dataset derivative of features larger than memory, streamed from disk.

Writes N x d float32 features (default 5,000,000 x 256: 5.1 GB) and int
labels of a noisy linear teacher to ``.npy`` files in a temporary folder under
/tmp (plain file writes, so writing does not hold the data in memory), then, in
a fresh subprocess so that its peak memory is its own, runs
``diva_jax.streaming_value_and_dataset_derivative(np.load(path,
mmap_mode="r"), labels, lam)``: three passes over the file. It records the
time of each pass (from the library's log records; each includes compiling
its step on the first chunk), the total, the time of a pass that only reads
the file, and the subprocess' peak resident memory (``getrusage``) next to the
size of the data.

The answer is checked on a prefix of the same file (``--check-rows``): the
streamed derivative of those rows equals the in-memory closed form. The
folder is deleted afterwards unless ``--keep``. Results:
``benchmarks/results/bench_streaming.json``.

    python benchmarks/bench_streaming.py                  # 5M x 256, minutes
    python benchmarks/bench_streaming.py --quick          # 20k x 32, seconds
"""

from __future__ import annotations

import _common  # noqa: F401  (sets OPENBLAS_NUM_THREADS before numpy)

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

logger = logging.getLogger("bench_streaming")
NUM_CLASSES = 10


def write_features(folder: Path, n: int, d: int, chunk: int, seed: int = 0):
    """``features.npy`` (n, d) float32 and ``labels.npy`` (n,), written in chunks."""
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal((d, NUM_CLASSES)).astype(np.float32) / np.sqrt(d)
    labels = np.empty(n, np.int32)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
              "fortran_order": False, "shape": (n, d)}
    clock = time.perf_counter()
    with open(folder / "features.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for start in range(0, n, chunk):
            Z = rng.standard_normal((min(chunk, n - start), d), dtype=np.float32)
            noise = rng.standard_normal((Z.shape[0], NUM_CLASSES), dtype=np.float32)
            labels[start:start + Z.shape[0]] = np.argmax(Z @ teacher + noise, 1)
            f.write(Z.tobytes())
    np.save(folder / "labels.npy", labels)
    return time.perf_counter() - clock


def run_child(folder: Path, lam: float, chunk: int) -> dict:
    """The measured run, in this process: pass times and peak memory."""
    import resource

    import diva_jax

    passes = {}

    class PassTimes(logging.Handler):
        def emit(self, record):
            if hasattr(record, "pass_seconds"):
                passes[record.pass_name] = record.pass_seconds

    logging.getLogger("diva_jax._streaming").addHandler(PassTimes())
    logging.getLogger("diva_jax._streaming").setLevel(logging.INFO)
    features = np.load(folder / "features.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    clock = time.perf_counter()
    value, grad = diva_jax.streaming_value_and_dataset_derivative(
        features, labels, lam, chunk_size=chunk, progress=False)
    total = time.perf_counter() - clock
    np.save(folder / "grad.npy", grad)
    return {"value": value, "total_s": total, "pass_s": passes,
            "read_only_pass_s": read_only_pass(features, chunk),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "rss_after_import_bytes": rss_before,
            "grad_finite": bool(np.all(np.isfinite(grad)))}


def read_only_pass(features, chunk: int) -> float:
    """Seconds to read every chunk once with the library's reader, no compute."""
    from diva_jax._streaming import _RowSource

    clock, total = time.perf_counter(), 0.0
    for _, rows in _RowSource(features, chunk).chunks():
        total += float(rows[0, 0])
    return time.perf_counter() - clock


def check_prefix(folder: Path, rows: int, lam: float, chunk: int) -> dict:
    """Streamed vs in-memory derivative on the first ``rows`` rows of the file."""
    import diva_jax

    features = np.load(folder / "features.npy", mmap_mode="r")[:rows]
    labels = np.load(folder / "labels.npy")[:rows]
    streamed = diva_jax.streaming_dataset_derivative(
        features, labels, lam, chunk_size=max(chunk // 7, 1), progress=False)
    in_memory = np.asarray(diva_jax.dataset_derivative(np.asarray(features), labels,
                                                       lam, num_classes=NUM_CLASSES))
    error = float(np.max(np.abs(streamed - in_memory)) / np.max(np.abs(in_memory)))
    return {"rows": rows, "max_rel_diff": error, "ok": error < 1e-3}


def main(argv=None) -> int:
    from _common import RESULTS, add_common_args, machine, write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--n", type=int, default=5_000_000)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=65_536)
    parser.add_argument("--check-rows", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None,
                        help="folder for the files (default: a new one under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument("--quick", action="store_true", help="20,000 x 32")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.d, args.chunk_size, args.check_rows = 20_000, 32, 4096, 5000
    lam = 1e-2 * args.n
    if args.child is not None:
        sys.stdout.write(json.dumps(run_child(args.child, lam, args.chunk_size)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    folder = args.dir or Path(tempfile.mkdtemp(prefix="diva_stream_", dir="/tmp"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        data_bytes = args.n * args.d * 4
        logger.info("writing %d x %d float32 (%.2f GB) to %s", args.n, args.d,
                    data_bytes / 1e9, folder)
        write_s = write_features(folder, args.n, args.d, args.chunk_size)
        child = subprocess.run([sys.executable, __file__, "--child", str(folder),
                                "--n", str(args.n), "--d", str(args.d),
                                "--chunk-size", str(args.chunk_size)],
                               capture_output=True, text=True, check=True)
        run = json.loads(child.stdout.strip().splitlines()[-1])
        check = check_prefix(folder, min(args.check_rows, args.n), lam,
                             args.chunk_size)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    result = {"benchmark": "bench_streaming", "machine": machine(), "N": args.n,
              "d": args.d, "K": NUM_CLASSES, "dtype": "float32", "lam": lam,
              "chunk_size": args.chunk_size, "data_bytes": data_bytes,
              "write_s": write_s, **run,
              "peak_rss_over_data": run["peak_rss_bytes"] / data_bytes,
              "check": check, "kept": str(folder) if args.keep else None}
    name = "bench_streaming_quick" if args.quick else "bench_streaming"
    write_json(args.out or RESULTS / f"{name}.json", result)
    sys.stdout.write(f"N={args.n:,} d={args.d}: data {data_bytes / 2**30:.2f} GiB, "
                     f"peak RSS {run['peak_rss_bytes'] / 2**30:.2f} GiB, total "
                     f"{run['total_s']:.1f} s\n")
    for name, seconds in run["pass_s"].items():
        sys.stdout.write(f"  {name}: {seconds:.1f} s\n")
    sys.stdout.write(f"  check on {check['rows']:,} rows: max rel diff "
                     f"{check['max_rel_diff']:.1e}\n")
    return 0 if check["ok"] and run["grad_finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
