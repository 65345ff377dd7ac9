"""pytest plugin: the training tests' fixtures: tiny model parts and a tiny LLaVA saved once per
session, a synthetic Set-of-Mark listing dataset, a fast base config and a launcher of N ranks
(the helpers they use are tests/helpers/training.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.tiny_clip import build_tiny_clip
from tests.helpers.tiny_llava import build_tiny_llava
from tests.helpers.tiny_train import build_tiny_lm, build_tiny_siglip, make_listing_dataset
from tests.helpers.training import Parts, start_ranks, wait_ranks, write_config


@pytest.fixture(scope="session")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Parts:
    root = tmp_path_factory.mktemp("parts")
    return Parts(
        clip=build_tiny_clip(root / "clip"), siglip=build_tiny_siglip(root / "siglip"), lm=build_tiny_lm(root / "lm")
    )


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="session")
def listing_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 marked images with listing answers, plus 4 text-only records (LLaVA mixes both).
    ``images.json`` beside it holds the image records alone (stage 1's plain template takes
    no text-only record)."""
    folder = tmp_path_factory.mktemp("listing")
    path = make_listing_dataset(folder, count=16)
    records = json.loads(path.read_text())
    (folder / "images.json").write_text(json.dumps(records))
    for index in range(4):
        records.append(
            {
                "id": f"text-{index}",
                "conversations": [
                    {"from": "human", "value": "Name a tagged item."},
                    {"from": "gpt", "value": ["person", "dog", "cat", "car"][index]},
                ],
            }
        )
    path.write_text(json.dumps(records))
    return path


@pytest.fixture
def base_config(parts: Parts, listing_data: Path) -> dict[str, Any]:
    """A fast fine-tuning config of the parts on the listing data (override what a test needs)."""
    return {
        "stage": "finetune",
        "vision_tower": parts.clip,
        "language_model": parts.lm,
        "local_files_only": True,
        "data_url": str(listing_data),
        "image_root": str(listing_data.parent),
        "zero_stage": 2,
        "global_batch_size": 4,
        "micro_batch_size": 2,
        "max_length": 256,
        "lr": 1e-3,
        "gradient_checkpointing": False,
        "save_every": 4,
        "keep_last": 2,
        "dataloader_workers": 0,
        "max_steps": 12,
    }


@pytest.fixture
def launch(tmp_path: Path) -> Callable[..., list[int]]:
    """Run a training config as N processes to the end; returns their exit codes. Logs go to
    `<tmp>/logs-<name>/rank<N>.log`."""

    def run(
        values: dict[str, Any],
        run_dir: str,
        *,
        world_size: int = 1,
        name: str = "run",
        env: dict[str, str] | None = None,
    ) -> list[int]:
        log_dir = tmp_path / f"logs-{name}"
        log_dir.mkdir(exist_ok=True)
        config = write_config(values, tmp_path / f"{name}.yaml")
        return wait_ranks(start_ranks(config, run_dir, world_size, log_dir, env), log_dir)

    return run
