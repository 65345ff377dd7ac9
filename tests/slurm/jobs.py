"""Functions the Slurm tests submit; in their own importable module (`tests.slurm.jobs`)
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
