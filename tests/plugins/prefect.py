"""pytest plugin: ``prefect_api`` (session), a real Prefect server (Prefect's test harness) that
flows in the test process and the Dask worker processes they start both report to."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real Prefect server (the test harness) that Dask worker processes also report to."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
