"""Training configuration: one typed, frozen settings model (som.settings), built from a stage preset, then a YAML
file, then overrides (the CLI's ``--set key=value``), each layer winning over the one before.

Why presets: LLaVA-1.5's two stages differ in a dozen settings at once (which parts train, the
prompt template, the ZeRO stage, the learning rate, the batch size); a config names its stage and
only states what it changes. The presets are the values of LLaVA-1.5's own launch scripts
(``scripts/v1_5/pretrain.sh`` and ``finetune.sh``: 8 GPUs x 32 and 8 x 16 per device).

Example YAML (every key is a `TrainConfig` field; ``lora`` is a nested mapping)::

    stage: finetune
    init_checkpoint: runs/pretrain/hf      # or vision_tower + language_model
    data_url: s3://somflow/datasets/photos/v3/mix.json
    image_root: s3://somflow/images
    lora: {enabled: true, rank: 128, alpha: 256}
    lr: 2.0e-4
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from som.settings import Settings, SettingsError, merge, nest, read_yaml
from som.settings import validate as validate_settings

STAGES = ("pretrain", "finetune")
PARTS = ("vision_tower", "projector", "language_model")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "bf16", "fp32")
ZERO_STAGES = (2, 3)
STRATEGIES = ("default", "full")
LLAMA_LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ConfigError(ValueError):
    """A configuration that cannot be trained; the message names the field."""


class LoraSettings(Settings):
    """LoRA on the language model's linear layers (LLaVA-1.5's ``finetune_lora.sh`` values)."""

    enabled: bool = False
    rank: int = 128
    alpha: int = 256
    dropout: float = 0.05
    targets: tuple[str, ...] = LLAMA_LINEAR_LAYERS


class TrainConfig(Settings):
    """Everything one training run needs; see `load_config` for how it is assembled."""

    stage: Literal["pretrain", "finetune"] = "finetune"
    # model: an existing LLaVA checkpoint, or a vision tower + language model (ids or folders)
    init_checkpoint: str | None = None
    vision_tower: str | None = None
    language_model: str | None = None
    vision_feature_layer: int = -2
    vision_feature_select_strategy: Literal["default", "full"] | None = (
        None  # None: "default" (drop CLS) when the tower has one
    )
    local_files_only: bool = False
    trainable: tuple[str, ...] = ("projector", "language_model")
    lora: LoraSettings = LoraSettings()
    # data
    data_url: str = ""
    image_root: str | None = None
    template: str = "vicuna_v1"
    max_length: int = 2048
    pad_to_square: bool = True
    max_error_fraction: float = 0.01
    group_by_modality_length: bool = True
    dataloader_workers: int = 2
    # optimisation
    lr: float = 2e-5
    projector_lr: float | None = None
    weight_decay: float = 0.0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0
    epochs: int = 1
    max_steps: int | None = None
    global_batch_size: int = 128
    micro_batch_size: int = 16
    gradient_checkpointing: bool = True
    zero_stage: Literal[2, 3] = 3
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    deepspeed_config: str | None = None
    # run
    save_every: int = 500
    keep_last: int = 2
    seed: int = 42
    log_every: int = 1
    # collective timeout (minutes) of the process group: rank-0-only work (a 13B checkpoint
    # upload, the export, scanning the data) must fit in it; NCCL's own default is 10
    dist_timeout_min: float = 120.0

    # Fields that change how a run is operated, not what it computes: left out of the
    # fingerprint so that changing them neither invalidates caches nor blocks a resume.
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset(
        {"save_every", "keep_last", "dataloader_workers", "log_every", "local_files_only", "dist_timeout_min"}
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples as lists), the inverse of `load_config(mapping)`."""
        return self.model_dump(mode="json")

    def fingerprint(self) -> str:
        """A short hash of every field that affects the trained weights (cache keys, resume)."""
        data = {k: v for k, v in self.to_dict().items() if k not in self.OPERATIONAL}
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def trains_language_model(self) -> bool:
        return "language_model" in self.trainable


PRESETS: dict[str, dict[str, Any]] = {
    "pretrain": dict(
        trainable=("projector",),
        template="plain",
        zero_stage=2,
        lr=1e-3,
        schedule="cosine",
        warmup_ratio=0.03,
        global_batch_size=256,
        micro_batch_size=32,
        max_length=2048,
        gradient_checkpointing=True,
        group_by_modality_length=False,
        epochs=1,
        weight_decay=0.0,
    ),
    "finetune": dict(
        trainable=("projector", "language_model"),
        template="vicuna_v1",
        zero_stage=3,
        lr=2e-5,
        schedule="cosine",
        warmup_ratio=0.03,
        global_batch_size=128,
        micro_batch_size=16,
        max_length=2048,
        gradient_checkpointing=True,
        group_by_modality_length=True,
        epochs=1,
        weight_decay=0.0,
    ),
}


