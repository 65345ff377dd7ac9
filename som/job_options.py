"""The Slurm options every job-submitting command shares: one set of flags, one meaning.

Why: `som train`, `som eval run` and `som serve --slurm` all submit through `som.jobs.JobSpec`;
declaring the flags once keeps their names, help and checks the same everywhere (a `--time`
of 0 is refused alike, `--mem-gb 0` means the whole node alike). A command adds its own layout
flags (train: nodes and tasks; eval: shards) and passes `job_fields(...)` to the flow.

Only click is imported here (`som --help` stays instant).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

EXECUTOR_HELP = "slurm: sbatch; local: processes on this machine; auto: Slurm when a controller answers."
JOB_FIELDS = (
    "executor",
    "partition",
    "account",
    "qos",
    "constraint",
    "timeout_min",
    "cpus_per_task",
    "mem_gb",
    "gpus_per_node",
)


def job_options(
    *,
    gpus_help: str = "GPUs per task (default 0).",
    gpus_flag: str = "--gpus-per-task",
    executor: bool = True,
    time_help: str = "Time limit per job or array task, in minutes (default 60).",
    cpus_help: str = "CPUs per task (default 1).",
) -> Callable[[F], F]:
    """Add the shared Slurm flags to a click command. The command receives them as keyword
    arguments named like `JobSpec` fields (`timeout_min`, `gpus_per_node`, ...); `executor`
    False leaves out --executor (a command with its own switch, as `som serve --slurm`)."""

    def decorate(command: F) -> F:
        options = [
            *(
                [
                    click.option(
                        "--executor",
                        type=click.Choice(["auto", "slurm", "local"]),
                        default="auto",
                        show_default=True,
                        help=EXECUTOR_HELP,
                    )
                ]
                if executor
                else []
            ),
            click.option("--partition", default=None, help="Slurm partition (sbatch --partition)."),
            click.option("--account", default=None, help="Slurm account to charge (sbatch --account)."),
            click.option("--qos", default=None, help="Slurm quality of service (sbatch --qos)."),
            click.option(
                "--constraint", default=None, help="Slurm node features, e.g. 'a100&80gb' (sbatch --constraint)."
            ),
            click.option("--time", "timeout_min", type=click.IntRange(min=1), default=None, help=time_help),
            click.option("--cpus-per-task", type=click.IntRange(min=1), default=None, help=cpus_help),
            click.option(
                "--mem-gb",
                type=click.FloatRange(min=0),
                default=None,
                help="Memory per node in GB (0: all of it; default: the partition's).",
            ),
            click.option(gpus_flag, "gpus_per_node", type=click.IntRange(min=0), default=None, help=gpus_help),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def job_fields(**values: Any) -> dict[str, Any]:
    """The given shared-flag values that were set, as `JobSpec` fields (executor excluded: the
    flows take it as their own argument)."""
    unknown = sorted(set(values) - set(JOB_FIELDS))
    if unknown:
        raise ValueError(f"not job options: {', '.join(unknown)}")
    return {k: v for k, v in values.items() if v is not None and k != "executor"}
