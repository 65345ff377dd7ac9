"""The commands that run Prefect flows: `som dataset build` and `som data build`.

Registered lazily (`som.cli.LazyGroup`, `som.data.cli.DataGroup`), so `som --help` and the
Prefect-free commands never import Prefect."""

from __future__ import annotations

import click

from som.cli import parse_key_values


@click.group("dataset", context_settings={"help_option_names": ["-h", "--help"]})
def dataset() -> None:
    """Build Set-of-Mark datasets in object storage with Prefect over Dask.

    Outputs under DEST: marks/<sha256>.jpg|.json, manifests/<version>.parquet (+ _latest) and
    dataset.json (the marking config, reused by later runs). Uses PREFECT_API_URL when set,
    else starts a local Prefect server for the run. S3 credentials come from the AWS_*
    variables or $SOMFLOW_STORAGE_CONFIG (for the local SeaweedFS: source <state>/s3.env).
    """


@dataset.command("build")
@click.argument("source")
@click.argument("dest")
@click.option(
    "--segmenter",
    default=None,
    help="sam | slic | felzenszwalb | coco | auto (default: the dataset's recorded one, or auto).",
)
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Segmenter parameter (repeatable).")
@click.option(
    "--coco", default=None, help="COCO instances JSON (path or URL): only its images, under SOURCE as image root."
)
@click.option("--shard-size", type=int, default=200, show_default=True, help="Images per Prefect task.")
@click.option(
    "--workers", type=int, default=None, help="Local Dask worker processes (default: one per GPU, else per core)."
)
@click.option(
    "--scheduler", default=None, help="Address of a running Dask scheduler (e.g. a dask-jobqueue SLURMCluster)."
)
@click.option("--short-side", type=int, default=None, help="Marking size (default 640 for a new dataset).")
@click.option("--label-mode", type=click.Choice(["number", "alpha"]), default=None)
@click.option("--modes", default=None, help="Comma-separated draw modes: mark, mask, box, contour.")
@click.option("--format", "image_format", type=click.Choice(["jpg", "png"]), default=None)
@click.option("--full", is_flag=True, help="Re-check every image, not only those missing from the latest manifest.")
def build(
    source,
    dest,
    segmenter,
    params,
    coco,
    shard_size,
    workers,
    scheduler,
    short_side,
    label_mode,
    modes,
    image_format,
    full,
) -> None:
    """Mark the images under SOURCE (folder or s3:// prefix) into the dataset at DEST.

    \b
    Examples:
      som dataset build photos/ s3://somflow/datasets/photos --workers 2
      som dataset build s3://raw/val2017 s3://som/coco-val --coco s3://raw/instances_val2017.json
      som dataset build s3://raw/new s3://som/big --scheduler tcp://10.0.0.5:8786

    Only images that are new or changed since the latest manifest are marked; the closing
    line says what was done. Exits 1 when shards failed (rerun to retry just those).
    """
    from flows.prefect_api import prefect_api
    from flows.som_dataset import build_som_dataset

    with prefect_api():
        state = build_som_dataset(
            source=source,
            dest=dest,
            segmenter=segmenter,
            segmenter_params=parse_key_values(params) or None,
            coco=coco,
            shard_size=shard_size,
            workers=workers,
            scheduler=scheduler,
            short_side=short_side,
            label_mode=label_mode,
            modes=[m.strip() for m in modes.split(",")] if modes else None,
            image_format=image_format,
            incremental=not full,
            return_state=True,
        )
    if not state.is_completed():
        raise click.ClickException(state.message or state.name)
    click.echo(state.message or state.name)
    click.echo(f"outputs: {dest.rstrip('/')}/marks/  manifest: {dest.rstrip('/')}/manifests/")


@click.command("build", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("dest")
@click.option("--coco", default=None, help="COCO instances JSON: names tags by mask IoU with its ground truth.")
@click.option("--base-mix", default=None, help="Base LLaVA instruction JSON to mix into (writes mix.json).")
@click.option("--image-root", default="", help="Record image paths are relative to this (default: DEST).")
@click.option(
    "--base-image-root", default=None, help="Where the base mix's image paths resolve (default: --image-root)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--iou-threshold", type=float, default=0.5, show_default=True)
@click.option("--keep-unlabeled", is_flag=True, help='List unnamed tags as "unlabeled object".')
@click.option(
    "--fill-unlabeled", default=None, help="Comma-separated namers for tags still unnamed, in order: describer, clip."
)
@click.option("--describer-model", default=None, help="Chat model for the describer (default $SOMFLOW_CHAT_MODEL).")
@click.option(
    "--describer-url",
    default=None,
    help="OpenAI-compatible base URL (default $SOMFLOW_CHAT_BASE_URL); key from $OPENAI_API_KEY.",
)
@click.option("--describer-secret", default=None, help="Prefect Secret block holding the describer's API key.")
@click.option(
    "--clip-model", default="openai/clip-vit-large-patch14", show_default=True, help="CLIP hub id or local folder."
)
@click.option("--clip-labels", default=None, help="Label vocabulary file for CLIP (default: COCO's 80 categories).")
def data_build(
    dest,
    coco,
    base_mix,
    image_root,
    base_image_root,
    seed,
    iou_threshold,
    keep_unlabeled,
    fill_unlabeled,
    describer_model,
    describer_url,
    describer_secret,
    clip_model,
    clip_labels,
) -> None:
    """Write DEST/datasets/<version>/{som_listing,som_qa,mix}.json + card from the SoM dataset at DEST.

    \b
    Example:
      som data build s3://som/coco-train --coco s3://raw/instances_train2017.json \\
          --base-mix /data/llava_v1_5_mix665k.json --image-root /data/llava-images
    """
    from flows.instruction_data import build_instruction_dataset
    from flows.prefect_api import prefect_api

    with prefect_api():
        state = build_instruction_dataset(
            dest=dest,
            coco=coco,
            base_mix=base_mix,
            image_root=image_root or "",
            base_image_root=base_image_root,
            seed=seed,
            iou_threshold=iou_threshold,
            keep_unlabeled=keep_unlabeled,
            fill_unlabeled=[n.strip() for n in fill_unlabeled.split(",")] if fill_unlabeled else None,
            describer_model=describer_model,
            describer_base_url=describer_url,
            describer_secret=describer_secret,
            clip_model=clip_model,
            clip_labels=clip_labels,
            return_state=True,
        )
    if not state.is_completed():
        raise click.ClickException(state.message or state.name)
    click.echo(state.message or state.name)
