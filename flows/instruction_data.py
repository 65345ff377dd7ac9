"""Build a versioned "list items one by one" instruction dataset from a SoM dataset.

Reads the SoM dataset's manifest, names tags (segmenter categories, COCO ground truth),
writes listing and QA conversations in LLaVA JSON, optionally mixes them into a base LLaVA
instruction set, and leaves the dataset card as a Prefect artifact.

    som data build s3://som/coco-train --coco s3://raw/instances_train2017.json \
        --base-mix s3://raw/llava_v1_5_mix665k.json --image-root s3://raw/llava-images
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, State

from som import storage
from som.data.build import InstructionConfig, build_instruction_data
from som.data.fallback import build_fallback_namers
from som.data.listing import ListingConfig
from som.data.naming import NamingConfig
from som.data.qa import QAConfig
from tasks.credentials import use_storage_secret
from tasks.reports import artifact_key


@flow(name="som-instruction-data", flow_run_name="som-instruction-data {dest}")
def build_instruction_dataset(
    dest: str,
    coco: str | None = None,
    base_mix: str | None = None,
    image_root: str | None = "",
    base_image_root: str | None = None,
    seed: int = 0,
    iou_threshold: float = 0.5,
    keep_unlabeled: bool = False,
    manifest_version: str | None = None,
    storage_secret: str | None = None,
    fill_unlabeled: list[str] | None = None,
    describer_model: str | None = None,
    describer_base_url: str | None = None,
    describer_secret: str | None = None,
    clip_model: str = "openai/clip-vit-large-patch14",
    clip_labels: str | None = None,
) -> State:
    """Write <dest>/datasets/<version>/ from the SoM dataset at `dest`.

    Arguments:
      coco: COCO instances JSON naming tags by mask IoU (>= iou_threshold).
      base_mix: base LLaVA instruction JSON to mix into (mix.json); base_image_root: where
        its image paths resolve (default: image_root).
      image_root: record image paths are relative to it ("" = dest; None = full URLs).
      keep_unlabeled: list unnamed tags as "unlabeled object" instead of leaving them out.
      fill_unlabeled: namers tried in order for tags still unnamed: "describer" (an
        OpenAI-compatible chat model: describer_model / describer_base_url, else
        SOMFLOW_CHAT_MODEL / SOMFLOW_CHAT_BASE_URL, key OPENAI_API_KEY; answers cached under
        <dest>/_cache/describer; describer_secret names a Prefect Secret block holding the
        API key instead) and "clip" (clip_model, labels from clip_labels or COCO's 80).
    """
    if storage_secret:
        use_storage_secret(storage_secret)
    config = InstructionConfig(
        coco=coco,
        naming=NamingConfig(iou_threshold=iou_threshold),
        listing=ListingConfig(seed=seed, keep_unlabeled=keep_unlabeled),
        qa=QAConfig(seed=seed),
        image_root=image_root,
        base_mix=base_mix,
        base_image_root=base_image_root,
        seed=seed,
    )
    api_key = None
    if describer_secret:
        from prefect.blocks.system import Secret

        api_key = Secret.load(describer_secret).get()
    namers = build_fallback_namers(
        fill_unlabeled or [],
        cache_url=storage.join(dest, "_cache", "describer"),
        describer_model=describer_model,
        describer_base_url=describer_base_url,
        api_key=api_key,
        clip_model=clip_model,
        clip_labels=clip_labels,
    )
    build = build_instruction_data(dest, config, manifest_version=manifest_version, fallback_namers=namers)
    create_markdown_artifact(
        build.card_markdown(config),
        key=artifact_key(dest, "instructions"),
        description=f"instruction data {build.version}",
    )
    message = (
        f"instruction data {build.folder}: {build.listing_records} listing + {build.qa_records} QA records "
        f"from {build.images} images" + (f", mix of {build.mix.written}" if build.mix else "")
    )
    get_run_logger().info(message)
    return Completed(message=message, data=build.card(config))
