"""Functions the Slurm tests submit; in their own importable module (`tests.helpers.slurm_jobs`)
because submitit pickles functions by reference and the job imports them from the
submission folder."""

from __future__ import annotations

import os
import socket
import time


def add(a: int, b: int) -> int:
    return a + b


def node_name() -> tuple[str, int, str]:
    """(SLURMD_NODENAME, global rank, the node name resolved inside the job)."""
    import submitit

    env = submitit.JobEnvironment()
    name = os.environ["SLURMD_NODENAME"]
    return name, env.global_rank, socket.gethostbyname(name)


def sleep_long() -> None:
    time.sleep(300)


def report(lines: int = 3) -> dict[str, str | None]:
    """Log a few lines (stdout and stderr), then return what the job's environment holds."""
    import sys

    for i in range(lines):
        print(f"report line {i}", flush=True)
    print("report on stderr", file=sys.stderr, flush=True)
    names = ("SOMFLOW_PROBE", "SOMFLOW_INHERITED", "RANK", "SUBMITIT_EXECUTOR")
    return {name: os.environ.get(name) for name in names}


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


def square_or_fail(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"element {x} is bad")
    return x * x


def fail_once(marker: str, value: int) -> int:
    """Fail the first time (creating `marker`), return `value` afterwards."""
    from pathlib import Path

    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError(f"injected failure (marker {marker} created)")
    return value


def sleep_recording_pid(path: str) -> None:
    """Write this process's pid to `path`, then sleep (to check that a cancel killed it)."""
    from pathlib import Path

    Path(path).write_text(str(os.getpid()))
    time.sleep(300)
