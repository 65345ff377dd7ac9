"""What a job asks of the scheduler: `JobSpec` (resources, partition, requeues) and the sbatch
options it becomes.

Why apart from submitting and waiting: configs, CLIs and plans build and check specs, and tests
read the sbatch text they give, with no cluster and no job in sight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

EXECUTORS = ("auto", "slurm", "local")


@dataclass(frozen=True)
class JobSpec:
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

    executor: str = "auto"
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = 64
    signal_delay_s: int = 90
    max_requeues: int = 3
    setup: tuple[str, ...] = ()
    extra: Mapping[str, str | bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"JobSpec executor {self.executor!r}: expected one of {', '.join(EXECUTORS)}")
        for name in ("nodes", "tasks_per_node", "cpus_per_task", "timeout_min", "array_parallelism"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"JobSpec {name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("gpus_per_node", "signal_delay_s", "max_requeues"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"JobSpec {name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.mem_gb is not None and self.mem_gb < 0:
            raise ValueError(f"JobSpec mem_gb must be >= 0 (0: the whole node), got {self.mem_gb!r}")
        object.__setattr__(self, "setup", tuple(self.setup))
        object.__setattr__(self, "extra", {str(k): v if isinstance(v, bool) else str(v)
                                           for k, v in dict(self.extra).items()})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> JobSpec:
        """A spec from config values (YAML, CLI); unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown job option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in values.items() if v is not None})


def slurm_parameters(spec: JobSpec, name: str) -> dict[str, Any]:
    """submitit AutoExecutor parameters (sbatch options) for `spec`."""
    params: dict[str, Any] = {
        "name": name, "nodes": spec.nodes, "tasks_per_node": spec.tasks_per_node,
        "cpus_per_task": spec.cpus_per_task, "timeout_min": spec.timeout_min,
        "slurm_array_parallelism": spec.array_parallelism, "slurm_signal_delay_s": spec.signal_delay_s,
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
