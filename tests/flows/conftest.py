"""Fixtures for flow tests: a Prefect API for the session and S3 credentials in the environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from som import storage


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real Prefect server (the test harness) that Dask worker processes also report to."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def use_s3(monkeypatch: pytest.MonkeyPatch, server) -> None:
    """Point this process, and the worker processes it starts, at `server`."""
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    storage.clear_filesystems()
