"""Requeued Slurm jobs in tests: Slurm holds a requeued job about 120 s before it may start
again (INFRA-NOTES); tests that requeue on purpose release it instead of waiting."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping


def squeue_state(job_id: str, env: Mapping[str, str] | None = None) -> str:
    """The job's state as squeue prints it ("" once it left the queue)."""
    return subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30, env=env
    ).stdout.strip()


def release_requeued(job_id: str, env: Mapping[str, str] | None = None, timeout_s: float = 90) -> None:
    """Wait until the job is requeued (PENDING), then set its start time to now until it runs.
    Raises AssertionError when it is not requeued and restarted within `timeout_s`."""
    pending_since = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = squeue_state(job_id, env)
        if state == "PENDING":
            pending_since = pending_since or time.monotonic()
            if time.monotonic() - pending_since >= 3:
                subprocess.run(
                    ["scontrol", "update", f"jobid={job_id}", "StartTime=now"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    env=env,
                )
        elif pending_since is not None:
            return
        time.sleep(1)
    raise AssertionError(f"job {job_id} was not requeued and restarted (state {squeue_state(job_id, env)!r})")
