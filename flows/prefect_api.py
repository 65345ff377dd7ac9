"""A Prefect API for command-line runs: the configured one, or a local server for the run.

Prefect's ephemeral mode is not safe with process-based Dask workers (each worker would start
its own temporary server and task records get lost, INFRA-NOTES), so without PREFECT_API_URL
the CLI starts `prefect server start` on 127.0.0.1 and stops it afterwards. Runs are kept in
Prefect's usual database (~/.prefect), so `prefect server start` shows them later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)
START_TIMEOUT_S = 90
PROCS = Path(__file__).resolve().parents[1] / "infra" / "procs.py"


def start_owner_watchdog(owner_pid: int, target_pid: int) -> subprocess.Popen | None:
    """infra/procs.py's owner watchdog (infra/ is not an installed package: loaded by path)."""
    import importlib.util

    if not PROCS.exists():
        log.warning("no %s: the Prefect server (pid %d) will outlive a kill -9 of this run", PROCS, target_pid)
        return None
    spec = importlib.util.spec_from_file_location("somflow_infra_procs", PROCS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.start_owner_watchdog(owner_pid, target_pid)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {process.returncode} while starting")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.25)
    raise RuntimeError(f"the Prefect server at {url} did not become healthy within {timeout:.0f} s")


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
    command = [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    log.info("no PREFECT_API_URL: starting a local Prefect server at %s for this run", url)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    # the server runs in its own session (a Ctrl-C is ours to handle), so a `kill -9` of this
    # process would orphan it: a detached watchdog stops it once this process is gone
    watchdog = start_owner_watchdog(os.getpid(), process.pid)
    try:
        wait_healthy(url, process)
        with temporary_settings({PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                flush_to_api()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if watchdog is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(watchdog.pid, signal.SIGTERM)  # its target is gone: nothing left to watch
