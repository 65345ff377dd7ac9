"""The shipped training configs (configs/train/*.yaml) load, and say what their comments claim."""

from __future__ import annotations

from pathlib import Path

import pytest

from som.train.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "train").glob("*.yaml"))


def test_configs_are_shipped() -> None:
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_with_data_from_the_command_line(path: Path) -> None:
    config = load_config(path, {"data_url": "mix.json"})
    assert config.data_url == "mix.json"
    if config.stage == "pretrain":
        assert config.trainable == ("projector",) and config.template == "plain" and config.zero_stage == 2
        assert (config.lr, config.global_batch_size) == (1e-3, 256)
    else:
        assert set(config.trainable) == {"projector", "language_model"} and config.template == "vicuna_v1"
        assert config.zero_stage == 3 and config.max_length == 2048 and config.gradient_checkpointing


def test_lora_config_follows_llavas_lora_recipe() -> None:
    config = load_config(next(p for p in CONFIGS if p.stem.endswith("lora")), {"data_url": "mix.json"})
    assert config.lora.enabled and (config.lora.rank, config.lora.alpha) == (128, 256)
    assert (config.lr, config.projector_lr) == (2e-4, 2e-5)
