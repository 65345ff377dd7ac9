"""`som dataset ...`: run the dataset flows from the command line."""

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
@click.option("--segmenter", default=None, help="sam | slic | felzenszwalb | coco | auto (default: the dataset's recorded one, or auto).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Segmenter parameter (repeatable).")
@click.option("--coco", default=None, help="COCO instances JSON (path or URL): only its images, under SOURCE as image root.")
@click.option("--shard-size", type=int, default=200, show_default=True, help="Images per Prefect task.")
@click.option("--workers", type=int, default=None, help="Local Dask worker processes (default: one per GPU, else per core).")
@click.option("--scheduler", default=None, help="Address of a running Dask scheduler (e.g. a dask-jobqueue SLURMCluster).")
@click.option("--short-side", type=int, default=None, help="Marking size (default 640 for a new dataset).")
@click.option("--label-mode", type=click.Choice(["number", "alpha"]), default=None)
@click.option("--modes", default=None, help="Comma-separated draw modes: mark, mask, box, contour.")
@click.option("--format", "image_format", type=click.Choice(["jpg", "png"]), default=None)
@click.option("--full", is_flag=True, help="Re-check every image, not only those missing from the latest manifest.")
def build(source, dest, segmenter, params, coco, shard_size, workers, scheduler, short_side, label_mode, modes, image_format, full) -> None:
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


@click.group("data", context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Build "list items one by one" instruction data (LLaVA JSON) from SoM datasets."""


@data.command("build")
@click.argument("dest")
@click.option("--coco", default=None, help="COCO instances JSON: names tags by mask IoU with its ground truth.")
@click.option("--base-mix", default=None, help="Base LLaVA instruction JSON to mix into (writes mix.json).")
@click.option("--image-root", default="", help="Record image paths are relative to this (default: DEST).")
@click.option("--base-image-root", default=None, help="Where the base mix's image paths resolve (default: --image-root).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--iou-threshold", type=float, default=0.5, show_default=True)
@click.option("--keep-unlabeled", is_flag=True, help='List unnamed tags as "unlabeled object".')
@click.option("--fill-unlabeled", default=None, help="Comma-separated namers for tags still unnamed, in order: describer, clip.")
@click.option("--describer-model", default=None, help="Chat model for the describer (default $SOMFLOW_CHAT_MODEL).")
@click.option("--describer-url", default=None, help="OpenAI-compatible base URL (default $SOMFLOW_CHAT_BASE_URL); key from $OPENAI_API_KEY.")
@click.option("--describer-secret", default=None, help="Prefect Secret block holding the describer's API key.")
@click.option("--clip-model", default="openai/clip-vit-large-patch14", show_default=True, help="CLIP hub id or local folder.")
@click.option("--clip-labels", default=None, help="Label vocabulary file for CLIP (default: COCO's 80 categories).")
def data_build(
    dest, coco, base_mix, image_root, base_image_root, seed, iou_threshold, keep_unlabeled,
    fill_unlabeled, describer_model, describer_url, describer_secret, clip_model, clip_labels,
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
            dest=dest, coco=coco, base_mix=base_mix, image_root=image_root or "", base_image_root=base_image_root,
            seed=seed, iou_threshold=iou_threshold, keep_unlabeled=keep_unlabeled,
            fill_unlabeled=[n.strip() for n in fill_unlabeled.split(",")] if fill_unlabeled else None,
            describer_model=describer_model, describer_base_url=describer_url, describer_secret=describer_secret,
            clip_model=clip_model, clip_labels=clip_labels,
            return_state=True,
        )
    if not state.is_completed():
        raise click.ClickException(state.message or state.name)
    click.echo(state.message or state.name)


@data.command("mix")
@click.option("--base", "base", required=True, help="Base LLaVA instruction JSON (e.g. llava_v1_5_mix665k.json).")
@click.option("--add", "added", multiple=True, required=True, help="Instruction JSON to mix in (repeatable), e.g. som_listing.json.")
@click.option("--out", "output", required=True, help="Output JSON (path or URL).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--image-root", default=None, help="Relative image paths resolve under this (checked to exist).")
@click.option("--prefix", default=None, help="Prefix (e.g. som-) for added records whose ids collide; without it a collision is an error.")
@click.option("--max-missing", type=int, default=0, show_default=True, help="Fail when more records than this reference missing images.")
def data_mix(base, added, output, seed, image_root, prefix, max_missing) -> None:
    """Shuffle a base instruction set and SoM data into one LLaVA JSON, in bounded memory.

    \b
    Example:
      som data mix --base llava_v1_5_mix665k.json --add som_listing.json --add som_qa.json \\
          --out mix.json --seed 0 --image-root /data/llava-images
    Ids stay unique, every image is checked, and a card (counts per source) is printed.
    """
    from som.data.mixing import MixConfig, MixError, MixSource, mix

    sources = [MixSource(base, kind="base")] + [MixSource(url, kind="som", id_prefix=prefix) for url in added]
    try:
        result = mix(sources, output, MixConfig(seed=seed, image_root=image_root, max_missing=max_missing))
    except MixError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.card_markdown())


@data.command("check")
@click.argument("file")
@click.option("--image-root", default=None, help="Relative image paths resolve under this (checked to exist).")
@click.option("--tokenizer", default=None, help="Tokenizer (hub id or local folder) for token-length statistics.")
@click.option("--max-length", type=int, default=2048, show_default=True, help="Token length reported as too long.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def data_check(file, image_root, tokenizer, max_length, as_json) -> None:
    """Validate a LLaVA instruction JSON: malformed entries, duplicate ids, empty answers,
    <image> misuse, missing images, and token lengths with a given tokenizer.

    Exits 1 when any problem is found (too-long records are reported, not failed).
    """
    import json

    from som.data.check import check_file, load_tokenizer

    try:
        report = check_file(file, image_root=image_root, tokenizer=load_tokenizer(tokenizer) if tokenizer else None, max_length=max_length)
    except FileNotFoundError as exc:
        raise click.ClickException(f"cannot read {file}: {exc}") from None
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else "\n".join(report.lines()))
    if not report.ok:
        raise SystemExit(1)
