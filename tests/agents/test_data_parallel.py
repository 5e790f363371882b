"""Data parallel on two CPU processes (gloo): the copies stay identical and the budget counts both processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("data_parallel_worker.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", ["compact", "llm"])
def test_two_processes_train_identical_copies(tmp_path, kind):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        kind,
        str(tmp_path),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # one thread per process: tests/conftest.py sets OMP_NUM_THREADS
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = (torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1))
    assert not torch.equal(first["requests"], second["requests"]), "each process collects its own requests"
    assert any(not torch.equal(first["start"][k], second["start"][k]) for k in first["start"]), "different starts"
    for name, value in first["policy"].items():
        assert torch.equal(value, second["policy"][name]), f"policy parameter {name} differs between the processes"
    assert any(not torch.equal(v, first["start"][k]) for k, v in first["policy"].items()), "the policy trained"
    for name, value in first["critic"].items():
        assert torch.equal(value, second["critic"][name]), f"critic parameter {name} differs between the processes"
    # the budget counts both processes' placements: 3 iterations of B * G * K placements in each of the 2 processes
    assert first["iterations"] == second["iterations"] == 3
    assert first["steps"] == second["steps"] == first["budget"]
    logged = [
        json.dumps([{k: v for k, v in row.items() if not k.startswith("time/")} for row in r["history"]]) for r in (first, second)
    ]
    assert logged[0] == logged[1], "every process logs the statistics averaged over both (NaN as NaN)"
