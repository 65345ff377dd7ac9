"""Which Dask cluster runs the shards: an existing scheduler, one worker per GPU, or CPU processes."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from typing import Any

from distributed import Nanny
from prefect_dask import DaskTaskRunner

log = logging.getLogger(__name__)


def visible_gpus() -> int:
    """Number of NVIDIA GPUs this process may use (no torch import: it takes seconds).

    CUDA_VISIBLE_DEVICES, when set, limits it: LocalCUDACluster starts one worker per entry and
    refuses more ("Can not scale beyond visible devices").
    """
    restricted = os.environ.get("CUDA_VISIBLE_DEVICES", None)
    if restricted in ("", "-1"):
        return 0
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    listed = sum(line.startswith("GPU ") for line in listing.stdout.splitlines())
    if restricted is not None:
        return min(listed, len([entry for entry in restricted.split(",") if entry.strip()]))
    return listed


def worker_environment() -> dict[str, str]:
    """Prefect settings that local workers must share with this process.

    Workers are new processes: without the API URL each would start its own temporary Prefect
    server (INFRA-NOTES: task records get lost). Settings given by a settings context (as
    prefect_test_harness does) are not in os.environ, so pass them explicitly.
    """
    from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL

    env = {
        "PREFECT_API_URL": PREFECT_API_URL.value() or "",
    }
    if PREFECT_API_KEY.value():
        env["PREFECT_API_KEY"] = PREFECT_API_KEY.value()
    return {k: v for k, v in env.items() if v}


def keep_malloc_defaults() -> None:
    """Spawn local workers without Dask's MALLOC_TRIM_THRESHOLD_=65536.

    Dask sets it so workers hand memory back to the OS quickly; for marking, which allocates
    and frees image-sized arrays all the time, it made every image ~12% slower here (measured:
    plain loop 11.1-12.4 s vs 12.5-14.0 s with it). Thread limits for BLAS/OpenMP stay.
    """
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    dask.config.set({"distributed.nanny.pre-spawn-environ": environ})


class EnvNanny(Nanny):
    """A Nanny that adds `worker_env` to its worker process's environment.

    dask-cuda's LocalCUDACluster overwrites each worker's `env` option with its own
    {"CUDA_VISIBLE_DEVICES": ...}, so settings passed as `env` never reached GPU workers (they
    fell back to Prefect's ephemeral mode). `worker_env` is an option dask-cuda leaves alone;
    both the CPU and the GPU cluster pass their settings this way, so one test covers both.
    """

    def __init__(
        self, *args: Any, worker_env: dict[str, str] | None = None, env: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        # The cluster's own entries (the GPU pinning) win over ours.
        super().__init__(*args, env={**(worker_env or {}), **(env or {})}, **kwargs)


def local_cluster_spec(
    workers: int | None, gpus: int, env: dict[str, str], cpus: int | None = None
) -> tuple[str, dict[str, Any]]:
    """Cluster class and kwargs of a local cluster: one worker per GPU when `gpus` (dask-cuda),
    else one single-threaded worker process per core. Pure, so tests can inject `gpus`.

    LocalCUDACluster cannot run more workers than visible GPUs ("Can not scale beyond visible
    devices"): a larger `workers` is capped, with a warning, rather than failing the flow.
    """
    common: dict[str, Any] = {
        "threads_per_worker": 1,
        # Loopback only (issue 11): a bare ":0" put the dashboard on every interface. The
        # scheduler and workers are pinned too, though LocalCluster defaults to 127.0.0.1.
        # A free port: several clusters may run at once.
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",
        "worker_class": EnvNanny,
        "worker_env": dict(env),
    }
    if gpus:
        if workers and workers > gpus:
            log.warning(
                "--workers %d but only %d visible GPU(s): starting %d GPU worker(s), one per GPU",
                workers,
                gpus,
                gpus,
            )
            workers = gpus
        return "dask_cuda.LocalCUDACluster", {**common, "n_workers": workers or gpus}
    return "distributed.LocalCluster", {
        **common,
        "n_workers": workers or cpus or os.cpu_count() or 1,
        "processes": True,
    }


def dask_task_runner(workers: int | None = None, scheduler: str | None = None) -> DaskTaskRunner:
    """A DaskTaskRunner for the marking shards.

    scheduler: address of a running Dask scheduler (e.g. a dask-jobqueue SLURMCluster's).
    workers: worker processes of a local cluster (default: one per GPU, else one per core;
    at most one per GPU).
    """
    if scheduler:
        return DaskTaskRunner(address=scheduler)
    keep_malloc_defaults()
    gpus = visible_gpus()
    if gpus:
        try:
            import dask_cuda  # noqa: F401
        except ImportError:
            log.warning(
                "%d GPU(s) but dask-cuda is not installed (pip install 'somflow[gpu]'): using CPU workers", gpus
            )
            gpus = 0
    cluster_class, kwargs = local_cluster_spec(workers, gpus, worker_environment())
    return DaskTaskRunner(cluster_class=cluster_class, cluster_kwargs=kwargs)
