"""benchmarks/gpu_check.sh, the one GPU check command: on a machine without CUDA it says so and runs nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def test_gpu_check_is_valid_bash():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run for minutes")
def test_without_cuda_it_says_so_in_one_line_and_exits_0(tmp_path):
    results = REPO / "benchmarks" / "results"
    before = {path: path.stat().st_mtime_ns for path in results.glob("*.json")}
    done = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [done.stdout.strip()]  # one line
    assert "no CUDA device here" in done.stdout and done.stderr == ""
    # Nothing ran: no result file changed, no output folder made.
    assert {path: path.stat().st_mtime_ns for path in results.glob("*.json")} == before
    assert not (tmp_path / "out").exists()


def test_a_bad_argument_is_one_line_and_exit_2():
    done = subprocess.run(["bash", str(SCRIPT), "--budget", "soon"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "gpu_check: --budget needs a whole number of seconds above 0"
