"""Shared parts of the benchmarks: machine facts, timing, results.

Import this module before numpy or jax: it limits OpenBLAS (which jaxlib's
CPU LAPACK calls for the d x d Cholesky factor) to ``--blas-threads`` threads,
one by default. The factorisation is a negligible share of the work, and on a
machine with few cores OpenBLAS's spinning threads contend with XLA's own
thread pool: a 512 x 512 Cholesky factor then takes from 3 ms to 0.8 s.
"""

from __future__ import annotations

import os
import sys


def _blas_threads_from_argv(default: str = "1") -> str:
    for i, arg in enumerate(sys.argv):
        if arg == "--blas-threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if arg.startswith("--blas-threads="):
            return arg.split("=", 1)[1]
    return default


if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", _blas_threads_from_argv())

import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def add_common_args(parser) -> None:
    """``--repeats``, ``--blas-threads`` and ``--out`` for every benchmark."""
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs after one warm-up; the median is reported")
    parser.add_argument("--blas-threads", default="1",
                        help="OPENBLAS_NUM_THREADS for LAPACK (set before import)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Device, CPU, cores, memory, versions and the load at the time."""
    import jax
    import numpy as np

    import diva_jax

    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(),
        "memory_gib": round(pages / 2**30, 1),
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "python": platform.python_version(), "jax": jax.__version__,
        "numpy": np.__version__, "diva_jax": diva_jax.__version__,
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "loadavg": os.getloadavg(),
    }


def block(x):
    """Waits for every array in ``x`` (a pytree of jax arrays) to be computed."""
    import jax

    return jax.block_until_ready(x)


def time_interleaved(fns: dict, repeats: int) -> dict:
    """Median wall and CPU seconds of each function, its runs interleaved.

    Every function runs once first (compilation, caches), then the functions
    take turns ``repeats`` times, so that a change in the machine's load hits
    all of them alike. Returns ``{name: {"wall_s", "cpu_s", "wall_all_s"}}``.
    """
    for fn in fns.values():
        block(fn())
    runs = {name: ([], []) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            block(fn())
            runs[name][0].append(time.perf_counter() - wall)
            runs[name][1].append(time.process_time() - cpu)
    return {name: {"wall_s": statistics.median(w), "cpu_s": statistics.median(c),
                   "wall_all_s": w} for name, (w, c) in runs.items()}


def peak_rss_gib() -> float:
    """The process' peak resident set size so far (``getrusage``), in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_json(path: Path, obj: dict) -> Path:
    """Writes ``obj`` atomically and returns the path."""
    from diva_jax._io import atomic_write_json

    atomic_write_json(path, obj)
    return path


def read_json(path: Path) -> dict:
    """The JSON at ``path``, or an empty dict when there is none."""
    return json.loads(path.read_text()) if path.exists() else {}
