"""Versioned Parquet manifests: one row per source image, the newest version named by `_latest`.

Each version holds every row (previous rows merged with the new run's), so any version can
be read alone; `_latest` is written after the version file, so it never names a partial one.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime

from som import storage

LATEST = "_latest"


@dataclass(frozen=True)
class ManifestRow:
    """What happened to one source image (status: marked, skipped or failed)."""

    source_uri: str
    source_fingerprint: str
    sha256: str | None
    status: str
    marked_uri: str | None = None
    json_uri: str | None = None
    n_marks: int = 0
    width: int | None = None
    height: int | None = None
    segmenter: str | None = None
    error: str | None = None


def _schema():
    import pyarrow as pa

    integer = {"int", "int | None"}  # annotations are strings (postponed evaluation)
    return pa.schema([pa.field(f.name, pa.int64() if f.type in integer else pa.string()) for f in fields(ManifestRow)])


def new_version_name(now: datetime | None = None) -> str:
    """Sortable version names such as v20261121T221500123456Z."""
    now = now or datetime.now(UTC)
    return now.strftime("v%Y%m%dT%H%M%S%fZ")


def manifest_url(dest: str, version: str) -> str:
    return storage.join(dest, "manifests", f"{version}.parquet")


def latest_version(dest: str) -> str | None:
    """The newest complete version under `dest`, or None for a new dataset."""
    pointer = storage.join(dest, "manifests", LATEST)
    try:
        return storage.read_bytes(pointer).decode("utf-8").strip() or None
    except FileNotFoundError:
        return None


def read_manifest(dest: str, version: str | None = None) -> list[ManifestRow]:
    """Rows of `version` (default: the latest); [] when the dataset has none yet."""
    import pyarrow.parquet as pq

    version = version or latest_version(dest)
    if version is None:
        return []
    table = pq.read_table(io.BytesIO(storage.read_bytes(manifest_url(dest, version))))
    return [ManifestRow(**row) for row in table.to_pylist()]


def merge_rows(previous: Iterable[ManifestRow], new: Iterable[ManifestRow]) -> list[ManifestRow]:
    """Previous rows updated by new ones (same source URI), sorted by source URI."""
    merged = {row.source_uri: row for row in previous}
    merged.update((row.source_uri, row) for row in new)
    return [merged[uri] for uri in sorted(merged)]


def write_manifest_version(dest: str, rows: list[ManifestRow], version: str, exclusive: bool = False) -> str:
    """Write one complete version file (not `_latest`). `exclusive`: only if no file has that
    name yet (storage.PreconditionFailed otherwise), so concurrent builds never overwrite
    each other's version."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([asdict(r) for r in rows], schema=_schema())
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    if exclusive:
        storage.compare_and_swap(manifest_url(dest, version), buffer.getvalue(), None)
    else:
        storage.write_bytes_atomic(manifest_url(dest, version), buffer.getvalue())
    return version


def write_manifest(dest: str, rows: list[ManifestRow], version: str | None = None) -> str:
    """Write a complete version, then point `_latest` at it; returns the version name.

    Last writer wins: builds commit through som.dataset.commit.commit_rows instead."""
    version = write_manifest_version(dest, rows, version or new_version_name())
    storage.write_bytes_atomic(storage.join(dest, "manifests", LATEST), version.encode("utf-8"))
    return version
