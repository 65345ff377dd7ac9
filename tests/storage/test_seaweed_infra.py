"""infra/storage/seaweed.py: lifecycle of a real server, outage, restart on the same data.

These tests start their own servers so that stopping them never disturbs the session one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from som import storage
from tests.plugins.s3 import SEAWEED_SCRIPT, S3Server, run_script

# Fail fast while the server is down: one attempt, short timeouts (s3fs still adds its own
# few quick retries).
FAST_FAIL = {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1, "read_timeout": 2}}


def live_weed_pids(data_dir: Path) -> list[int]:
    """Pids of live (non-zombie) weed processes serving `data_dir`, read from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (
            args
            and os.path.basename(args[0]) == b"weed"
            and state not in ("Z", "X")
            and f"-dir={data_dir}".encode() in args
        ):
            pids.append(int(entry.name))
    return pids


def test_help() -> None:
    result = run_script("--help")
    assert result.returncode == 0
    assert "up" in result.stdout and "down" in result.stdout and "status" in result.stdout
    assert "--bucket" in run_script("up", "--help").stdout


def test_lifecycle_outage_and_restart(tmp_path: Path, seaweed_factory: Callable[..., S3Server]) -> None:
    state = tmp_path / "s3"
    server = seaweed_factory(state, bucket="lifecycle")
    data_dir = state / "data"
    assert live_weed_pids(data_dir) == [server.pid]
    assert (state / "s3.json").stat().st_mode & 0o777 == 0o600
    assert (state / "s3.env").stat().st_mode & 0o777 == 0o600
    assert server.secret_key not in (state / "state.json").read_text()

    # A second `up` reports the running server instead of starting another one.
    again = server.start()
    assert again["status"] == "already-running"
    assert (again["pid"], again["port"]) == (server.pid, server.port)
    assert live_weed_pids(data_dir) == [server.pid]
    status = run_script("status", "--state", str(state), "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "running"

    opts = {**server.storage_options, **FAST_FAIL}
    url = server.url("keep", "me.bin")
    storage.write_bytes_atomic(url, b"survives a restart", opts)

    port, endpoint = server.port, server.endpoint_url
    stopped = server.stop()
    assert stopped["status"].startswith("stopped")
    assert live_weed_pids(data_dir) == []
    assert not (state / "weed.pid").exists()
    assert json.loads(run_script("down", "--state", str(state), "--json").stdout)["status"] == "not-running"
    assert run_script("status", "--state", str(state)).returncode == 3

    # While it is down, operations fail with errors classified as transient.
    for operation in (
        lambda: storage.read_bytes(url, opts),
        lambda: storage.write_bytes_atomic(server.url("new.bin"), b"x", opts),
        lambda: storage.list_images(server.url(), options=opts),
    ):
        with pytest.raises(Exception) as info:
            operation()
        assert storage.is_transient(info.value), repr(info.value)

    # Restart from the same state folder: same port, same keys, same data.
    restarted = server.start()
    assert restarted["status"] == "started"
    assert (server.port, server.endpoint_url) == (port, endpoint)
    assert storage.read_bytes(url, opts) == b"survives a restart"
    storage.write_bytes_atomic(server.url("after.bin"), b"after", opts)

    server.stop()
    assert live_weed_pids(data_dir) == []
    # weed leaves some of its /tmp sockets behind; `down` removes them.
    assert not list(Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{server.port + 10000}.sock"))


def test_concurrent_up_starts_one_server(tmp_path: Path) -> None:
    state = tmp_path / "s3"
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(lambda _: run_script("up", "--state", str(state), "--bucket", "racy", "--json"), range(2))
        )
    try:
        reports = [json.loads(r.stdout) for r in results]
        assert sorted(r["status"] for r in reports) == ["already-running", "started"]
        assert len({r["pid"] for r in reports}) == 1
        assert len(live_weed_pids(state / "data")) == 1
    finally:
        run_script("down", "--state", str(state))
    assert live_weed_pids(state / "data") == []


def test_stops_when_owner_process_dies(tmp_path: Path, seaweed_factory: Callable[..., S3Server]) -> None:
    """--stop-with-pid: a test session killed hard must not leave weed running."""
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        server = seaweed_factory(tmp_path / "s3", bucket="orphan", owner_pid=owner.pid)
        assert live_weed_pids(tmp_path / "s3" / "data") == [server.pid]
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 15
    while live_weed_pids(tmp_path / "s3" / "data") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_weed_pids(tmp_path / "s3" / "data") == []


def test_clear_error_when_port_taken(tmp_path: Path, s3_server: object) -> None:
    port = s3_server.port
    result = run_script("up", "--state", str(tmp_path / "s3"), "--port", str(port))
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "in use" in result.stderr
    assert live_weed_pids(tmp_path / "s3" / "data") == []


def test_script_runs_from_anywhere(tmp_path: Path) -> None:
    """`python infra/storage/seaweed.py` needs no import of the project."""
    result = subprocess.run(
        [sys.executable, str(SEAWEED_SCRIPT), "status", "--state", str(tmp_path / "none")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 3, result.stderr
