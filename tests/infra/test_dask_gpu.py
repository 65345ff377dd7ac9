"""GPU Dask workers as Slurm jobs (issue 16.2): the worker command dask-jobqueue writes into the
job script must start. It runs `python -m <worker_command> ADDRESS <its options>`, so the
command must be a runnable module and dask-cuda's worker must accept every option on the line.
No GPU here: the line is parsed by dask-cuda's own click command and started with --help."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "dask" / "slurm_cluster.py"
GPU_ARGS = ("--gpus-per-job", "4", "--cores", "32", "--memory", "256GB", "--partition", "gpu")


def slurm_cluster() -> ModuleType:
    spec = importlib.util.spec_from_file_location("slurm_cluster_under_test", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def worker_argv(*args: str) -> tuple[list[str], str]:
    """The worker command line of the rendered job script, split, and the scheduler address."""
    from dask_jobqueue import SLURMCluster

    module = slurm_cluster()
    with SLURMCluster(**module.cluster_kwargs(module.parse_args(list(args)))) as cluster:
        script, address = cluster.job_script(), cluster.scheduler_address
    lines = [line for line in script.splitlines() if " -m " in line]
    assert len(lines) == 1, script
    return shlex.split(lines[0]), address


def test_gpu_worker_command_is_a_runnable_module():
    """`python -m dask-cuda-worker` cannot start: a console script's name is not a module."""
    argv, address = worker_argv(*GPU_ARGS)
    assert argv[1] == "-m" and argv[3] == address
    module = argv[2]
    assert all(part.isidentifier() for part in module.split(".")), module
    assert module == "dask_cuda.cli"


def test_gpu_worker_memory_limit_is_split_over_the_gpus():
    """Each per-GPU worker gets its share of the job's memory, not the whole job's."""
    argv, _ = worker_argv(*GPU_ARGS)
    limits = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--memory-limit"]
    assert limits[-1] == "59.60GiB"  # 256 GB / 4; the last one on the line wins
    assert "--nworkers" not in argv and "--nanny" not in argv and "--no-nanny" not in argv


def test_dask_cuda_worker_accepts_the_whole_command_line():
    """dask-cuda's own `worker` command parses every option dask-jobqueue wrote (an unknown one
    raises), with the values the script meant; then the module itself starts with --help."""
    import dask_cuda.cli

    argv, address = worker_argv(*GPU_ARGS)
    assert argv[1:3] == ["-m", "dask_cuda.cli"]
    context = dask_cuda.cli.worker.make_context("dask_cuda.cli", list(argv[3:]))
    params = context.params
    assert params["scheduler"] == address
    assert params["nthreads"] == 1
    assert params["memory_limit"] == "59.60GiB"
    assert params["death_timeout"] == "60"
    assert params["name"] == "dummy-name"
    assert params["preload_argv"] == ()

    done = subprocess.run([sys.executable, *argv[1:], "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--rmm-pool-size" in done.stdout  # dask-cuda's worker, not distributed's


def test_cpu_worker_command_is_unchanged():
    """CPU jobs keep distributed's own worker with one process per --processes."""
    argv, _ = worker_argv("--cores", "16", "--processes", "8", "--memory", "64GB")
    assert argv[1:3] == ["-m", "distributed.cli.dask_worker"]
    assert "--nworkers" in argv
