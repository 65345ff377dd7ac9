"""A Prefect API for command-line runs: the configured one, or a local server for the run.

Prefect's ephemeral mode is not safe with process-based Dask workers (each worker would start
its own temporary server and task records get lost, INFRA-NOTES), so without PREFECT_API_URL
the CLI starts `prefect server start` on 127.0.0.1 and stops it afterwards. Runs are kept in
Prefect's usual database (~/.prefect), so `prefect server start` shows them later. The server
is an infra.service.Service, as the stack's own is: its log and state file live in a temporary
folder, and an owner watchdog stops it if this process is killed (no finally block runs then).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from infra.service import Service

log = logging.getLogger(__name__)
START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310 - our own server
        return response.status == 200


def flush_to_api() -> None:
    """Send queued logs and events now, while the server still answers (not at exit)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """Yield the API URL flows should use, starting a local server when none is configured."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    command = [
        str(Path(sys.executable).with_name("prefect")),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    log.info("no PREFECT_API_URL: starting a local Prefect server at %s for this run", url)
    with tempfile.TemporaryDirectory(prefix="somflow-prefect-") as folder:
        server = Service(
            "the Prefect server", command, log=Path(folder, "server.log"), state=Path(folder, "server.pid"), env=env
        )
        server.start()
        try:
            server.watch_owner(os.getpid())
            server.wait_ready(lambda: healthy(url), START_TIMEOUT_S, what=f"the Prefect server at {url}")
            with temporary_settings({PREFECT_API_URL: url}):
                try:
                    yield url
                finally:
                    flush_to_api()
        finally:
            server.stop(20)
