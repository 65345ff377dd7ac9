"""What a training run is, decided before anything is submitted (no Prefect, no torch here).

The som-train flow (flows/train.py) caches a run on (data content hash, config fingerprint,
trainer code version) and submits one job with the resources computed here; keeping these
choices out of the flow lets them be unit-tested and reused (the pipeline names runs with them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from som import storage
from som.code_version import source_hash
from som.jobs import JobSpec

# Job options that have their own flow arguments (and CLI flags).
OWN_ARGUMENTS = ("executor", "nodes", "tasks_per_node", "gpus_per_node")


def code_version() -> str:
    """A hash of the trainer's sources: a changed trainer trains again."""
    return source_hash(Path(__file__).parent.rglob("*.py"))


def absolute(url: str) -> str:
    """Local paths made absolute; object-store URLs unchanged."""
    if storage.protocol_of(url) in storage.LOCAL_PROTOCOLS:
        return str(Path(storage.resolve(url)[1]).absolute())
    return url


def training_cache_key(data_sha256: str, config_fingerprint: str, code: str) -> str:
    """Same data bytes, same weight-affecting config, same trainer code: same model."""
    blob = f"{data_sha256}\0{config_fingerprint}\0{code}".encode()
    return "som-train-" + hashlib.sha256(blob).hexdigest()


def job_spec(
    executor: str, nodes: int, tasks_per_node: int, gpus_per_node: int, slurm: dict[str, Any] | None
) -> JobSpec:
    """The job's resources: the flow's own arguments plus `slurm` (other `JobSpec` fields)."""
    clashing = sorted(set(slurm or {}) & set(OWN_ARGUMENTS))
    if clashing:
        raise ValueError(f"slurm: set {', '.join(clashing)} with the flow's own argument(s), not in slurm")
    return JobSpec.from_mapping(
        {
            **(slurm or {}),
            "executor": executor,
            "nodes": nodes,
            "tasks_per_node": tasks_per_node,
            "gpus_per_node": gpus_per_node,
        }
    )


def stage_name(config: str | dict | None, overrides: dict | None) -> str:
    """The stage named by the overrides or config (for the run name; the config decides)."""
    if overrides and "stage" in overrides:
        return str(overrides["stage"])
    if isinstance(config, dict):
        return str(config.get("stage", "finetune"))
    if config:
        import yaml

        try:
            return str((yaml.safe_load(Path(config).read_text()) or {}).get("stage", "finetune"))
        except (OSError, yaml.YAMLError, AttributeError):
            return "?"
    return "finetune"
