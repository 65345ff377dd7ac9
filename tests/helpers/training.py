"""Helpers of the training tests: the tiny model parts' paths, and a launcher that runs
`python -m som.train.entry` as N real processes (each its own interpreter, gloo on a free port,
OMP_NUM_THREADS=1). The session fixtures that build the parts are tests/plugins/training.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from som.train.distributed import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 180


@dataclass(frozen=True)
class Parts:
    clip: str
    siglip: str
    lm: str


def write_config(values: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def flow_config(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """`base_config` as the train flow takes it: the data and image root are the flow's own
    arguments, so they leave the config; `overrides` replace the rest."""
    return {k: v for k, v in base.items() if k not in ("data_url", "image_root")} | overrides


def training_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), "TOKENIZERS_PARALLELISM": "false"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def start_ranks(
    config: Path, run_dir: str, world_size: int, log_dir: Path, env: dict[str, str] | None = None
) -> list[subprocess.Popen]:
    """`world_size` training processes as a launcher starts them (RANK, WORLD_SIZE, ...)."""
    port = str(free_port())
    procs = []
    for rank in range(world_size):
        launcher = (
            {
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(world_size),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
            }
            if world_size > 1
            else {}
        )
        log = (log_dir / f"rank{rank}.log").open("ab")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "som.train.entry", "--config", str(config), "--run-dir", run_dir],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**training_env(env), **launcher},
            )
        )
    return procs


def wait_ranks(procs: list[subprocess.Popen], log_dir: Path, timeout: float = RUN_TIMEOUT_S) -> list[int]:
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            logs = "\n".join(p.read_text()[-3000:] for p in sorted(log_dir.glob("rank*.log")))
            pytest.fail(f"training did not finish in {timeout:.0f} s:\n{logs}")
    return codes


def read_log(tmp_path: Path, name: str = "run") -> str:
    return "\n".join(p.read_text() for p in sorted((tmp_path / f"logs-{name}").glob("rank*.log")))


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def generate_listing(export: str | Path) -> str:
    """Load an export as any transformers user would and generate a few tokens for an image."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(export).eval()
    processor = AutoProcessor.from_pretrained(export)
    image = Image.new("RGB", (40, 40), (120, 30, 200))
    inputs = processor(images=image, text="USER: <image>\nList the items. ASSISTANT:", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    assert len(new) >= 1
    return processor.decode(new)
