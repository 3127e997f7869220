#!/usr/bin/env bash
# The ratio table of bench_core.py on a GPU machine, in one command (< 5 min):
#   bash benchmarks/run_gpu.sh
# N in {50k, 200k, 1M} x d in {128, 512, 2048}, float32 at "highest" matmul
# precision (no TF32), results in benchmarks/results/bench_core_gpu.json/.png.
# Extra arguments go to bench_core.py; --quick runs two tiny sizes on any
# device (the test suite runs it so on CPU).
set -euo pipefail
cd "$(dirname "$0")"
python="${PYTHON:-python}"
"$python" -c "import jax; print('devices:', jax.devices())"
exec "$python" bench_core.py --gpu --repeats 5 "$@"
