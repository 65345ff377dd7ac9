"""pytest plugin: the whole local stack for a test session, brought up and down with
infra/stack.py as users do.

Fixtures:
- ``stack`` (session): `stack.py up` into a tmp folder (S3, Slurm, Prefect server, the `somflow`
  process pool and a worker); at the end `down`, then a check that no process of the stack is
  left (every one carries SOMFLOW_STACK=<state> in its environment).
- ``deployed`` (session): `prefect deploy --all` of the repository's prefect.yaml against it.
- ``dataset_run`` (session): one run of the `som-dataset/samples` deployment through the worker
  on the test photos, shared by the deployment and UI tests.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import pytest

from tests.helpers.stack import (
    FAST_MARKING,
    PHOTOS,
    DatasetRun,
    Stack,
    free_port,
    read_env_file,
    run_stack,
    stack_processes,
)
from tests.plugins.slurm import slurm_packages_installed


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state_dir = tmp_path_factory.mktemp("stack") / "state"
    args = [
        "up",
        "--state",
        str(state_dir),
        "--json",
        "--prefect-port",
        str(free_port()),
        "--worker-poll-seconds",
        "2",
        "--stop-with-pid",
        str(os.getpid()),
    ]
    if not slurm_packages_installed():
        args.append("--no-slurm")  # the tests that need Slurm skip themselves
    result = run_stack(*args, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        if result.returncode != 0:
            pytest.fail(
                f"infra/stack.py up failed ({result.returncode}):\n{result.stdout}{result.stderr}", pytrace=False
            )
        report = json.loads(result.stdout.strip().splitlines()[-1])
        yield Stack(state_dir=state_dir, report=report, env=read_env_file(state_dir / "stack.env"))
    finally:
        down = run_stack("down", "--state", str(state_dir), "--json")
        left = stack_processes(state_dir)
        for process in left:  # do not leak them into the rest of the session, then fail
            process.kill()
        assert down.returncode == 0, f"stack.py down failed:\n{down.stdout}{down.stderr}"
        assert not left, f"processes of the stack survived `down`: {[(p.pid, p.name()) for p in left]}"


@pytest.fixture(scope="session")
def deployed(stack: Stack) -> dict[str, dict]:
    """`prefect --no-prompt deploy --all` from the repository root; returns deployments by name."""
    result = stack.prefect("--no-prompt", "deploy", "--all")
    assert result.returncode == 0, f"prefect deploy --all failed:\n{result.stdout}{result.stderr}"
    deployments = stack.api("POST", "/deployments/filter", {})
    flows = {flow["id"]: flow["name"] for flow in stack.api("POST", "/flows/filter", {})}
    return {f"{flows[d['flow_id']]}/{d['name']}": d for d in deployments}


@pytest.fixture(scope="session")
def dataset_run(stack: Stack, deployed: dict[str, dict]) -> DatasetRun:
    from som import storage

    prefix = f"s3://somflow/tests/{uuid.uuid4().hex[:8]}"
    source, dest = f"{prefix}/raw", f"{prefix}/dataset"
    options = {
        "key": stack.env["AWS_ACCESS_KEY_ID"],
        "secret": stack.env["AWS_SECRET_ACCESS_KEY"],
        "endpoint_url": stack.env["AWS_ENDPOINT_URL"],
        "region": stack.env["AWS_DEFAULT_REGION"],
    }
    storage.write_many({f"{source}/{photo.name}": photo.read_bytes() for photo in PHOTOS}, options=options)
    params = [
        arg
        for name, value in {"source": source, "dest": dest, **FAST_MARKING}.items()
        for arg in ("--param", f"{name}={json.dumps(value) if not isinstance(value, str) else value}")
    ]
    result = stack.prefect(
        "deployment", "run", "som-dataset/samples", *params, "--watch", "--watch-timeout", "300", timeout=360
    )
    assert result.returncode == 0, f"the dataset deployment run failed:\n{result.stdout}{result.stderr}"
    runs = stack.api(
        "POST", "/flow_runs/filter", {"deployments": {"id": {"any_": [deployed["som-dataset/samples"]["id"]]}}}
    )
    [flow_run] = [run for run in runs if run["parameters"].get("dest") == dest]
    return DatasetRun(flow_run=flow_run, source=source, dest=dest, output=result.stdout)
