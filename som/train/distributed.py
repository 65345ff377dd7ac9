"""Process-group set-up and tear-down for one training process: which device, which backend,
and the launcher variables DeepSpeed needs.

Why here and not in DeepSpeed's own discovery: a bare ``python`` process without RANK and
friends makes ``deepspeed.init_distributed`` try MPI; on CPU its first call JIT-compiles a
shared-memory op for ~24 s. We export the variables ourselves (submitit's
``TorchDistributedEnvironment`` under Slurm, single-process defaults otherwise) and mark that op
unavailable; gloo then carries the collectives on CPU, NCCL on GPU.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_TIMEOUT_MIN = 120.0  # TrainConfig.dist_timeout_min's default


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
        # Keep Slurm's CUDA_VISIBLE_DEVICES: submitit's default rewrites it to the local rank,
        # which names another job's GPU when Slurm exposed e.g. "4,5,6,7" without cgroup
        # renumbering. gpu_for_local_rank picks cuda:<local rank> among the visible ones.
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        return "submitit"
    os.environ.update(
        {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    )
    return "single"


class DeviceError(RuntimeError):
    """This process cannot get a GPU of its own; the message says why and what to change."""


def gpu_for_local_rank(local_rank: int, device_count: int, local_world_size: int | None = None) -> int:
    """The CUDA index a local rank computes on, given how many GPUs this process sees.

    Why it fails rather than falling back to cuda:0: two ranks on one GPU either die in NCCL
    ("Duplicate GPU detected") or, worse, run at half speed and twice the memory. One visible
    device is the exception: a launcher that gives each task its own GPU (Slurm
    --gpus-per-task, CUDA_VISIBLE_DEVICES per rank) shows every rank a single cuda:0."""
    if device_count < 1:
        raise DeviceError(
            f"local rank {local_rank} needs a GPU but none is visible "
            "(check CUDA_VISIBLE_DEVICES and the job's GPU request)"
        )
    if device_count == 1:
        return 0
    ranks = max(local_rank + 1, local_world_size or 0)
    if ranks > device_count:
        raise DeviceError(
            f"{ranks} local ranks on this node but only {device_count} GPUs are visible "
            f"(local rank {local_rank}); request as many GPUs per node as tasks per node "
            "(gpus_per_node == tasks_per_node) or start fewer processes"
        )
    return local_rank


def choose_device(local_rank: int) -> tuple[torch.device, str]:
    """cuda:<local rank> and NCCL with GPUs (cuda:0 when each task sees one device of its own;
    an error when the node's ranks outnumber its GPUs), else the CPU and gloo."""
    if torch.cuda.is_available():
        local_world = os.environ.get("LOCAL_WORLD_SIZE")
        count = torch.cuda.device_count()
        index = gpu_for_local_rank(local_rank, count, int(local_world) if local_world else None)
        if count == 1 and local_world and int(local_world) > 1:
            log.info(
                "local rank %d of %s sees one GPU: assuming one GPU per task (CUDA_VISIBLE_DEVICES=%s)",
                local_rank,
                local_world,
                os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
            )
        torch.cuda.set_device(index)
        return torch.device("cuda", index), "nccl"
    return torch.device("cpu"), "gloo"


def _prepare_deepspeed_for_cpu() -> None:
    """DeepSpeed picks its accelerator once, at first use: tell it before it is imported, and
    skip the shared-memory comm op's JIT build (a 24 s compile for no measurable gain here)."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed.ops

    vars(deepspeed.ops).setdefault("__compatible_ops__", {})["deepspeed_shm_comm"] = False


def single_node(world_size: int) -> bool:
    """Whether every rank of the job runs on this host (LOCAL_WORLD_SIZE as submitit exports)."""
    local = os.environ.get("LOCAL_WORLD_SIZE")
    return world_size == 1 or (local is not None and int(local) == world_size)


def init_on_loopback(backend: str, rank: int, world_size: int, timeout: datetime.timedelta) -> None:
    """Start the process group with its rendezvous store on 127.0.0.1 only.

    Why: torch's TCPStore server binds every interface ("::") whatever MASTER_ADDR says, and
    torch 2.14 has no bind-address option; it does take `master_listen_fd`, a socket we bind
    to loopback ourselves. Rank 0 serves it; other local ranks connect to 127.0.0.1. Gloo's
    pairs use `lo` too (unless GLOO_SOCKET_IFNAME is set). NCCL's bootstrap socket still
    binds the interface NCCL picks (NCCL_SOCKET_IFNAME=lo would pin it; not set here until
    checked on a GPU node). Multi-node jobs skip this: their store must listen on the
    interface the other nodes reach (MASTER_ADDR, from Slurm/submitit or the launcher),
    i.e. the cluster network, by design. DeepSpeed's init_distributed adopts this group.
    """
    if torch.distributed.is_initialized():
        return
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    port = int(os.environ["MASTER_PORT"])
    if rank == 0:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # One rank: no one else needs the port, so take any free one. submitit derives
        # MASTER_PORT from the job id, which another job on this host can share (another
        # cluster's job with the same id, or the same id modulo its range): EADDRINUSE.
        listener.bind(("127.0.0.1", 0 if world_size == 1 else port))
        port = listener.getsockname()[1]
        os.environ["MASTER_PORT"] = str(port)
        listener.listen(max(128, world_size))
        store = torch.distributed.TCPStore(
            "127.0.0.1",
            port,
            world_size,
            is_master=True,
            timeout=timeout,
            wait_for_workers=False,
            master_listen_fd=listener.detach(),
        )
    else:
        store = torch.distributed.TCPStore("127.0.0.1", port, world_size, is_master=False, timeout=timeout)
    torch.distributed.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


def init_distributed(timeout_min: float = DEFAULT_TIMEOUT_MIN) -> DistEnv:
    """Export the launcher variables, pick the device, and start the process group.

    `timeout_min` bounds every collective (NCCL's default is 10 minutes): rank-0-only work such
    as uploading a 13B ZeRO-3 checkpoint, writing the export or scanning a 665k-record mix
    leaves the other ranks waiting in a barrier for longer than that, and they would be aborted
    with a healthy job. A real hang then takes `timeout_min` to surface instead."""
    source = export_launcher_env()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    device, backend = choose_device(local_rank)
    if device.type == "cpu":
        _prepare_deepspeed_for_cpu()
    import deepspeed

    timeout = datetime.timedelta(minutes=timeout_min)
    if source != "launcher" and single_node(world_size):
        init_on_loopback(backend, rank, world_size, timeout)
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False, timeout=timeout)
    log.info(
        "rank %d/%d (local %d) on %s, %s, env from %s, master %s:%s, collective timeout %s min",
        rank,
        world_size,
        local_rank,
        device,
        backend,
        source,
        os.environ["MASTER_ADDR"],
        os.environ["MASTER_PORT"],
        f"{timeout_min:g}",
    )
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=device, backend=backend)


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def teardown() -> None:
    """Leave the process group cleanly (an abandoned gloo group can abort the interpreter at
    exit after all the work is done)."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
