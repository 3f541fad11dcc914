"""make gpu-check refuses clearly on a machine without CUDA: one line, exit 2, nothing run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_refuses_without_cuda(tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: make gpu-check would run")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    proc = subprocess.run(
        ["bash", str(ROOT / "tools" / "gpu_check.sh")], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no CUDA device"), proc.stdout
    assert not (tmp_path / "out").exists()  # nothing was run


def test_make_gpu_check_calls_the_script():
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "gpu-check:\n\tPYTHON=$(BIN)/python tools/gpu_check.sh" in text
