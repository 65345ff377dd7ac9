"""infra/service.py, the supervisor under every local service, on plain shell processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.procs import alive
from infra.service import Service, ServiceError, recorded_pid


def shell(tmp_path: Path, script: str, name: str = "svc") -> Service:
    return Service(name, ["sh", "-c", script], log=tmp_path / f"{name}.log", state=tmp_path / f"{name}.pid")


def wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def test_start_ready_and_stop_takes_the_process_group(tmp_path: Path) -> None:
    child_pid = tmp_path / "child"
    service = shell(tmp_path, f"sleep 60 & echo $! > {child_pid}; echo up; wait")
    pid = service.start()
    assert service.wait_ready(child_pid.exists, 10) is True
    assert service.pid() == pid and "up" in service.log.read_text()
    child = int(child_pid.read_text())
    assert service.stop(5) == "terminated"
    assert wait_gone(pid) and wait_gone(child), "the service's own children go with it"
    assert service.pid() is None and not service.state.exists()
    assert service.stop() == "not-running"


def test_a_recycled_pid_is_never_taken_for_the_service(tmp_path: Path) -> None:
    """The state file names the process by pid and start time: another process with that pid
    (here: this test's, with a made-up start time) is not the service, and is never signalled."""
    state = tmp_path / "svc.pid"
    state.write_text(json.dumps({"pid": os.getpid(), "start_ticks": 1, "command": ["x"]}))
    service = Service("svc", ["x"], log=tmp_path / "svc.log", state=state)
    assert service.pid() is None and not state.exists(), "a stale state file is removed"
    assert service.stop() == "not-running"


def test_exit_while_starting_and_timeout_end_with_the_log_tail(tmp_path: Path) -> None:
    crashing = shell(tmp_path, "echo 'bind: address already in use' >&2; exit 3", "crashing")
    crashing.start()
    with pytest.raises(ServiceError, match=r"(?s)crashing exited while starting.*address already in use"):
        crashing.wait_ready(lambda: False, 10)

    def refuse() -> bool:
        raise ConnectionRefusedError("connection refused")

    slow = shell(tmp_path, "echo still loading; sleep 30", "slow")
    slow.start()
    try:
        with pytest.raises(
            ServiceError,
            match=r"(?s)slow was not ready within 1 s \(last error: connection "
            r"refused\).*still loading",
        ):
            slow.wait_ready(refuse, 1)
    finally:
        slow.stop(5)


def test_owner_watchdog_stops_the_service_when_its_owner_dies(tmp_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    service = shell(tmp_path, "sleep 60")
    pid = service.start()
    try:
        service.watch_owner(owner.pid)
        watchdog = recorded_pid(service.watchdog_state)
        assert watchdog is not None
        time.sleep(1)
        assert alive(pid), "the owner lives: the service stays"
    finally:
        owner.kill()
        owner.wait()
    assert wait_gone(pid), "the watchdog stopped the service of a dead owner"
    assert wait_gone(watchdog), "and exited"
