"""Build a Set-of-Mark dataset: images in object storage in, marked images + manifest out.

The flow lists the source, keeps only images that are new or changed since the latest
manifest, cuts them into shards of a few hundred, marks the shards on a Dask cluster (one
Prefect task per shard: per-image tasks would spend more time in Prefect than in marking),
then writes a new manifest version that merges the previous one. Re-running with nothing new
does nothing; re-running after a crash finds finished shards in Prefect's cache.

    som dataset build s3://raw/coco/val2017 s3://som/coco-val --workers 2
    python -m flows.som_dataset SOURCE DEST        # the same, without the CLI niceties
"""

from __future__ import annotations

import sys
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from som.dataset.commit import commit_rows
from som.dataset.config import resolve_dataset_config
from som.dataset.manifest import latest_version, read_manifest
from som.dataset.report import BuildReport
from som.dataset.sources import list_sources, split_into_shards
from tasks.credentials import use_storage_secret
from tasks.marking import run_shards
from tasks.reports import publish_report


@flow(name="som-dataset", flow_run_name="som-dataset {dest}")
def build_som_dataset(
    source: str,
    dest: str,
    segmenter: str | None = None,
    segmenter_params: dict[str, Any] | None = None,
    coco: str | None = None,
    shard_size: int = 200,
    workers: int | None = None,
    scheduler: str | None = None,
    short_side: int | None = None,
    label_mode: str | None = None,
    modes: list[str] | None = None,
    image_format: str | None = None,
    incremental: bool = True,
    storage_secret: str | None = None,
) -> State:
    """Mark every new image under `source` into `dest` and write a new manifest version.

    Arguments:
      source: folder or object-store prefix of images (the image root when `coco` is given).
      dest: dataset URL, e.g. s3://bucket/datasets/coco-som.
      segmenter: sam | slic | felzenszwalb | coco | auto (coco when `coco` is given, else SAM
        when its checkpoint is cached, else slic). segmenter_params: its parameters.
      short_side, label_mode, modes, image_format: marking style (see `som mark --help`).
        The first build records segmenter and style in <dest>/dataset.json; later runs that
        leave them unset reuse it, and runs that set them differently are refused.
      coco: a COCO instances JSON: only its images are used (and its masks, with `coco`).
      shard_size: images per Prefect task. workers / scheduler: the Dask cluster (see
        tasks/cluster.py). incremental: skip images already in the latest manifest.
      storage_secret: name of a Prefect Secret block with S3 settings (JSON), when they are
        not in the environment (see tasks/credentials.py).
    """
    log = get_run_logger()
    started = time.perf_counter()
    if storage_secret:
        log.info("S3 settings from Secret block %r: %r", storage_secret, use_storage_secret(storage_secret))
    style = {"short_side": short_side, "label_mode": label_mode, "modes": modes}
    try:
        config = resolve_dataset_config(
            dest,
            segmenter=segmenter,
            segmenter_params=segmenter_params,
            coco=coco,
            style=style,
            image_format=image_format,
        )
    except ValueError as exc:
        return Failed(message=str(exc))

    sources = list_sources(source, coco=coco)
    previous = read_manifest(dest)
    known = {row.source_uri: row.source_fingerprint for row in previous}
    new = [s for s in sources if known.get(s.uri) != s.fingerprint] if incremental else sources
    log.info("%d images under %s, %d new for %s (segmenter %s)", len(sources), source, len(new), dest, config.segmenter)
    report = BuildReport(dest, latest_version(dest), seen=len(sources), new=len(new), total_rows=len(previous))
    if not new:
        report.seconds = time.perf_counter() - started
        publish_report(report)
        return Completed(message=f"nothing new: {report.line()}", data=report)

    shards = split_into_shards(new, shard_size)
    results, failed = run_shards(shards, dest, config, workers, scheduler)
    report.rows = [row for result in results for row in result.rows]
    report.shards, report.failed_shards = len(shards), len(failed)
    report.cached_shards = sum(result.cached for result in results)
    report.failed_shard_images = sum(len(shards[i]) for i in failed)
    # merged into what _latest holds *now*: another build may have committed since `previous`
    report.version, rows = commit_rows(dest, report.rows, run_id=str(flow_run.get_id()))
    report.total_rows = len(rows)
    report.seconds = time.perf_counter() - started
    publish_report(report)
    log.info(report.line())
    if failed:
        return Failed(
            message=f"{len(failed)} of {len(shards)} shards failed after retries "
            f"({report.failed_shard_images} images not processed; see the task logs). The manifest holds "
            f"everything else: run the build again to retry just those images. {report.line()}",
            data=report,
        )
    return Completed(message=report.line(), data=report)


if __name__ == "__main__":
    build_som_dataset(sys.argv[1], sys.argv[2])
