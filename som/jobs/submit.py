"""Submitting jobs and job arrays through submitit: picking Slurm or local processes, the
submission folder, the environment a job inherits, and cancelling.

Jobs get the submitting process's environment (sbatch's default `--export=ALL`), minus an
enclosing Slurm job's allocation variables (`submission_environment`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit

from som import storage
from som.jobs.spec import JobSpec, slurm_parameters
from som.jobs.wait import local_cancel_marker

log = logging.getLogger(__name__)

JOBS_DIR_ENV = "SOMFLOW_JOBS_DIR"
_ENV_LOCK = threading.RLock()  # submit() nests inside a caller's submission_environment
# Variables of an enclosing Slurm job that must not leak into a job submitted from inside it.
_INHERITED_PREFIXES = ("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SUBMITIT_")
_KEEP = frozenset({"SLURM_CONF"})
_DISTRIBUTED = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def jobs_folder(run_dir: str, *parts: str) -> Path:
    """submitit's folder for a run: `<run_dir>/<parts>` when the run folder is a path (it must
    be on a file system every node sees), else under $SOMFLOW_JOBS_DIR (default
    ~/.cache/somflow/jobs) in a folder named after the run's URL."""
    if storage.protocol_of(run_dir) in storage.LOCAL_PROTOCOLS:
        return Path(storage.resolve(run_dir)[1]).joinpath(*parts)
    slug = "".join(c if c.isalnum() else "-" for c in run_dir.lower()).strip("-")
    base = Path(os.environ.get(JOBS_DIR_ENV) or Path.home() / ".cache" / "somflow" / "jobs")
    return base.joinpath(slug, *parts)


def slurm_available(timeout_s: float = 10.0) -> bool:
    """True when `sbatch` is on PATH and a Slurm controller answers (`scontrol ping`)."""
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():  # scontrol would retry reading it for 60 s
        log.warning("SLURM_CONF=%s does not exist: treating Slurm as unavailable", conf)
        return False
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return ping.returncode == 0 and "UP" in ping.stdout


def resolve_executor(spec: JobSpec) -> str:
    """ "slurm" or "local" for this spec on this machine; "slurm" without a cluster is an error."""
    if spec.executor == "local":
        return "local"
    if spec.executor == "slurm":
        if not slurm_available():
            raise RuntimeError(
                "executor slurm: no Slurm controller answers `scontrol ping` (is sbatch on PATH "
                f"and SLURM_CONF={os.environ.get('SLURM_CONF', '(unset)')} right?); start the "
                "cluster, or use executor local / auto"
            )
        return "slurm"
    chosen = "slurm" if slurm_available() else "local"
    log.info(
        "executor auto: %s",
        "Slurm answers, submitting with sbatch"
        if chosen == "slurm"
        else "no Slurm controller answers, running jobs as local processes",
    )
    return chosen


def slurm_executor(spec: JobSpec, folder: str | Path, name: str) -> submitit.AutoExecutor:
    """The Slurm executor for `spec`, built without asking the cluster (its sbatch script can be
    inspected anywhere srun is installed)."""
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=spec.max_requeues)
    executor.update_parameters(**slurm_parameters(spec, name))
    return executor


def make_executor(spec: JobSpec, folder: str | Path, name: str) -> submitit.Executor:
    """A submitit executor for `spec` writing its pickles and logs under `folder`."""
    if resolve_executor(spec) == "slurm":
        return slurm_executor(spec, folder, name)
    if spec.nodes > 1:
        raise ValueError(
            f"job {name}: the local executor runs on this one machine, but {spec.nodes} nodes were "
            "asked for; use nodes=1 (tasks_per_node for several processes) or a Slurm cluster"
        )
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=spec.max_requeues)
    executor.update_parameters(
        timeout_min=spec.timeout_min,
        tasks_per_node=spec.tasks_per_node,
        gpus_per_node=spec.gpus_per_node,
        signal_delay_s=spec.signal_delay_s,
        setup=list(spec.setup),
    )
    return executor


@contextlib.contextmanager
def submission_environment(extra: Mapping[str, str] | None = None) -> Iterator[None]:
    """Submit with `extra` variables set and an enclosing job's SLURM_*/rank variables hidden.

    Jobs inherit the environment at submission; a job submitted from inside another Slurm
    job would otherwise inherit its allocation's variables (wrong GPUs, ranks).
    """
    with _ENV_LOCK:
        hidden = {
            k: os.environ.pop(k)
            for k in list(os.environ)
            if (k.startswith(_INHERITED_PREFIXES) and k not in _KEEP) or k in _DISTRIBUTED
        }
        replaced = {k: os.environ.get(k) for k in (extra or {})}
        os.environ.update(extra or {})
        try:
            yield
        finally:
            for key, value in replaced.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            os.environ.update(hidden)


def submit(
    spec: JobSpec, folder: str | Path, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> submitit.Job:
    """Submit `fn(*args, **kwargs)` as one job (`nodes` x `tasks_per_node` tasks each run it)."""
    executor = make_executor(spec, folder, name)
    with submission_environment():
        job = executor.submit(fn, *args, **kwargs)
    log.info("submitted %s as job %s (%s, folder %s)", name, job.job_id, type(job).__name__, folder)
    return job


def submit_array(
    spec: JobSpec, folder: str | Path, name: str, fn: Callable[..., Any], arg_lists: Sequence[Sequence[Any]]
) -> list[submitit.Job]:
    """Submit `fn(*args)` for each args in `arg_lists` as one Slurm array (jobs in that order)."""
    if not arg_lists:
        return []
    executor = make_executor(spec, folder, name)
    with submission_environment():
        with executor.batch():
            jobs = [executor.submit(fn, *args) for args in arg_lists]
    log.info(
        "submitted %s as %d array jobs (%s .. %s, folder %s)", name, len(jobs), jobs[0].job_id, jobs[-1].job_id, folder
    )
    return jobs


def cancel(jobs: Sequence[submitit.Job]) -> None:
    """Cancel jobs that may still run; a whole array with one scancel. Never raises for jobs
    that already ended."""
    slurm_ids = sorted({job.job_id.split("_")[0] for job in jobs if isinstance(job, submitit.SlurmJob)})
    if slurm_ids:
        done = subprocess.run(["scancel", *slurm_ids], capture_output=True, text=True, timeout=60)
        log.warning(
            "cancelled Slurm job(s) %s%s",
            " ".join(slurm_ids),
            f" (scancel: {done.stderr.strip()})" if done.returncode else "",
        )
    for job in jobs:
        if isinstance(job, submitit.LocalJob) and job.state == "RUNNING":
            local_cancel_marker(job).touch()
            job.cancel(check=False)
            log.warning("cancelled local job %s", job.job_id)
