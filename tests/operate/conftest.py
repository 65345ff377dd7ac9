"""The whole local stack for a test session, brought up and down with infra/stack.py as users do.

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
import shlex
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.plugins.slurm import slurm_packages_installed

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO_ROOT / "infra" / "stack.py"
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts" / "operate"
PHOTOS = sorted((REPO_ROOT / "tests" / "data").glob("*.jpg"))
FAST_MARKING = {"segmenter": "slic", "segmenter_params": {"n_segments": 12}, "short_side": 96, "workers": 1}


def read_env_file(path: Path) -> dict[str, str]:
    """`export NAME=value` lines (values shell-quoted) as a dict; PATH lines are left out."""
    values = {}
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            if name != "PATH":
                values[name] = value
    return values


def stack_processes(state_dir: Path) -> list[psutil.Process]:
    """Live processes that belong to the stack of `state_dir` (found by its marker variable)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.status() != psutil.STATUS_ZOMBIE \
                    and process.environ().get("SOMFLOW_STACK") == str(state_dir):
                found.append(process)
        except psutil.Error:
            continue
    return found


def run_stack(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(STACK_SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)


@dataclass
class Stack:
    """A running stack: where its state is and the environment its stack.env gives clients."""

    state_dir: Path
    report: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return self.env["PREFECT_API_URL"]

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    def client_env(self) -> dict[str, str]:
        """A shell that sourced stack.env, with its own PREFECT_HOME (not the user's ~/.prefect)."""
        return {**os.environ, **self.env, "PATH": os.environ.get("PATH", "") + ":/usr/sbin",
                "PREFECT_HOME": str(self.state_dir.parent / "client-prefect-home")}

    def prefect(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The `prefect` CLI as a user runs it from the repository root."""
        cmd = [str(Path(sys.executable).with_name("prefect")), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.client_env(),
                              cwd=REPO_ROOT, check=False)

    def api(self, method: str, path: str, body: dict | None = None) -> Any:
        response = httpx.request(method, f"{self.api_url}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state_dir = tmp_path_factory.mktemp("stack") / "state"
    args = ["up", "--state", str(state_dir), "--json", "--prefect-port", str(free_port()),
            "--worker-poll-seconds", "2", "--stop-with-pid", str(os.getpid())]
    if not slurm_packages_installed():
        args.append("--no-slurm")  # the tests that need Slurm skip themselves
    result = run_stack(*args, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        if result.returncode != 0:
            pytest.fail(f"infra/stack.py up failed ({result.returncode}):\n{result.stdout}{result.stderr}", pytrace=False)
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


@dataclass
class DatasetRun:
    """One completed run of the dataset deployment and what it was asked to do."""

    flow_run: dict[str, Any]
    source: str
    dest: str
    output: str


@pytest.fixture(scope="session")
def dataset_run(stack: Stack, deployed: dict[str, dict]) -> DatasetRun:
    from som import storage

    prefix = f"s3://somflow/tests/{uuid.uuid4().hex[:8]}"
    source, dest = f"{prefix}/raw", f"{prefix}/dataset"
    options = {"key": stack.env["AWS_ACCESS_KEY_ID"], "secret": stack.env["AWS_SECRET_ACCESS_KEY"],
               "endpoint_url": stack.env["AWS_ENDPOINT_URL"], "region": stack.env["AWS_DEFAULT_REGION"]}
    storage.write_many({f"{source}/{photo.name}": photo.read_bytes() for photo in PHOTOS}, options=options)
    params = [arg for name, value in {"source": source, "dest": dest, **FAST_MARKING}.items()
              for arg in ("--param", f"{name}={json.dumps(value) if not isinstance(value, str) else value}")]
    result = stack.prefect("deployment", "run", "som-dataset/samples", *params, "--watch", "--watch-timeout", "300",
                           timeout=360)
    assert result.returncode == 0, f"the dataset deployment run failed:\n{result.stdout}{result.stderr}"
    runs = stack.api("POST", "/flow_runs/filter", {"deployments": {"id": {"any_": [deployed["som-dataset/samples"]["id"]]}}})
    [flow_run] = [run for run in runs if run["parameters"].get("dest") == dest]
    return DatasetRun(flow_run=flow_run, source=source, dest=dest, output=result.stdout)
