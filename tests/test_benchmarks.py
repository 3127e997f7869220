"""The benchmarks' quick modes run end to end on CPU and check their answers
(each compares with an oracle and exits non-zero when it disagrees)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(args, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(args, cwd=BENCHMARKS, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_gpu_script_quick_mode_prints_the_ratio_table(tmp_path):
    out = tmp_path / "core.json"
    stdout = _run(["bash", "run_gpu.sh", "--quick", "--repeats", "1",
                   "--out", str(out)], tmp_path)
    assert "| N | d |" in stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(r["N"], r["d"]) for r in rows] == [(2000, 32), (4000, 64)]
    assert all(r["check"]["ok"] and not r["has_n_by_n_array"] for r in rows)
    assert out.with_suffix(".png").exists()


@pytest.mark.slow
def test_streaming_benchmark_quick_mode(tmp_path):
    out = tmp_path / "streaming.json"
    _run([sys.executable, "bench_streaming.py", "--quick", "--out", str(out)],
         tmp_path)
    result = json.loads(out.read_text())
    assert result["check"]["ok"] and result["grad_finite"]
    assert set(result["pass_s"]) == {"pass 1: Z^T D Z", "pass 2: Q^T diag(v) Q",
                                     "pass 3: per-sample terms"}
