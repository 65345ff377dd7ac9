"""Training config: presets, YAML and override precedence, validation messages, fingerprints,
and the DeepSpeed config filled from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from som.train.config import ConfigError, TrainConfig, gradient_accumulation_steps, load_config
from som.train.deepspeed_config import build_deepspeed_config, resolve_precision

MODEL = {"init_checkpoint": "llava-hf/llava-1.5-7b-hf", "data_url": "s3://b/mix.json"}


def test_presets_are_llava_15_scripts() -> None:
    finetune = load_config(MODEL)
    assert (finetune.stage, finetune.template, finetune.zero_stage) == ("finetune", "vicuna_v1", 3)
    assert finetune.trainable == ("projector", "language_model")
    assert (finetune.lr, finetune.schedule, finetune.warmup_ratio) == (2e-5, "cosine", 0.03)
    assert (finetune.global_batch_size, finetune.max_length) == (128, 2048)
    assert finetune.gradient_checkpointing and finetune.group_by_modality_length
    pretrain = load_config({**MODEL, "stage": "pretrain"})
    assert (pretrain.template, pretrain.zero_stage, pretrain.lr) == ("plain", 2, 1e-3)
    assert pretrain.trainable == ("projector",) and pretrain.global_batch_size == 256


def test_yaml_then_overrides_win_and_cli_strings_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "stage: pretrain\ninit_checkpoint: x\ndata_url: d.json\nlr: 1.0e-4\nmicro_batch_size: 8\nlora: {rank: 16}\n"
    )
    config = load_config(
        path,
        {
            "lr": "3e-4",
            "max_steps": "20",
            "trainable": "[projector, language_model]",
            "lora.enabled": "true",
            "lora.targets": "[q_proj, v_proj]",
        },
    )
    assert config.stage == "pretrain" and config.template == "plain"  # preset kept
    assert config.micro_batch_size == 8  # YAML over preset
    assert config.lr == 3e-4 and config.max_steps == 20  # overrides over YAML, parsed
    assert config.lora.enabled and config.lora.rank == 16 and config.lora.targets == ("q_proj", "v_proj")
    assert load_config(path, {"stage": "finetune"}).template == "vicuna_v1"  # override picks the preset


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"micro_batchsize": 4}, "unknown key 'micro_batchsize' (did you mean micro_batch_size?)"),
        ({"lora.rnk": 4}, "unknown key 'lora.rnk' (did you mean lora.rank?)"),
        ({"epochs": "two"}, "epochs: Input should be a valid integer"),
        ({"gradient_checkpointing": "maybe"}, "gradient_checkpointing: Input should be a valid boolean"),
        ({"lr": True}, "lr: Input should be a valid number"),
        ({"schedule": "cos"}, "schedule: Input should be 'cosine', 'linear' or 'constant'"),
        ({"vision_tower": "openai/clip"}, "set either init_checkpoint"),
        ({"data_url": ""}, "data_url: the LLaVA JSON to train on is required"),
        ({"global_batch_size": 10, "micro_batch_size": 4}, "global_batch_size: 10 must be a positive multiple"),
        ({"template": "chatml"}, "template: 'chatml' is not one of"),
        ({"zero_stage": 1}, "zero_stage: Input should be 2 or 3"),
        ({"stage": "pretrain", "lora.enabled": True}, "add language_model to trainable"),
        ({"trainable": ["projector", "lm"]}, "must be a non-empty subset"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
    ],
)
def test_bad_settings_name_the_field(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(MODEL, values)
    assert message in str(caught.value)


def test_unreadable_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("lr: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(path)


def test_round_trip_and_fingerprint() -> None:
    config = load_config(MODEL, {"lora.enabled": True, "max_steps": 5})
    assert load_config(config.to_dict()) == config
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()
    assert config.fingerprint() == load_config(config.to_dict()).fingerprint()
    assert (
        load_config(MODEL, {"lora.enabled": True, "max_steps": 5, "save_every": 7, "keep_last": 5}).fingerprint()
        == config.fingerprint()
    )
    assert load_config(MODEL, {"lora.enabled": True, "max_steps": 6}).fingerprint() != config.fingerprint()
    assert (
        load_config(MODEL, {"lora.enabled": True, "max_steps": 5, "lora.rank": 8}).fingerprint() != config.fingerprint()
    )


def test_global_batch_held_by_gradient_accumulation() -> None:
    config = load_config(MODEL)  # 128 = 16 per device x 8 GPUs in LLaVA's run
    assert [gradient_accumulation_steps(config, w) for w in (1, 2, 8)] == [8, 4, 1]
    with pytest.raises(ConfigError, match="not divisible by micro_batch_size 16 x world size 3"):
        gradient_accumulation_steps(config, 3)


def test_deepspeed_config_filled_from_the_training_config(tmp_path: Path) -> None:
    config = load_config(MODEL, {"global_batch_size": 8, "micro_batch_size": 2, "max_grad_norm": 0.5})
    assert resolve_precision(config, torch.device("cpu")) == torch.float32
    ds = build_deepspeed_config(config, world_size=2, dtype=torch.float32, hidden_size=64)
    assert ds["zero_optimization"]["stage"] == 3
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (
        8,
        2,
        2,
    )
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"]["enabled"] is False
    assert ds["zero_optimization"]["reduce_bucket_size"] == 64 * 64
    assert "auto" not in json.dumps(ds)
    bf16 = build_deepspeed_config(
        load_config(MODEL, {"zero_stage": 2, "precision": "bf16"}), world_size=1, dtype=torch.bfloat16, hidden_size=64
    )
    assert bf16["bf16"]["enabled"] is True and bf16["zero_optimization"]["stage"] == 2

    custom = tmp_path / "ds.json"
    custom.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    with pytest.raises(ConfigError, match="zero_stage is 3 but .*ds.json sets stage 2"):
        build_deepspeed_config(
            load_config(MODEL, {"deepspeed_config": str(custom)}), world_size=1, dtype=torch.float32, hidden_size=64
        )
    custom.write_text(json.dumps({"zero_optimization": {"stage": 3, "offload_param": {"device": "auto"}}}))
    with pytest.raises(ConfigError, match="no value known for zero_optimization.offload_param.device"):
        build_deepspeed_config(
            load_config(MODEL, {"deepspeed_config": str(custom)}), world_size=1, dtype=torch.float32, hidden_size=64
        )


def test_config_is_a_frozen_picklable_value() -> None:
    import pickle

    config = load_config(MODEL)
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(ValidationError, match="frozen"):
        config.lr = 1.0  # type: ignore[misc]
    assert isinstance(config, TrainConfig)
