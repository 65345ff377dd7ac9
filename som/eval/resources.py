"""Default Slurm resources of an evaluation task, from the size of the model it loads.

Why: JobSpec's own defaults (1 CPU, the partition's default memory, often a few GB) suit small
jobs; an evaluation task loads the whole model on the host before moving it to the GPU
(llava-1.5-13b: 26 GB of bf16 weights, twice that while fp32 on a CPU), and the image
preprocessing and tokenizers want a few cores. The user's own settings always win.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
HOST_FACTOR = 2.5  # weights on disk -> peak host memory (fp32 upcast on CPU, load copies)
MARGIN_GB = 8.0  # interpreter, torch, data loading, images
GPU_CPUS = 4  # per task with a GPU: preprocessing and tokenization keep up with it
MIN_WEIGHT_BYTES = 10**9  # below, any partition's default memory holds the model


def eval_resources(weight_bytes: int | None, gpus: int) -> dict[str, Any]:
    """Default cpus_per_task and mem_gb of a task that loads `weight_bytes` of weights with
    `gpus` GPUs; only what needs raising (small models and CPU-only tasks keep JobSpec's and
    the partition's defaults; None: unknown, or an API model). Pure."""
    out: dict[str, Any] = {}
    if gpus > 0:
        out["cpus_per_task"] = GPU_CPUS
    if weight_bytes and weight_bytes >= MIN_WEIGHT_BYTES:
        out["mem_gb"] = float(math.ceil(HOST_FACTOR * weight_bytes / 1e9 + MARGIN_GB))
    return out


def with_eval_defaults(slurm: Mapping[str, Any] | None, weight_bytes: int | None) -> dict[str, Any]:
    """`slurm` (JobSpec fields) with cpus_per_task / mem_gb filled where the user left them out."""
    chosen = dict(slurm or {})
    defaults = eval_resources(weight_bytes, int(chosen.get("gpus_per_node") or 0))
    for key, value in defaults.items():
        if chosen.get(key) is None:
            chosen[key] = value
    return chosen


def weight_bytes(model: str, *, local_files_only: bool = False) -> int | None:
    """Bytes of `model`'s weight files: a local folder's, else the hub's file listing (None
    when it cannot be known: an API model, offline, no such repository)."""
    if model.startswith(("openai:", "served:")):  # som.eval.models.is_api_spec (that module loads more)
        return None
    folder = Path(model)
    if folder.is_dir():
        return _largest_format((p.name, p.stat().st_size) for p in folder.rglob("*") if p.is_file())
    if local_files_only:
        return None
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(model, files_metadata=True, timeout=20)
    except Exception as exc:  # noqa: BLE001 - any failure just leaves the partition defaults
        log.info("size of %s unknown (%s); evaluation tasks get the default memory", model, exc)
        return None
    return _largest_format((s.rfilename, s.size or 0) for s in info.siblings or [])


def _largest_format(files: Any) -> int | None:
    """Total size of one weight format (a repository may ship both .safetensors and .bin)."""
    totals: dict[str, int] = {}
    for name, size in files:
        suffix = next((s for s in WEIGHT_SUFFIXES if str(name).endswith(s)), None)
        if suffix:
            totals[suffix] = totals.get(suffix, 0) + int(size)
    if not totals:
        return None
    return totals.get(".safetensors") or max(totals.values())
