"""Settings from YAML + overrides (som.settings) and the pipeline's typed stage configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from som.pipeline_config import EvalStage, PipelineConfig
from som.settings import SettingsError, load_settings, parse_overrides

REPO = Path(__file__).resolve().parents[1]


def test_overrides_nest_dotted_keys_and_read_values_as_yaml() -> None:
    assert parse_overrides(["train.nodes=2", "evaluate.variants=[plain]", "evaluate.suite=llava15", "name=x=y"]) == {
        "train": {"nodes": 2},
        "evaluate": {"variants": ["plain"], "suite": "llava15"},
        "name": "x=y",
    }
    with pytest.raises(SettingsError, match="expected KEY=VALUE"):
        parse_overrides(["evaluate.suite"])


def test_the_shipped_pipeline_yaml_loads_and_overrides_win(tmp_path: Path) -> None:
    config = load_settings(
        PipelineConfig,
        REPO / "configs" / "pipeline" / "samples.yaml",
        ["evaluate.suite=llava15", "evaluate.data_root=s3://b/eval", "train.nodes=2"],
    )
    assert config.train.nodes == 2 and config.train.config == "configs/train/som-llava15-13b-continue.yaml"
    assert config.evaluate.suite == "llava15" and config.evaluate.benchmarks == ["pope", "mme"]
    assert config.evaluate.enabled and config.dataset.shard_size == 200
    assert not EvalStage().enabled


def test_errors_name_every_bad_key_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(
            PipelineConfig,
            {"source": "s", "root": "r"},
            ["evaluate.shard=3", "evaluate.variants=[boxes]", "train.nodes=0", "executor=ssh"],
        )
    message = str(error.value)
    assert "unknown key 'evaluate.shard' (did you mean evaluate.shards?)" in message
    assert "evaluate.variants.0: Input should be 'plain' or 'tags'" in message
    assert "train.nodes: Input should be greater than or equal to 1" in message
    assert "executor: Input should be 'auto', 'slurm' or 'local'" in message
    with pytest.raises(SettingsError, match="root: Field required"):
        load_settings(PipelineConfig, {"source": "s"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(SettingsError, match="must be a mapping"):
        load_settings(PipelineConfig, bad)


def test_the_deployment_parameters_are_valid_stage_configs() -> None:
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    [pipeline] = [d for d in deployments if d["entrypoint"].endswith(":som_pipeline")]
    config = load_settings(PipelineConfig, pipeline["parameters"])
    assert config.evaluate.data == {"pope": "s3://somflow/benchmarks/pope", "mme": "s3://somflow/benchmarks/MME"}


def test_every_config_yaml_starts_with_the_command_that_runs_it() -> None:
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        head = path.read_text().splitlines()[:3]
        assert any(line.startswith("#") and str(path.relative_to(REPO)) in line for line in head), path


def test_som_train_print_config_shows_the_resolved_config() -> None:
    from flows.train_cli import train

    result = CliRunner().invoke(
        train, ["--config", str(REPO / "configs/train/llava15-7b-lora.yaml"), "--set", "max_steps=7", "--print-config"]
    )
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed["max_steps"] == 7 and printed["lora"]["rank"] == 128 and printed["stage"] == "finetune"
    bad = CliRunner().invoke(train, ["--set", "max_stepz=1", "--print-config"])
    assert bad.exit_code != 0 and "did you mean max_steps?" in bad.output
    missing = CliRunner().invoke(train, ["--run-dir", "x"])
    assert missing.exit_code == 2 and "--data" in missing.output
