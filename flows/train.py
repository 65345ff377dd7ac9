"""Train a LLaVA-style model as one Slurm job (or local processes) and return its export.

The flow resolves the training config (stage preset, YAML, overrides, then the data given
here), submits `som.train.entry.TrainJob` through submitit with one task per GPU (per CPU slot
without GPUs), streams the job's state and log into the flow run, and publishes a summary of
the run. The job is cached on (data content hash, config fingerprint, trainer code version):
calling the flow again with the same inputs and run folder returns the export without
submitting anything. Interrupted jobs resume from the run folder's checkpoints: Slurm
requeues them on preemption and time-outs, Prefect retries them after failures.

    som train --data runs/data/mix.json --image-root /data/images --config finetune.yaml \\
        --run-dir /shared/runs/som-7b --nodes 2 --tasks-per-node 8 --gpus-per-node 8 \\
        --partition gpu --account my-project --time 1440
    python -m flows.train DATA RUN_DIR           # the same with defaults, from Python
"""

from __future__ import annotations

import sys
import time

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Cancelled, State

from som import storage
from som.jobs import jobs_folder
from som.train.plan import absolute, code_version, job_spec, stage_name, training_cache_key
from tasks.reports import publish_train_summary
from tasks.slurm import FlowRunCancelled, run_job


def _run_name() -> str:
    params = flow_run.parameters
    run_id = str(params["run_dir"]).rstrip("/").rsplit("/", 1)[-1]
    return f"som-train {run_id} {stage_name(params.get('config'), params.get('overrides'))}"


@flow(name="som-train", flow_run_name=_run_name)
def train_llava(
    data: str,
    run_dir: str,
    image_root: str | None = None,
    config: str | dict | None = None,
    overrides: dict | None = None,
    nodes: int = 1,
    tasks_per_node: int = 1,
    gpus_per_node: int = 0,
    slurm: dict | None = None,
    executor: str = "auto",
    retries: int = 2,
) -> str | State:
    """Train on `data` into `run_dir`; returns the exported model's folder or URL.

    Arguments:
      data: the LLaVA JSON to train on (path or URL; overrides the config's data_url).
      run_dir: the run folder (path on a shared file system, or s3://...): checkpoints,
        metrics.jsonl, summary.json and the export `hf/`. Reuse it to resume or hit the cache.
      image_root: where the records' image paths resolve (overrides the config's).
      config: a YAML file or a mapping of `som.train.config.TrainConfig` fields; overrides:
        more fields on top (dotted keys such as lora.rank, values as typed on a command line).
      nodes, tasks_per_node, gpus_per_node: the job's shape, one task per GPU (with no GPUs,
        per CPU slot); the global batch stays the config's at every size.
      slurm: other `som.jobs.JobSpec` fields: partition, account, qos, constraint, timeout_min,
        cpus_per_task, mem_gb, setup, extra, max_requeues, signal_delay_s.
      executor: slurm | local | auto (Slurm when a controller answers, else local processes).
      retries: how many times a failed job is resubmitted (it resumes from its checkpoints).
    """
    from som.train.config import load_config
    from som.train.entry import TrainJob

    logger = get_run_logger()
    # Jobs may start in another directory (or on another node): paths travel absolute.
    data, run_dir = absolute(data), absolute(run_dir)
    train_config = load_config(
        config, {**(overrides or {}), "data_url": data, **({"image_root": absolute(image_root)} if image_root else {})}
    )
    spec = job_spec(executor, nodes, tasks_per_node, gpus_per_node, slurm)

    # The cache key: the data's bytes, what the config computes, and the trainer's code.
    started = time.perf_counter()
    data_sha256 = storage.sha256_of(data)
    key = training_cache_key(data_sha256, train_config.fingerprint(), code_version())
    logger.info(
        "training %s stage on %s (sha256 %s..., hashed in %.1f s), config %s, %d node(s) x %d task(s)",
        train_config.stage,
        data,
        data_sha256[:12],
        time.perf_counter() - started,
        train_config.fingerprint(),
        nodes,
        tasks_per_node,
    )

    # One job; every task runs TrainJob; rank 0's return value is the export.
    run_id = run_dir.rstrip("/").rsplit("/", 1)[-1]
    try:
        export = run_job(
            TrainJob(train_config, run_dir),
            spec=spec,
            folder=str(jobs_folder(run_dir, "slurm")),
            name=f"som-train-{run_id}",
            cache_key=key,
            retries=retries,
            result_storage=run_dir,
        )
    except FlowRunCancelled as exc:
        return Cancelled(message=str(exc))

    publish_train_summary(run_dir, export)
    logger.info("exported model: %s", export)
    return export


if __name__ == "__main__":
    train_llava(sys.argv[1], sys.argv[2])
