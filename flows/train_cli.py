"""`som train`: run the training flow (flows/train.py) from the command line."""

from __future__ import annotations

import click

from som.cli import parse_key_values


@click.command("train", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", required=True, help="LLaVA JSON to train on (path or s3:// URL), e.g. a `som data build` mix.json.")
@click.option("--run-dir", required=True, help="Run folder (shared file system path or s3:// URL): checkpoints, "
              "metrics, summary and the exported model go here. Reuse it to resume or to get the cached result.")
@click.option("--image-root", default=None, help="Folder or URL the records' image paths are relative to.")
@click.option("--config", "config", default=None, type=click.Path(exists=True, dir_okay=False),
              help="YAML training config (stage: pretrain|finetune, model, batch sizes, lr, ...).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Override one config field (repeatable), e.g. --set max_steps=100 --set lora.enabled=true.")
@click.option("--nodes", type=int, default=1, show_default=True, help="Machines in the job.")
@click.option("--tasks-per-node", type=int, default=1, show_default=True,
              help="Training processes per machine: one per GPU (without GPUs, per CPU slot).")
@click.option("--gpus-per-node", type=int, default=0, show_default=True, help="GPUs to reserve on each machine.")
@click.option("--cpus-per-task", type=int, default=None, help="CPUs per process (data loading).")
@click.option("--mem-gb", type=float, default=None, help="Memory per machine in GB (0: all of it).")
@click.option("--partition", default=None, help="Slurm partition (sbatch --partition).")
@click.option("--account", default=None, help="Slurm account to charge (sbatch --account).")
@click.option("--qos", default=None, help="Slurm quality of service (sbatch --qos).")
@click.option("--constraint", default=None, help="Slurm node features, e.g. 'a100&80gb' (sbatch --constraint).")
@click.option("--time", "time_min", type=int, default=None, help="Time limit in minutes (default 60); the job "
              "checkpoints and requeues itself before the limit, up to 3 times.")
@click.option("--executor", type=click.Choice(["auto", "slurm", "local"]), default="auto", show_default=True,
              help="slurm: sbatch; local: processes on this machine (one node); auto: Slurm when it answers.")
@click.option("--retries", type=int, default=2, show_default=True,
              help="Resubmissions after a failed job (each resumes from the latest checkpoint).")
def train(data, run_dir, image_root, config, settings, nodes, tasks_per_node, gpus_per_node, cpus_per_task, mem_gb,
          partition, account, qos, constraint, time_min, executor, retries) -> None:
    """Train a LLaVA-style model on --data into --run-dir as one Slurm job; prints the export.

    \b
    Examples:
      # a quick local try (no Slurm needed)
      som train --data mix.json --image-root images/ --config finetune.yaml \\
          --run-dir runs/try --set max_steps=20 --executor local
      # 2 nodes x 8 GPUs on a cluster
      som train --data s3://som/datasets/v3/mix.json --image-root s3://som/images \\
          --config finetune.yaml --run-dir /shared/runs/som-7b --nodes 2 \\
          --tasks-per-node 8 --gpus-per-node 8 --partition gpu --account my-project --time 1440

    The run's state and log stream into the Prefect flow run (PREFECT_API_URL, else a local
    server for the run). Running the same command again returns the cached export without a
    job; after a failure or Ctrl-C it resumes from the run folder's last checkpoint. The
    config's keys are `som.train.config.TrainConfig` fields; --data and --image-root win
    over the config's data_url and image_root.
    """
    from flows.prefect_api import prefect_api
    from flows.train import train_llava

    slurm = {"cpus_per_task": cpus_per_task, "mem_gb": mem_gb, "partition": partition, "account": account,
             "qos": qos, "constraint": constraint, "timeout_min": time_min}
    with prefect_api():
        state = train_llava(data=data, run_dir=run_dir, image_root=image_root, config=config,
                            overrides=parse_key_values(settings) or None, nodes=nodes, tasks_per_node=tasks_per_node,
                            gpus_per_node=gpus_per_node, slurm={k: v for k, v in slurm.items() if v is not None},
                            executor=executor, retries=retries, return_state=True)
    if not state.is_completed():
        raise click.ClickException(f"training {state.name.lower()}: {state.message}")
    click.echo(state.result())
