"""benchmarks/gpu_check.py's dry run (the CPU parts) prints the full table in under a minute."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_prints_every_row() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    rows = {
        line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]]
        for line in out.splitlines()
        if line.count("|") >= 3
    }
    assert rows["check"] == ["status", "peak MiB", "detail"]
    for name in (
        "sam fp32",
        "sam bf16",
        "sam fp16",
        "hf-sam fp32",
        "hf-sam bf16",
        "train ZeRO-2 tiny LLaVA",
        "train ZeRO-3 tiny LLaVA",
    ):
        assert rows[name][0] == "skipped: no CUDA", name
    assert rows["environment"][0] == "ok"
    assert rows["pytest -m gpu (collected)"][0] == "ok"
    assert rows["eval batched vs single (fp32, CPU)"][0] == "ok"
    assert rows["eval batched vs single (fp32, CPU)"][2].endswith("0 differ []")
    assert rows["LocalCUDACluster"][0].startswith("skipped")
    assert "dry run in" in out
