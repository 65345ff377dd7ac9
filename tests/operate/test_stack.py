"""infra/stack.py: one command brings every part up, idempotently, on 127.0.0.1 only."""

from __future__ import annotations

import json
import stat

import psutil
import pytest

from tests.helpers.stack import Stack, run_stack, stack_processes

pytestmark = pytest.mark.slow


def test_up_again_keeps_every_part_and_status_reports_them(stack: Stack):
    result = run_stack("up", "--state", str(stack.state_dir), "--json", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    again = json.loads(result.stdout.strip().splitlines()[-1])
    assert again["prefect_server"] == again["prefect_worker"] == "already-running"
    assert again["s3"]["status"] == "already-running" and again["work_pool"] == "exists"
    assert again["api_url"] == stack.report["api_url"] and again["seconds"] < 30

    status = run_stack("status", "--state", str(stack.state_dir), "--json", timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    parts = json.loads(status.stdout.strip().splitlines()[-1])["parts"]
    assert set(parts.values()) == {"running"} and {"s3", "prefect-server", "prefect-worker"} <= set(parts)


def test_env_file_points_clients_at_every_part_and_is_private(stack: Stack):
    env_file = stack.state_dir / "stack.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600, "it holds the S3 secret key"
    assert stack.api_url == stack.report["api_url"] and stack.env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert stack.env["SOMFLOW_STORAGE_CONFIG"] == str(stack.state_dir / "s3" / "s3.env")
    if "slurm" in stack.report:
        assert stack.env["SLURM_CONF"] == str(stack.state_dir / "slurm" / "slurm.conf")
    printed = run_stack("env", "--state", str(stack.state_dir), timeout=30)
    assert printed.returncode == 0 and printed.stdout == env_file.read_text()
    assert stack.api("GET", "/health") is True
    [pool] = [p for p in stack.api("POST", "/work_pools/filter", {}) if p["name"] == "somflow"]
    assert pool["type"] == "process"


def test_nothing_listens_beyond_localhost(stack: Stack):
    members = {p.pid: p.name() for p in stack_processes(stack.state_dir)}
    assert {"weed", "prefect"} <= set(members.values())
    listening = [
        (members[c.pid], c.laddr)
        for c in psutil.net_connections("inet")
        if c.status == psutil.CONN_LISTEN and c.pid in members
    ]
    assert listening, "the stack's servers were not found listening"
    # slurmdbd (Slurm 22.05) has no setting that binds it to one address; it only talks to
    # slurmctld, with munge authentication.
    exposed = [(name, addr) for name, addr in listening if addr.ip != "127.0.0.1" and name != "slurmdbd"]
    assert not exposed, f"listening beyond 127.0.0.1: {exposed}"
