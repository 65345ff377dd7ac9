"""prefect.yaml against the local stack: deploy, run through the worker, schedules."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from som import storage
from som.dataset.manifest import read_manifest
from tests.helpers.stack import PHOTOS, REPO_ROOT, DatasetRun, Stack

pytestmark = pytest.mark.slow


def test_deploy_all_creates_the_deployments_on_the_process_pool(stack: Stack, deployed: dict[str, dict]):
    assert set(deployed) == {
        "som-dataset/samples",
        "som-refresh/nightly",
        "som-train/llava15-13b-som",
        "som-evaluate/paper-benchmarks",
        "som-evaluate/llava15-suite",
        "som-pipeline/samples",
    }
    for name, deployment in deployed.items():
        assert deployment["work_pool_name"] == "somflow", name
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}
        ], name
        env = deployment["job_variables"]["env"]
        assert env["AWS_ENDPOINT_URL"] == stack.env["AWS_ENDPOINT_URL"], name
        assert env["SOMFLOW_STORAGE_CONFIG"] == stack.env["SOMFLOW_STORAGE_CONFIG"], name
        assert "AWS_SECRET_ACCESS_KEY" not in env, "no secret in a deployment"
        assert "somflow" in deployment["tags"] and deployment["description"], name
    refresh = deployed["som-refresh/nightly"]
    assert refresh["global_concurrency_limit"]["limit"] == 1
    assert deployed["som-dataset/samples"]["global_concurrency_limit"]["limit"] == 1


def test_refresh_schedule_creates_scheduled_runs(stack: Stack, deployed: dict[str, dict]):
    refresh = deployed["som-refresh/nightly"]
    [schedule] = refresh["schedules"]
    assert schedule["active"] and schedule["schedule"]["cron"] == "0 2 * * *"
    query = {
        "deployments": {"id": {"any_": [refresh["id"]]}},
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
    }
    deadline, runs = time.monotonic() + 90, []
    while time.monotonic() < deadline and len(runs) < 3:  # the scheduler looks at new deployments every ~5 s
        runs = stack.api("POST", "/flow_runs/filter", query)
        time.sleep(1)
    assert len(runs) >= 3, f"{len(runs)} scheduled runs of {refresh['name']} after 90 s"
    starts = sorted(datetime.fromisoformat(run["expected_start_time"].replace("Z", "+00:00")) for run in runs)
    assert all((s.hour, s.minute) == (2, 0) for s in starts)
    assert all((b - a).days == 1 for a, b in zip(starts, starts[1:], strict=False))
    assert all(run["parameters"]["dest"] == refresh["parameters"]["dest"] for run in runs)


def test_dataset_deployment_run_goes_through_the_worker_into_s3(stack: Stack, dataset_run: DatasetRun, monkeypatch):
    run = dataset_run.flow_run
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["work_pool_name"] == "somflow" and run["infrastructure_pid"], "run by the pool's worker"
    assert run["name"] == f"som-dataset {dataset_run.dest}", "the run name says what it built"
    assert f"{len(PHOTOS)} marked" in run["state"]["message"]

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, stack.env[name])
    storage.clear_filesystems()
    rows = read_manifest(dataset_run.dest)
    assert sorted(row.source_uri.rsplit("/", 1)[1] for row in rows) == sorted(p.name for p in PHOTOS)
    for row in rows:
        assert row.status == "marked" and row.n_marks > 0, row
        assert row.marked_uri.startswith(f"{dataset_run.dest}/marks/") and storage.exists(row.marked_uri)
    artifacts = stack.api("POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
    assert {a["type"] for a in artifacts} >= {"progress", "table", "markdown"}
