"""Process-group set-up and tear-down for one training process: which device, which backend,
and the launcher variables DeepSpeed needs.

Why here and not in DeepSpeed's own discovery: a bare ``python`` process without RANK and
friends makes ``deepspeed.init_distributed`` try MPI; on CPU its first call JIT-compiles a
shared-memory op for ~24 s. We export the variables ourselves (submitit's
``TorchDistributedEnvironment`` under Slurm, single-process defaults otherwise) and mark that op
unavailable; gloo then carries the collectives on CPU, NCCL on GPU.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job and what it computes on."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    """A TCP port free right now on this host (for single-process runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def export_launcher_env() -> str:
    """Make sure RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT are set; returns who set them.

    Under a submitit job they come from the Slurm task (one task per GPU, or per CPU slot);
    under torchrun or the deepspeed launcher they are already there; otherwise this is a single
    process on a free local port."""
    if all(name in os.environ for name in LAUNCHER_VARS):
        return "launcher"
    try:
        import submitit

        submitit.JobEnvironment()  # raises outside a submitit job
    except RuntimeError:
        pass
    else:
        submitit.helpers.TorchDistributedEnvironment().export(overwrite=True)
        return "submitit"
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())})
    return "single"


def choose_device(local_rank: int) -> tuple[torch.device, str]:
    """cuda:<local rank> and NCCL with GPUs (cuda:0 when submitit left one visible device),
    else the CPU and gloo."""
    if torch.cuda.is_available():
        index = local_rank if torch.cuda.device_count() > local_rank else 0
        torch.cuda.set_device(index)
        return torch.device("cuda", index), "nccl"
    return torch.device("cpu"), "gloo"


def _prepare_deepspeed_for_cpu() -> None:
    """DeepSpeed picks its accelerator once, at first use: tell it before it is imported, and
    skip the shared-memory comm op's JIT build (a 24 s compile for no measurable gain here)."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed.ops

    vars(deepspeed.ops).setdefault("__compatible_ops__", {})["deepspeed_shm_comm"] = False


def init_distributed() -> DistEnv:
    """Export the launcher variables, pick the device, and start the process group."""
    source = export_launcher_env()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    device, backend = choose_device(local_rank)
    if device.type == "cpu":
        _prepare_deepspeed_for_cpu()
    import deepspeed

    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    log.info("rank %d/%d (local %d) on %s, %s, env from %s, master %s:%s", rank, world_size,
             local_rank, device, backend, source, os.environ["MASTER_ADDR"],
             os.environ["MASTER_PORT"])
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=device,
                   backend=backend)


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def teardown() -> None:
    """Leave the process group cleanly (an abandoned gloo group can abort the interpreter at
    exit after all the work is done)."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
