"""The som-pipeline deployment end to end on the stack: a handful of images in SeaweedFS, the
tiny LLaVA trained and evaluated on the stack's Slurm cluster, a summary artifact; a run that
fails at training, then the rerun that resumes there, then a rerun that finds every stage cached."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from som import storage
from tasks.reports import artifact_key
from tests.helpers.som_datasets import som_dataset
from tests.helpers.stack import Stack
from tests.helpers.tiny_clip import build_tiny_clip
from tests.helpers.tiny_train import build_tiny_lm

pytestmark = pytest.mark.slow


def run_pipeline(stack: Stack, deployment: dict[str, Any], params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """`prefect deployment run 'som-pipeline/samples' --params ... --watch`; the run and its summary."""
    query = {"deployments": {"id": {"any_": [deployment["id"]]}}}
    before = {run["id"] for run in stack.api("POST", "/flow_runs/filter", query)}
    done = stack.prefect(
        "deployment",
        "run",
        "som-pipeline/samples",
        "--params",
        json.dumps(params),
        "--watch",
        "--watch-timeout",
        "600",
        timeout=660,
    )
    [run] = [run for run in stack.api("POST", "/flow_runs/filter", query) if run["id"] not in before] or [None]
    assert run is not None, done.stdout + done.stderr
    key = artifact_key(f"{params['root']}/samples", "pipeline")
    summaries = stack.api(
        "POST", "/artifacts/filter", {"artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [run["id"]]}}}
    )
    return run, summaries[0]["data"] if summaries else ""


def stage_rows(summary: str) -> dict[str, str]:
    """`stage -> done` from the summary's table."""
    rows = {}
    for line in summary.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("stage", "---"):
            rows[cells[0]] = cells[1]
    return rows


@pytest.fixture
def inputs(stack: Stack, tmp_path: Path, monkeypatch) -> dict[str, Any]:
    """Two photos + COCO masks in the stack's S3, tiny model parts, a held-out probe set."""
    if "slurm" not in stack.report:
        pytest.skip("the stack runs without Slurm (packages missing)")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, stack.env[name])
    storage.clear_filesystems()
    probe, _ = som_dataset(tmp_path)  # tmp/raw, tmp/instances.json and a marked copy for the probe
    prefix = f"s3://somflow/tests/{uuid.uuid4().hex[:8]}"
    uploads = {f"{prefix}/raw/{p.name}": p.read_bytes() for p in (tmp_path / "raw").iterdir()}
    uploads[f"{prefix}/instances.json"] = (tmp_path / "instances.json").read_bytes()
    storage.write_many(uploads)
    config = {
        "vision_tower": build_tiny_clip(tmp_path / "clip"),
        "language_model": build_tiny_lm(tmp_path / "lm"),
        "local_files_only": True,
        "zero_stage": 2,
        "global_batch_size": 2,
        "micro_batch_size": 1,
        "max_length": 256,
        "lr": 1e-3,
        "gradient_checkpointing": False,
        "max_steps": 4,
        "save_every": 2,
        "keep_last": 1,
        "dataloader_workers": 0,
    }
    return {
        "source": f"{prefix}/raw",
        "root": prefix,
        "run_root": str(tmp_path / "runs"),
        "dataset": {"coco": f"{prefix}/instances.json", "short_side": 200, "workers": 1},
        "train": {"config": config},
        "executor": "slurm",
        "slurm": {"partition": "debug", "timeout_min": 10},
        "evaluate": {
            "benchmarks": ["listing"],
            "data": {"listing": probe},
            "variants": ["plain"],
            "shards": 1,
            "model_kwargs": {"local_files_only": True, "max_new_tokens": 8},
        },
    }


def test_pipeline_fails_at_training_then_resumes_there_then_is_all_cached(stack: Stack, deployed, inputs):
    pipeline = deployed["som-pipeline/samples"]
    broken = {**inputs, "train": {"config": {**inputs["train"]["config"], "language_model": None}}}
    run, summary = run_pipeline(stack, pipeline, broken)
    assert run["state"]["type"] == "FAILED"
    message = run["state"]["message"]
    assert "stage 'train' failed" in message and "language_model" in message and "resumes at 'train'" in message
    assert stage_rows(summary) == {
        "dataset": "2 new images",
        "instruction data": "ran",
        "mix": "ran",
        "train": "FAILED",
    }

    run, summary = run_pipeline(stack, pipeline, inputs)
    assert run["state"]["type"] == "COMPLETED", run["state"]["message"]
    assert stage_rows(summary) == {
        "dataset": "nothing new",
        "instruction data": "cached",
        "mix": "cached",
        "train": "ran",
        "evaluate": "ran",
    }
    outputs = json.loads(storage.read_bytes(f"{inputs['root']}/pipelines/samples/outputs.json"))
    model = Path(outputs["model"])
    assert model.is_relative_to(inputs["run_root"]) and (model / "config.json").exists()
    scores = json.loads((Path(outputs["run_dir"]) / "eval" / "listing" / "scores.json").read_text())
    assert scores["model"] == str(model) and "plain" in scores["variants"]
    assert storage.exists(outputs["mix"]) and outputs["mix"].startswith(inputs["root"])
    assert "loss " in summary and "## Benchmarks" in summary and "listing" in summary
    children = stack.api("POST", "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}})
    assert len(children) >= 3  # train and evaluate (instruction and mix came from the cache)
    jobs = subprocess.run(
        ["sacct", "-n", "-X", "-o", "JobName%60,State"],
        capture_output=True,
        text=True,
        env=stack.client_env(),
        timeout=30,
        check=True,
    ).stdout
    assert re.search(r"som-train-samples-\S+\s+COMPLETED", jobs), jobs
    assert re.search(r"som-eval-listing-plain\S*\s+COMPLETED", jobs), jobs

    again, summary = run_pipeline(stack, pipeline, inputs)
    assert again["state"]["type"] == "COMPLETED"
    assert set(stage_rows(summary).values()) == {"nothing new", "cached"}
