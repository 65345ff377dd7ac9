"""The shard task: mark a few hundred images on a Dask worker, cached, and retried after
transient storage errors only (tasks.retries)."""

from __future__ import annotations

import hashlib
from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext
from prefect.futures import as_completed

from som.dataset.shard import MarkConfig, ShardResult, mark_shard
from som.dataset.sources import SourceImage
from som.segment import resident_segmenter
from tasks.cluster import dask_task_runner
from tasks.reports import Progress
from tasks.result_storage import result_storage_for
from tasks.retries import retry_if_transient

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
    retry_condition_fn=retry_if_transient,
    cache_key_fn=shard_cache_key,
    persist_result=True,
)
def mark_shard_task(index: int, items: list[SourceImage], dest: str, config: MarkConfig) -> ShardResult:
    """Mark one shard. Bad images come back as failed rows; storage errors raise (retried only
    when transient: an outage, not wrong credentials)."""
    segmenter = resident_segmenter(config.segmenter, config.segmenter_params)
    result = mark_shard(items, dest, config, segmenter)
    counts = result.counts()
    get_run_logger().info(
        "shard %d: %d images in %.1f s (%d marked, %d skipped, %d failed)",
        index,
        len(items),
        result.seconds,
        counts["marked"],
        counts["skipped"],
        counts["failed"],
    )
    return result


def run_shards(
    shards: list, dest: str, config: MarkConfig, workers: int | None, scheduler: str | None
) -> tuple[list[ShardResult], list[int]]:
    """Mark shards on Dask; returns the results and the indices of shards that failed."""
    log = get_run_logger()
    task = mark_shard_task.with_options(result_storage=result_storage_for(dest))
    progress = Progress(dest, len(shards))
    results, failed = [], []
    with dask_task_runner(workers, scheduler) as runner:
        futures = {
            runner.submit(task, {"index": i, "items": shard, "dest": dest, "config": config}): i
            for i, shard in enumerate(shards)
        }
        for future in as_completed(list(futures)):
            future.wait()
            state = future.state
            if state.is_completed():
                result = future.result()
                result.cached = state.name == "Cached"
                results.append(result)
            else:
                failed.append(futures[future])
                log.error("shard %d failed: %s", futures[future], state.message)
            progress.advance()
        # the cluster's close takes a moment, and the commit follows it: say what comes next
        log.info(
            "all %d shards done (%d failed); closing the Dask cluster, then committing the manifest",
            len(shards),
            len(failed),
        )
    progress.close()
    return results, sorted(failed)
