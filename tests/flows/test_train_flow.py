"""flows/train.py: the tiny model trains through submitit's local executor; the same inputs
again return the cached export without a job; the summary artifact holds the run's numbers.

Run: python -m pytest tests/flows/test_train_flow.py -q
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.train import train_llava
from som.cli import cli
from som.train.plan import code_version, job_spec, training_cache_key
from tasks.reports import artifact_key
from tests.helpers.training import flow_config


def _config(base_config: dict[str, Any]) -> dict[str, Any]:
    """A 4-step fine-tune of the tiny parts (data and image root come from the flow's arguments)."""
    return flow_config(base_config, max_steps=4)


def _submitted(folder: Path) -> list[Path]:
    return sorted(folder.glob("*_submitted.pkl"))


@pytest.mark.slow
def test_trains_then_returns_the_cached_export(
    prefect_api, base_config, listing_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    run_dir = tmp_path / "runs" / "tiny"
    arguments = dict(
        data=str(listing_data),
        run_dir=str(run_dir),
        image_root=str(listing_data.parent),
        config=_config(base_config),
        executor="local",
        retries=0,
    )

    export = train_llava(**arguments)
    assert Path(export) == run_dir / "hf" and (run_dir / "hf" / "config.json").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["export"] == export
    jobs = _submitted(run_dir / "slurm")
    assert len(jobs) == 1

    (run_dir / "summary.json").unlink()  # a job would now train again: only the cache can answer
    state = train_llava(**arguments, return_state=True)
    assert state.is_completed() and state.result() == export
    assert _submitted(run_dir / "slurm") == jobs
    assert state.name == "Completed" and "som-train tiny finetune" in _flow_run_name(state)

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(str(run_dir), "train")]))
        )
    first = artifacts[-1].data
    assert f"Exported model: `{export}`" in first and f"| {summary['first_loss']:.4f} |" in first

    # `som train` with the same config as YAML plus --set: the same cached export, no job
    values = _config(base_config)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in values.items() if k != "max_steps"}))
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(listing_data),
            "--image-root",
            str(listing_data.parent),
            "--config",
            str(config),
            "--set",
            "max_steps=4",
            "--run-dir",
            str(run_dir),
            "--executor",
            "local",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == export
    assert _submitted(run_dir / "slurm") == jobs


@pytest.mark.gpu
def test_trains_on_the_gpu_it_reserves(
    prefect_api, base_config, listing_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    run_dir = tmp_path / "gpu"
    export = train_llava(
        data=str(listing_data),
        run_dir=str(run_dir),
        image_root=str(listing_data.parent),
        config=_config(base_config),
        executor="local",
        gpus_per_node=1,
        retries=0,
    )
    assert json.loads((run_dir / "summary.json").read_text())["export"] == export
    [log] = (run_dir / "slurm").glob("*_0_log.err")
    assert "on cuda:0, nccl" in log.read_text()


def _flow_run_name(state) -> str:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name


def test_cache_key_follows_data_config_and_code() -> None:
    key = training_cache_key("a" * 64, "cfg1", "code1")
    assert key == training_cache_key("a" * 64, "cfg1", "code1")
    assert (
        len(
            {
                key,
                training_cache_key("b" * 64, "cfg1", "code1"),
                training_cache_key("a" * 64, "cfg2", "code1"),
                training_cache_key("a" * 64, "cfg1", "code2"),
            }
        )
        == 4
    )
    assert len(code_version()) == 16


def test_job_spec_takes_shape_from_arguments_and_the_rest_from_slurm() -> None:
    spec = job_spec("slurm", 2, 4, 4, {"partition": "gpu", "timeout_min": 600})
    assert (spec.nodes, spec.tasks_per_node, spec.gpus_per_node, spec.partition, spec.timeout_min) == (
        2,
        4,
        4,
        "gpu",
        600,
    )
    with pytest.raises(ValueError, match="slurm: set nodes with the flow's own argument"):
        job_spec("slurm", 1, 1, 0, {"nodes": 2})
    with pytest.raises(ValueError, match="unknown key 'partiton' .did you mean partition"):
        job_spec("slurm", 1, 1, 0, {"partiton": "gpu"})


def test_cli_names_a_bad_setting(prefect_api, tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text("[]")
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(data),
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            "init_checkpoint=x",
            "--set",
            "lerning_rate=1",
        ],
    )
    assert result.exit_code == 1
    assert "unknown key 'lerning_rate'" in result.output
    assert not (tmp_path / "run").exists()  # nothing submitted
