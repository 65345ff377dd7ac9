"""The rendezvous of single-node training jobs (som/train/distributed.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.helpers.training import REPO_ROOT

ONE_RANK_ON_A_TAKEN_PORT = textwrap.dedent(
    """
    import datetime, os, socket
    import torch.distributed as dist
    from som.train.distributed import init_on_loopback

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    os.environ["MASTER_PORT"] = str(taken.getsockname()[1])
    init_on_loopback("gloo", 0, 1, datetime.timedelta(seconds=30))
    print(dist.is_initialized(), os.environ["MASTER_PORT"] != str(taken.getsockname()[1]))
    dist.destroy_process_group()
    """
)


def test_a_one_rank_job_starts_when_its_derived_port_is_taken() -> None:
    """submitit derives MASTER_PORT from the job id, so another job on the host (another
    cluster's job 6, say) can hold it: a one-rank job needs no agreed port and takes a free
    one instead of failing with EADDRINUSE (seen with two local Slurm clusters at once)."""
    done = subprocess.run(
        [sys.executable, "-c", ONE_RANK_ON_A_TAKEN_PORT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "True"]
