"""Dask workers for the dataset flow as Slurm jobs (dask-jobqueue), for many nodes.

    pip install 'somflow[slurm]'
    python infra/dask/slurm_cluster.py --jobs 8 --partition gpu --gpus-per-job 1 --account proj
    # prints the scheduler address; in another shell:
    som dataset build s3://raw/coco s3://som/coco --scheduler tcp://HOST:PORT

The script runs the Dask scheduler itself and keeps the worker jobs alive until Ctrl-C
(then cancels them). Each job runs one worker process per GPU (or per `--processes`).
Slurm passes the submitting environment to the jobs (sbatch's default --export=ALL), so
export AWS_* (or SOMFLOW_STORAGE_CONFIG) and PREFECT_API_URL before starting it; nothing
secret is written into the job script. `--print-script` shows the script without submitting.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import threading

log = logging.getLogger("slurm_cluster")


def cluster_kwargs(args: argparse.Namespace) -> dict:
    """SLURMCluster arguments: one job = one node's worth of workers."""
    directives = [f"--gpus-per-node={args.gpus_per_job}"] if args.gpus_per_job else []
    if args.constraint:
        directives.append(f"--constraint={args.constraint}")
    if args.qos:
        directives.append(f"--qos={args.qos}")
    processes = args.processes or max(args.gpus_per_job, 1)
    prologue = [f"source {shlex.quote(os.path.join(args.venv, 'bin', 'activate'))}"] if args.venv else []
    kwargs = {
        "cores": args.cores,
        "processes": processes,
        "memory": args.memory,
        "walltime": args.walltime,
        "queue": args.partition,
        "account": args.account,
        "job_extra_directives": directives,
        "job_script_prologue": prologue,
        "worker_extra_args": ["--nthreads", "1"],
        "scheduler_options": {"host": args.scheduler_host} if args.scheduler_host else {},
    }
    if args.gpus_per_job:
        # dask-jobqueue starts `python -m <worker_command> ADDRESS --name .. --nthreads ..
        # --memory-limit .. --death-timeout ..`: it needs a module, and dask-cuda's console
        # script `dask-cuda-worker` is not one. dask_cuda.cli runs the same `worker` command
        # when started with -m; it spawns one worker process per GPU the job sees (pinned by
        # CUDA_VISIBLE_DEVICES). With a worker_command other than distributed's own,
        # dask-jobqueue adds no --nworkers/--nanny, which dask-cuda would reject.
        kwargs["worker_command"] = GPU_WORKER_MODULE
        kwargs["processes"] = 1
        # Each of the job's per-GPU workers takes --memory-limit for itself; dask-jobqueue's
        # value is the whole job's, so split it (the last --memory-limit on the line wins).
        kwargs["worker_extra_args"] = [
            *kwargs["worker_extra_args"],
            "--memory-limit",
            per_gpu_memory(args.memory, args.gpus_per_job),
        ]
    return {k: v for k, v in kwargs.items() if v not in (None, [], {})}


GPU_WORKER_MODULE = "dask_cuda.cli"


def per_gpu_memory(job_memory: str, gpus: int) -> str:
    """The host-memory limit of one of a job's `gpus` workers, written the way dask-jobqueue
    writes one worker process's share (e.g. "7.45GiB")."""
    from dask.utils import format_bytes, parse_bytes

    return format_bytes(parse_bytes(job_memory) / max(gpus, 1)).replace(" ", "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="Slurm jobs (nodes) to keep running")
    parser.add_argument("--cores", type=int, default=8, help="CPU cores per job")
    parser.add_argument(
        "--processes", type=int, default=0, help="worker processes per job (default: GPUs per job, else 1)"
    )
    parser.add_argument("--memory", default="32GB", help="memory per job")
    parser.add_argument("--walltime", default="04:00:00")
    parser.add_argument("--partition", help="sbatch --partition")
    parser.add_argument("--account", help="sbatch --account")
    parser.add_argument("--qos", help="sbatch --qos")
    parser.add_argument("--constraint", help="sbatch --constraint")
    parser.add_argument(
        "--gpus-per-job",
        type=int,
        default=0,
        help="GPUs per job; each job runs dask-cuda's worker (python -m dask_cuda.cli), one process per GPU",
    )
    parser.add_argument("--venv", help="virtualenv to activate in each job (default: the job inherits PATH)")
    parser.add_argument("--scheduler-host", help="address workers use to reach this scheduler (default: this host)")
    parser.add_argument("--print-script", action="store_true", help="print the sbatch script and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(**cluster_kwargs(args))
    if args.print_script:
        print(cluster.job_script())
        cluster.close()
        return
    cluster.scale(jobs=args.jobs)
    print(
        f"scheduler: {cluster.scheduler_address}  (som dataset build ... --scheduler {cluster.scheduler_address})",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    log.info("cancelling worker jobs")
    cluster.close()


if __name__ == "__main__":
    main()
