"""`som train`: run the training flow (flows/train.py) from the command line."""

from __future__ import annotations

import click

from som.cli import parse_key_values
from som.job_options import job_fields, job_options


@click.command("train", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data",
    default=None,
    help="(required) LLaVA JSON to train on (path or s3:// URL), e.g. a `som data build` mix.json.",
)
@click.option(
    "--run-dir",
    default=None,
    help="(required) Run folder (shared file system path or s3:// URL): checkpoints, "
    "metrics, summary and the exported model go here. Reuse it to resume or to get the cached result.",
)
@click.option("--image-root", default=None, help="Folder or URL the records' image paths are relative to.")
@click.option(
    "--config",
    "config",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="YAML training config (stage: pretrain|finetune, model, batch sizes, lr, ...).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one config field (repeatable), e.g. --set max_steps=100 --set lora.enabled=true.",
)
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True, help="Machines in the job.")
@click.option(
    "--tasks-per-node",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Training processes per machine: one per GPU (without GPUs, per CPU slot).",
)
@job_options(gpus_flag="--gpus-per-node", gpus_help="GPUs to reserve on each machine (one task per GPU).")
@click.option(
    "--retries",
    type=int,
    default=2,
    show_default=True,
    help="Resubmissions after a failed job (each resumes from the latest checkpoint).",
)
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the resolved training config (stage preset, --config, --set, --data) as YAML and exit.",
)
def train(
    data,
    run_dir,
    image_root,
    config,
    settings,
    nodes,
    tasks_per_node,
    executor,
    partition,
    account,
    qos,
    constraint,
    timeout_min,
    cpus_per_task,
    mem_gb,
    gpus_per_node,
    retries,
    print_config,
) -> None:
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
    over the config's data_url and image_root. `--print-config` shows what a run would use.
    """
    if print_config:
        _print_config(config, settings, data, image_root)
        return
    missing = [flag for flag, value in (("--data", data), ("--run-dir", run_dir)) if not value]
    if missing:
        raise click.UsageError(f"missing option(s) {', '.join(missing)}")
    from flows.prefect_api import prefect_api
    from flows.train import train_llava

    slurm = job_fields(
        cpus_per_task=cpus_per_task,
        mem_gb=mem_gb,
        partition=partition,
        account=account,
        qos=qos,
        constraint=constraint,
        timeout_min=timeout_min,
    )
    with prefect_api():
        state = train_llava(
            data=data,
            run_dir=run_dir,
            image_root=image_root,
            config=config,
            overrides=parse_key_values(settings) or None,
            nodes=nodes,
            tasks_per_node=tasks_per_node,
            gpus_per_node=gpus_per_node or 0,
            slurm=slurm,
            executor=executor,
            retries=retries,
            return_state=True,
        )
    if not state.is_completed():
        raise click.ClickException(f"training {state.name.lower()}: {state.message}")
    click.echo(state.result())


def _print_config(config: str | None, settings: tuple[str, ...], data: str | None, image_root: str | None) -> None:
    """The config a run would train with, as YAML (the same resolution as the flow's)."""
    import yaml

    from som.train.config import ConfigError, load_config

    # without --data the printout shows where it goes; every other key is checked as in a run
    overrides = {
        **parse_key_values(settings),
        "data_url": data or "<--data>",
        **({"image_root": image_root} if image_root else {}),
    }
    try:
        resolved = load_config(config, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(yaml.safe_dump(resolved.to_dict(), sort_keys=False), nl=False)
