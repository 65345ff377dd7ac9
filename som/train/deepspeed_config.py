"""The DeepSpeed config of a run: a template from ``infra/deepspeed/`` (ZeRO-2 or ZeRO-3, or a
file of the user's) with every ``"auto"`` filled from the training config, the world size and
the model.

Why templates with "auto": the files say *how* to shard (what an infrastructure person tunes);
the batch sizes, clipping and precision are the experiment's and must not be set twice. The
global batch is held constant across world sizes by gradient accumulation, so 2 CPU processes
and 8 GPUs take the same optimizer steps on the same samples.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from som.devices import auto_dtype
from som.train.config import ConfigError, TrainConfig, gradient_accumulation_steps

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "infra" / "deepspeed"


def template_path(config: TrainConfig) -> Path:
    """The user's `deepspeed_config` file, else ``infra/deepspeed/zero<stage>.json``."""
    if config.deepspeed_config:
        return Path(config.deepspeed_config)
    return TEMPLATE_DIR / f"zero{config.zero_stage}.json"


def resolve_precision(config: TrainConfig, device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it natively, fp32 elsewhere (CPU steps are exact and comparable);
    fp16 is not offered: DeepSpeed refuses it on CPU and bf16 needs no loss scaling."""
    if config.precision == "bf16":
        return torch.bfloat16
    if config.precision == "fp32":
        return torch.float32
    # Native bf16 only (Ampere+): V100/T4 emulate it, and torch.cuda.is_bf16_supported()
    # counts emulation; there fp32 is the choice, as fp16 is not offered.
    return auto_dtype(device)


def build_deepspeed_config(
    config: TrainConfig, *, world_size: int, dtype: torch.dtype, hidden_size: int
) -> dict[str, Any]:
    """The complete DeepSpeed config dict for `deepspeed.initialize`."""
    path = template_path(config)
    try:
        ds = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"deepspeed_config: cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"deepspeed_config: {path} is not valid JSON: {exc}") from exc
    zero = ds.setdefault("zero_optimization", {})
    stage = zero.get("stage", config.zero_stage)
    if stage != config.zero_stage:
        raise ConfigError(f"zero_stage is {config.zero_stage} but {path} sets stage {stage}; make them agree")
    if ds.get("fp16", {}).get("enabled") is True:
        raise ConfigError(f"{path}: fp16 is not supported (use bf16 on GPU, fp32 on CPU)")
    if "optimizer" in ds or "scheduler" in ds:
        raise ConfigError(
            f"{path}: remove 'optimizer'/'scheduler'; the training loop makes "
            "them from the training config (and a DeepSpeed optimizer JIT-compiles)"
        )
    filled = {
        "train_batch_size": config.global_batch_size,
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps(config, world_size),
        "gradient_clipping": config.max_grad_norm,
    }
    for key, value in filled.items():
        if ds.get(key, "auto") not in ("auto", value):
            raise ConfigError(f'{path}: {key} is {ds[key]!r} but the training config gives {value!r}; set it to "auto"')
        ds[key] = value
    ds.setdefault("bf16", {})["enabled"] = dtype == torch.bfloat16
    buckets = {
        "reduce_bucket_size": hidden_size * hidden_size,
        "allgather_bucket_size": hidden_size * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "stage3_param_persistence_threshold": 10 * hidden_size,
    }
    for key, value in buckets.items():
        if zero.get(key) == "auto":
            zero[key] = value
    left = [k for k, v in _walk(ds) if v == "auto"]
    if left:
        raise ConfigError(f"{path}: no value known for {', '.join(left)}; set them explicitly")
    log.debug("deepspeed config: %s", ds)
    return ds


def _walk(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            items += _walk(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items
