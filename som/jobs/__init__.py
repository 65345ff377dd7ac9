"""Slurm jobs and job arrays through submitit, with the same entry point run locally.

Training and evaluation hand a picklable callable to `submit` / `submit_array`; submitit
pickles it into a submission folder, `sbatch` runs it on the cluster (or a local process runs
it when there is no Slurm) and `wait` returns its results, streaming state changes and log
lines to callbacks, or raises `JobFailed` with the log tail and what to do. The package
re-exports one module per job: `spec` (JobSpec and the sbatch options it becomes), `submit`
(executors, the inherited environment, cancelling) and `wait` (the wait/follow loop).

What a real cluster needs (ask the admins, or see `sinfo -s`, `sacctmgr show assoc
user=$USER`, `scontrol show node <n>`; infra/slurm/README.md has a full template):

    JobSpec(executor="slurm", nodes=2, tasks_per_node=8, gpus_per_node=8, cpus_per_task=10,
            mem_gb=0,                      # 0: all of each node's memory
            timeout_min=24 * 60, partition="gpu", account="my-project", qos="normal",
            constraint="a100&80gb", signal_delay_s=120,   # time to checkpoint before the end
            setup=("module load cuda/12.4", "source /shared/venvs/somflow/bin/activate"),
            extra={"exclusive": True, "mail_type": "END,FAIL"})

- The submission folder must be on a file system every node sees; `sacct` must work for
  your user (submitit reads job states from accounting).
- Jobs get the submitting process's environment (sbatch's default `--export=ALL`): S3
  settings (AWS_*, SOMFLOW_STORAGE_CONFIG), SLURM_CONF, PREFECT_* ... Variables that must
  reach the job but live only in memory (a Prefect settings context) go through
  `submission_environment(extra)`; values never enter the sbatch script.
- Jobs whose callable is a `submitit.helpers.Checkpointable` are requeued on preemption and
  before the time limit, up to `max_requeues` times; a TIMEOUT after that is a failure.
"""

from som.jobs.spec import JobSpec, slurm_parameters
from som.jobs.submit import (
    cancel,
    jobs_folder,
    make_executor,
    resolve_executor,
    slurm_available,
    slurm_executor,
    submission_environment,
    submit,
    submit_array,
)
from som.jobs.wait import JobFailed, log_tail, wait

__all__ = [
    "JobFailed",
    "JobSpec",
    "cancel",
    "jobs_folder",
    "log_tail",
    "make_executor",
    "resolve_executor",
    "slurm_available",
    "slurm_executor",
    "slurm_parameters",
    "submission_environment",
    "submit",
    "submit_array",
    "wait",
]
