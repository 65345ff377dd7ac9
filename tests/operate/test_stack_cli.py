"""infra/stack.py on a state folder with nothing running: quick answers, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.stack import run_stack


def test_status_down_and_env_of_a_stack_never_started(tmp_path: Path):
    state = tmp_path / "stack"
    status = run_stack("status", "--state", str(state), "--json", timeout=60)
    assert status.returncode == 3, status.stderr
    report = json.loads(status.stdout.strip().splitlines()[-1])
    assert not report["running"] and set(report["parts"].values()) == {"stopped"}

    down = run_stack("down", "--state", str(state), timeout=60)
    assert down.returncode == 0 and "nothing was running" in down.stdout, down.stdout + down.stderr

    env = run_stack("env", "--state", str(state), timeout=60)
    assert env.returncode == 1 and f"{state / 'stack.env'} does not exist" in env.stderr
    assert "infra/stack.py up" in env.stderr


def test_a_busy_prefect_port_is_refused_before_anything_starts(tmp_path: Path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_stack(
            "up", "--state", str(tmp_path / "stack"), "--prefect-port", str(port), "--no-slurm", timeout=120
        )
    assert result.returncode == 1 and f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert not (tmp_path / "stack" / "s3" / "weed.pid").exists(), "S3 must not be left running"
