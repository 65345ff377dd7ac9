"""Scheduled incremental refresh of a SoM dataset: mark what arrived since the last run.

A cron deployment runs this nightly with its source and dest. It is the dataset build with
`incremental=True`: images already in the latest manifest (same URI, size and ETag/mtime)
are skipped, and with nothing new the run only reports that and writes nothing. The marking
config is the one the dataset recorded at its first build (<dest>/dataset.json).
"""

from __future__ import annotations

from prefect import flow
from prefect.states import Completed, Failed, State

from flows.som_dataset import build_som_dataset


@flow(name="som-refresh", flow_run_name="som-refresh {dest}")
def refresh_som_dataset(
    source: str,
    dest: str,
    coco: str | None = None,
    shard_size: int = 200,
    workers: int | None = None,
    scheduler: str | None = None,
    storage_secret: str | None = None,
) -> State:
    build = build_som_dataset(
        source=source,
        dest=dest,
        coco=coco,
        shard_size=shard_size,
        workers=workers,
        scheduler=scheduler,
        storage_secret=storage_secret,
        incremental=True,
        return_state=True,
    )
    report = build.result(raise_on_failure=False)
    if build.is_completed():
        return Completed(message=build.message, data=report)
    return Failed(message=build.message, data=report)
