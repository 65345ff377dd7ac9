"""What a job asks of the scheduler: `JobSpec` (resources, partition, requeues) and the sbatch
options it becomes.

Why apart from submitting and waiting: configs, CLIs and plans build and check specs, and tests
read the sbatch text they give, with no cluster and no job in sight.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from som.settings import Settings, SettingsError, validate


class JobSpec(Settings):
    """Resources and scheduler options of a job (one per node count / partition choice).

    Arguments:
      executor: "slurm", "local" (processes on this machine, one node) or "auto" (slurm when
        `sbatch` is on PATH and a controller answers `scontrol ping`, else local).
      nodes, tasks_per_node, gpus_per_node, cpus_per_task, mem_gb (None: the partition's
        default; 0: all of the node's), timeout_min: sbatch --nodes/--ntasks-per-node/
        --gpus-per-node/--cpus-per-task/--mem/--time. One task per GPU for training.
      partition, account, qos, constraint: sbatch options of the same names (None: unset).
      array_parallelism: array elements running at once (Slurm only: the local executor
        starts every element at once, so keep local arrays to about one element per core).
      signal_delay_s: seconds before the time limit at which Checkpointable jobs are
        signalled to save and requeue; max_requeues: how many times they may be.
      setup: shell lines run before the task (module load, activating an environment).
      extra: any other sbatch option, without the leading dashes ({"mail_type": "END"};
        True gives a bare flag: {"exclusive": True}).
    """

    executor: Literal["auto", "slurm", "local"] = "auto"
    nodes: int = Field(default=1, ge=1)
    tasks_per_node: int = Field(default=1, ge=1)
    gpus_per_node: int = Field(default=0, ge=0)
    cpus_per_task: int = Field(default=1, ge=1)
    mem_gb: float | None = Field(default=None, ge=0)
    timeout_min: int = Field(default=60, ge=1)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = Field(default=64, ge=1)
    signal_delay_s: int = Field(default=90, ge=0)
    max_requeues: int = Field(default=3, ge=0)
    setup: tuple[str, ...] = ()
    extra: dict[str, str | bool] = {}

    @field_validator("extra", mode="before")
    @classmethod
    def _sbatch_text(cls, extra: Any) -> Any:
        """sbatch reads every option as text, so `{"nice": 10}` means `--nice=10`; True is a bare flag."""
        if not isinstance(extra, Mapping):
            return extra
        return {str(k): v if isinstance(v, bool) else str(v) for k, v in extra.items()}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> JobSpec:
        """A spec from config values (YAML, CLI; None: unset); errors name each key at fault."""
        try:
            return validate(cls, {k: v for k, v in values.items() if v is not None})
        except SettingsError as exc:
            raise SettingsError(f"job options: {exc}") from None


def slurm_parameters(spec: JobSpec, name: str) -> dict[str, Any]:
    """submitit AutoExecutor parameters (sbatch options) for `spec`."""
    params: dict[str, Any] = {
        "name": name,
        "nodes": spec.nodes,
        "tasks_per_node": spec.tasks_per_node,
        "cpus_per_task": spec.cpus_per_task,
        "timeout_min": spec.timeout_min,
        "slurm_array_parallelism": spec.array_parallelism,
        "slurm_signal_delay_s": spec.signal_delay_s,
    }
    if spec.gpus_per_node:
        params["gpus_per_node"] = spec.gpus_per_node
    if spec.mem_gb is not None:
        params["mem_gb"] = spec.mem_gb
    for option in ("partition", "account", "qos", "constraint"):
        if getattr(spec, option):
            params[f"slurm_{option}"] = getattr(spec, option)
    if spec.setup:
        params["slurm_setup"] = list(spec.setup)
    if spec.extra:
        params["slurm_additional_parameters"] = dict(spec.extra)
    return params
