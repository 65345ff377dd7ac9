"""pytest plugin: a real local S3 (SeaweedFS) for the whole test session.

Register it with ``pytest_plugins = ["tests.plugins.s3"]`` in the root conftest (or
``-p tests.plugins.s3`` on the command line). Fixtures:

- ``s3_server`` (session): a running server, stopped at the end of the session. It is
  started through ``infra/storage/seaweed.py`` exactly as users start theirs, with
  ``--stop-with-pid`` so that it goes away even if pytest is killed.
- ``s3_prefix`` (function): a fresh ``s3://<bucket>/<test>-<random>`` prefix per test.
- ``seaweed_factory`` (function): starts extra servers, all stopped when the test ends.

Tests that must stop or restart a server (outage tests) start their own with
the ``seaweed_factory`` fixture (or `start_seaweed`) instead of disturbing the shared one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from som.storage import read_config_file

REPO_ROOT = Path(__file__).resolve().parents[2]
SEAWEED_SCRIPT = REPO_ROOT / "infra" / "storage" / "seaweed.py"
DEFAULT_BUCKET = "somflow-test"


class SeaweedScriptError(RuntimeError):
    """The infra script failed; the message carries its output."""


def run_script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run infra/storage/seaweed.py with this interpreter (so it finds the venv's weed)."""
    return subprocess.run(
        [sys.executable, str(SEAWEED_SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class S3Server:
    """A SeaweedFS server started by the infra script, and how to reach it."""

    state_dir: Path
    bucket: str
    endpoint_url: str = ""
    port: int = 0
    region: str = "us-east-1"
    pid: int = 0
    owner_pid: int | None = None
    access_key: str = ""
    secret_key: str = field(default="", repr=False)

    @property
    def env(self) -> dict[str, str]:
        """The AWS_* variables a subprocess needs (same content as STATE/s3.env)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    @property
    def storage_options(self) -> dict[str, Any]:
        """Explicit options for som.storage functions (no environment needed)."""
        return {
            "key": self.access_key,
            "secret": self.secret_key,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
        }

    @property
    def env_file(self) -> Path:
        return self.state_dir / "s3.env"

    def url(self, *parts: str) -> str:
        """``s3://<bucket>/<parts...>``."""
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in parts if p)])

    def start(self, port: int | None = None) -> dict[str, Any]:
        """`up` (idempotent); returns the script's JSON report. With `owner_pid` set, the
        server stops by itself once that process exits."""
        args = ["up", "--state", str(self.state_dir), "--bucket", self.bucket, "--json"]
        if port:
            args += ["--port", str(port)]
        if self.owner_pid:
            args += ["--stop-with-pid", str(self.owner_pid)]
        result = run_script(*args)
        if result.returncode != 0:
            raise SeaweedScriptError(f"seaweed.py up failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        report = json.loads(result.stdout.strip().splitlines()[-1])
        settings = read_config_file(self.env_file)
        self.endpoint_url = report["endpoint_url"]
        self.port = int(report["port"])
        self.region = report["region"]
        self.pid = int(report["pid"])
        self.access_key = settings.key or ""
        self.secret_key = settings.secret or ""
        return report

    def stop(self) -> dict[str, Any]:
        """`down`; returns the script's JSON report."""
        result = run_script("down", "--state", str(self.state_dir), "--json")
        if result.returncode != 0:
            raise SeaweedScriptError(f"seaweed.py down failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return json.loads(result.stdout.strip().splitlines()[-1])


def start_seaweed(
    state_dir: Path, bucket: str = DEFAULT_BUCKET, port: int | None = None, owner_pid: int | None = None
) -> S3Server:
    """Start a server in `state_dir` (stopped automatically once `owner_pid` exits)."""
    server = S3Server(state_dir=state_dir, bucket=bucket, owner_pid=owner_pid or os.getpid())
    try:
        server.start(port=port)
    except BaseException:
        run_script("down", "--state", str(state_dir))
        raise
    return server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server for the session, with one bucket (``server.bucket``)."""
    state_dir = tmp_path_factory.mktemp("seaweedfs")
    try:
        server = start_seaweed(state_dir)
    except (SeaweedScriptError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"could not start the test S3 server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def seaweed_factory() -> Iterator[Callable[..., S3Server]]:
    """Start extra servers (``factory(state_dir, bucket=..., port=...)``) that a test may
    stop and restart at will; every one is stopped when the test ends, pass or fail."""
    started: list[S3Server] = []

    def factory(
        state_dir: Path, bucket: str = DEFAULT_BUCKET, port: int | None = None, owner_pid: int | None = None
    ) -> S3Server:
        server = start_seaweed(state_dir, bucket=bucket, port=port, owner_pid=owner_pid)
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def s3_prefix(s3_server: S3Server, request: pytest.FixtureRequest) -> str:
    """A fresh prefix per test, so tests never see each other's objects."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:60]
    return s3_server.url(f"{name}-{uuid.uuid4().hex[:8]}")