# ----------------------------------------------------------------------------- loading


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Preset of the stage, then `source` (a YAML file or a mapping), then `overrides`.

    Override keys may be dotted (``lora.rank``) and values may be strings as typed on a
    command line (``"8"``, ``"true"``, ``"[q_proj, v_proj]"``): they are read as YAML where
    the field is not text (`som.settings`, the one loader of somflow's settings). Unknown keys
    and bad values raise `ConfigError` naming the key."""
    try:
        base = {} if source is None else nest(source) if isinstance(source, Mapping) else read_yaml(source)
        extra = nest(dict(overrides or {}))
    except SettingsError as exc:
        raise ConfigError(f"training config: {exc}") from None
    stage = extra.get("stage", base.get("stage", "finetune"))
    if stage not in PRESETS:
        raise ConfigError(f"stage: {stage!r} is not one of {', '.join(STAGES)}")
    try:
        config = validate_settings(TrainConfig, merge(merge({"stage": stage, **PRESETS[stage]}, base), extra))
    except SettingsError as exc:
        raise ConfigError(f"training config: {exc}") from None
    validate(config)
    return config


# ----------------------------------------------------------------------------- validation


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(config: TrainConfig) -> None:
    """Raise `ConfigError` for the first setting that cannot work, naming it."""
    _check(config.stage in STAGES, f"stage: {config.stage!r} is not one of {', '.join(STAGES)}")
    has_parts = bool(config.vision_tower or config.language_model)
    _check(
        bool(config.init_checkpoint) != has_parts,
        "model: set either init_checkpoint (an existing LLaVA checkpoint) or vision_tower "
        "+ language_model, not both and not neither",
    )
    _check(
        not has_parts or bool(config.vision_tower and config.language_model),
        "model: building from parts needs both vision_tower and language_model",
    )
    _check(bool(config.data_url), "data_url: the LLaVA JSON to train on is required")
    unknown = set(config.trainable) - set(PARTS)
    _check(
        not unknown and bool(config.trainable),
        f"trainable: {list(config.trainable)} must be a non-empty subset of {list(PARTS)}",
    )
    _check(
        config.vision_feature_select_strategy in (None, *STRATEGIES),
        f"vision_feature_select_strategy: {config.vision_feature_select_strategy!r} is not one of {STRATEGIES}",
    )
    _check(
        config.template in _template_names(), f"template: {config.template!r} is not one of {sorted(_template_names())}"
    )
    _check(config.max_length > 0, "max_length: must be positive")
    _check(0 <= config.max_error_fraction <= 1, "max_error_fraction: must be within [0, 1]")
    _check(config.dataloader_workers >= 0, "dataloader_workers: must be >= 0")
    _check(config.lr > 0, "lr: must be positive")
    _check(config.projector_lr is None or config.projector_lr > 0, "projector_lr: must be positive")
    _check(config.weight_decay >= 0, "weight_decay: must be >= 0")
    _check(config.schedule in SCHEDULES, f"schedule: {config.schedule!r} is not one of {SCHEDULES}")
    _check(0 <= config.warmup_ratio < 1, "warmup_ratio: must be within [0, 1)")
    _check(config.max_grad_norm >= 0, "max_grad_norm: must be >= 0 (0 disables clipping)")
    _check(config.epochs >= 1, "epochs: must be >= 1")
    _check(config.max_steps is None or config.max_steps >= 1, "max_steps: must be >= 1")
    _check(config.micro_batch_size >= 1, "micro_batch_size: must be >= 1")
    _check(
        config.global_batch_size >= 1 and config.global_batch_size % config.micro_batch_size == 0,
        f"global_batch_size: {config.global_batch_size} must be a positive multiple of "
        f"micro_batch_size {config.micro_batch_size}",
    )
    _check(config.zero_stage in ZERO_STAGES, f"zero_stage: {config.zero_stage} is not one of {ZERO_STAGES}")
    _check(config.precision in PRECISIONS, f"precision: {config.precision!r} is not one of {PRECISIONS}")
    _check(config.save_every >= 1, "save_every: must be >= 1")
    _check(config.keep_last >= 1, "keep_last: must be >= 1")
    _check(config.log_every >= 1, "log_every: must be >= 1")
    _check(config.dist_timeout_min > 0, "dist_timeout_min: must be positive (minutes)")
    lora = config.lora
    if lora.enabled:
        _check(
            config.trains_language_model,
            "lora.enabled: LoRA adapts the language model; add language_model to trainable",
        )
        _check(lora.rank >= 1 and lora.alpha >= 1, "lora.rank and lora.alpha: must be >= 1")
        _check(0 <= lora.dropout < 1, "lora.dropout: must be within [0, 1)")
        _check(bool(lora.targets), "lora.targets: name at least one module")


def _template_names() -> set[str]:
    from som.train.templates import TEMPLATES

    return set(TEMPLATES)


def gradient_accumulation_steps(config: TrainConfig, world_size: int) -> int:
    """Micro-batches per optimizer step on each rank, keeping the global batch constant."""
    per_step = config.micro_batch_size * world_size
    if config.global_batch_size % per_step:
        raise ConfigError(
            f"global_batch_size {config.global_batch_size} is not divisible by micro_batch_size "
            f"{config.micro_batch_size} x world size {world_size}; change one of them"
        )
    return config.global_batch_size // per_step
