"""Local Dask clusters of the dataset flow (issue 16.3): every worker, CPU or GPU, must see the
Prefect settings of worker_environment(), and a GPU cluster never asks for more workers than
GPUs. No GPU here: dask-cuda's LocalCUDACluster is stood in for by a LocalCluster that does
to each worker's options what LocalCUDACluster does (replace `env` with its device pinning)."""

from __future__ import annotations

import copy
import logging
import sys
import types
from typing import Any

import pytest
from distributed import Client, LocalCluster  # noqa: E402

import tasks.cluster as cluster_module  # noqa: E402
from tasks.cluster import dask_task_runner  # noqa: E402

API_URL = "http://127.0.0.1:9/api"


class PinningCluster(LocalCluster):
    """LocalCluster that starts its workers the way LocalCUDACluster does: no workers at first,
    then scale(n_workers), with each new worker spec's `env` replaced by the device pinning
    (LocalCUDACluster.new_worker_spec: spec["options"].update({"env": {"CUDA_VISIBLE_DEVICES":
    ...}, ...}))."""

    def __init__(self, *args: Any, n_workers: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, n_workers=0, **kwargs)
        self.scale(n_workers or 1)

    def new_worker_spec(self) -> dict[str, Any]:
        specs = super().new_worker_spec()
        for name, spec in list(specs.items()):
            spec = copy.deepcopy(spec)
            spec["options"].update({"env": {"CUDA_VISIBLE_DEVICES": "0"}})
            specs[name] = spec
        return specs


@pytest.fixture
def prefect_api_only_in_settings(monkeypatch):
    """PREFECT_API_URL set the way prefect_test_harness sets it: in a settings context, not in
    os.environ, so workers can only get it from what the cluster passes them."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_KEY", raising=False)
    with temporary_settings(updates={PREFECT_API_URL: API_URL}):
        yield


@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has N GPUs and dask-cuda installed (a stub module whose
    LocalCUDACluster is PinningCluster)."""

    def pretend(count: int) -> None:
        stub = types.ModuleType("dask_cuda")
        stub.LocalCUDACluster = PinningCluster  # type: ignore[attr-defined]
        monkeypatch.setattr(cluster_module, "visible_gpus", lambda: count)
        monkeypatch.setitem(sys.modules, "dask_cuda", stub)

    return pretend


def worker_environ(cluster_class: type, kwargs: dict[str, Any]) -> list[dict[str, str | None]]:
    """Start the cluster for real (worker processes) and read each worker's environment."""
    kwargs = {**kwargs, "n_workers": 1, "silence_logs": logging.WARNING}
    with cluster_class(**kwargs) as cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=60)
        seen = client.run(
            lambda: {k: __import__("os").environ.get(k) for k in ("PREFECT_API_URL", "CUDA_VISIBLE_DEVICES")}
        )
    return list(seen.values())


@pytest.mark.timeout(120)
def test_gpu_workers_keep_the_prefect_settings(prefect_api_only_in_settings, gpus):
    """The GPU path's kwargs, on a cluster that replaces `env` per worker as dask-cuda does:
    workers see both the device pinning and PREFECT_API_URL (before: only the pinning)."""
    gpus(1)
    runner = dask_task_runner()
    assert runner.resolved_cluster_class is PinningCluster  # prefect-dask resolved dask_cuda.LocalCUDACluster
    assert worker_environ(runner.resolved_cluster_class, runner.cluster_kwargs) == [
        {"PREFECT_API_URL": API_URL, "CUDA_VISIBLE_DEVICES": "0"}
    ]


@pytest.mark.timeout(120)
def test_cpu_workers_get_the_prefect_settings(prefect_api_only_in_settings, gpus):
    """The CPU path's kwargs on a real LocalCluster: the same mechanism, the same result."""
    gpus(0)
    runner = dask_task_runner(workers=1)
    assert runner.resolved_cluster_class is LocalCluster
    assert worker_environ(runner.resolved_cluster_class, runner.cluster_kwargs) == [
        {"PREFECT_API_URL": API_URL, "CUDA_VISIBLE_DEVICES": None}
    ]


def test_gpu_workers_are_capped_at_the_visible_gpus(prefect_api_only_in_settings, gpus, caplog):
    """`--workers 2` on a one-GPU machine made LocalCUDACluster raise "Can not scale beyond
    visible devices"; now it runs one worker and says why."""
    gpus(1)
    with caplog.at_level(logging.WARNING, logger="tasks.cluster"):
        runner = dask_task_runner(workers=2)
    assert runner.cluster_kwargs["n_workers"] == 1
    assert "only 1 visible GPU" in caplog.text


@pytest.mark.parametrize(
    ("workers", "gpus", "expected"),
    [(None, 4, 4), (2, 4, 2), (8, 4, 4), (None, 0, 3), (5, 0, 5)],
)
def test_local_cluster_spec_worker_counts(workers, gpus, expected):
    cluster_class, kwargs = cluster_module.local_cluster_spec(workers, gpus, {"PREFECT_API_URL": API_URL}, cpus=3)
    assert cluster_class == ("dask_cuda.LocalCUDACluster" if gpus else "distributed.LocalCluster")
    assert kwargs["n_workers"] == expected
    assert kwargs["threads_per_worker"] == 1
    assert kwargs["worker_env"] == {"PREFECT_API_URL": API_URL}
    assert kwargs["worker_class"] is cluster_module.EnvNanny
    assert "env" not in kwargs  # dask-cuda would replace it


def test_without_dask_cuda_gpus_fall_back_to_cpu_workers(prefect_api_only_in_settings, monkeypatch):
    monkeypatch.setattr(cluster_module, "visible_gpus", lambda: 2)
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # import raises ImportError
    runner = dask_task_runner(workers=3)
    assert runner.resolved_cluster_class is LocalCluster and runner.cluster_kwargs["n_workers"] == 3


@pytest.mark.parametrize(("restricted", "expected"), [(None, 4), ("1,3", 2), ("2", 1), ("", 0), ("-1", 0)])
def test_visible_gpus_honours_cuda_visible_devices(monkeypatch, tmp_path, restricted, expected):
    """The worker cap counts the GPUs LocalCUDACluster will see, not every GPU of the machine."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + "".join(f"echo 'GPU {i}: NVIDIA H100 (UUID: GPU-{i})'\n" for i in range(4)))
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    if restricted is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", restricted)
    assert cluster_module.visible_gpus() == expected
