"""The shard task: mark a few hundred images on a Dask worker, retried and cached."""

from __future__ import annotations

import hashlib
from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext

from som.dataset.shard import MarkConfig, ShardResult, mark_shard
from som.dataset.sources import SourceImage
from som.segment.base import resident_segmenter

RETRY_DELAYS = [1, 2, 4, 8, 16]


def shard_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Same images (URI + size + ETag/mtime), destination, marking config and code: same result."""
    digest = hashlib.sha256()
    digest.update(parameters["dest"].encode() + b"\0" + parameters["config"].fingerprint().encode())
    for item in parameters["items"]:
        digest.update(f"\n{item.uri}\0{item.fingerprint}".encode())
    return f"som-shard-{digest.hexdigest()}"


@task(
    name="mark-shard",
    task_run_name="mark-shard-{index}",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_jitter_factor=0.2,
    cache_key_fn=shard_cache_key,
    persist_result=True,
)
def mark_shard_task(index: int, items: list[SourceImage], dest: str, config: MarkConfig) -> ShardResult:
    """Mark one shard. Bad images come back as failed rows; storage errors raise (and retry)."""
    segmenter = resident_segmenter(config.segmenter, config.segmenter_params)
    result = mark_shard(items, dest, config, segmenter)
    counts = result.counts()
    get_run_logger().info(
        "shard %d: %d images in %.1f s (%d marked, %d skipped, %d failed)",
        index, len(items), result.seconds, counts["marked"], counts["skipped"], counts["failed"],
    )
    return result
