"""Which Dask cluster runs the shards: an existing scheduler, one worker per GPU, or CPU processes."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from prefect_dask import DaskTaskRunner

log = logging.getLogger(__name__)


def visible_gpus() -> int:
    """Number of NVIDIA GPUs this process may use (no torch import: it takes seconds)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return 0
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


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


def dask_task_runner(workers: int | None = None, scheduler: str | None = None) -> DaskTaskRunner:
    """A DaskTaskRunner for the marking shards.

    scheduler: address of a running Dask scheduler (e.g. a dask-jobqueue SLURMCluster's).
    workers: worker processes of a local cluster (default: one per GPU, else one per core).
    """
    if scheduler:
        return DaskTaskRunner(address=scheduler)
    keep_malloc_defaults()
    gpus = visible_gpus()
    if gpus:
        try:
            import dask_cuda  # noqa: F401
        except ImportError:
            log.warning("%d GPU(s) but dask-cuda is not installed (pip install 'somflow[gpu]'): using CPU workers", gpus)
        else:
            kwargs = {"threads_per_worker": 1, "env": worker_environment()}
            if workers:
                kwargs["n_workers"] = workers
            return DaskTaskRunner(cluster_class="dask_cuda.LocalCUDACluster", cluster_kwargs=kwargs)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": workers or os.cpu_count() or 1,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": ":0",  # a free port: several clusters may run at once
            "env": worker_environment(),
        },
    )
