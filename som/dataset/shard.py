"""Marking one shard of source images into a dataset's content-addressed objects.

This is the unit of work a Dask worker runs. Bad images become `failed` rows with a reason
(the quarantine) and never fail the shard; storage errors propagate so the orchestrator can
retry the shard. Every write is idempotent: outputs are keyed by the source's sha256, the
image is written before its JSON, and an image whose JSON already exists with the same
marking config is reused, so a retried or duplicated shard costs reads, not work.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from som import storage
from som.code_version import source_hash
from som.dataset.manifest import ManifestRow
from som.dataset.sources import SourceImage
from som.images import ImageLoadError, decode_image
from som.mark.annotate import ImageFormat, annotate
from som.mark.options import MarkOptions
from som.segment.base import Segmenter
from som.settings import Settings


class MarkConfig(Settings):
    """Everything that decides a dataset's outputs (and so belongs in cache keys).

    `segmenter_params` are kept as recorded (typed by `som.dataset.config.typed_params` when a
    dataset is first built): the fingerprint hashes them as they are."""

    segmenter: str
    segmenter_params: dict[str, Any] = {}
    options: MarkOptions = MarkOptions()
    image_format: ImageFormat = "jpg"

    def fingerprint(self) -> str:
        text = json.dumps(
            {
                "segmenter": self.segmenter,
                "params": self.segmenter_params,
                "style": self.options.as_metadata(),
                "format": self.image_format,
                "code": marking_code_version(),
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ShardResult:
    """Manifest rows for a shard's images plus how long it took."""

    rows: list[ManifestRow]
    seconds: float
    cached: bool = False  # set by the orchestrator when Prefect served it from its cache

    def counts(self) -> Counter:
        return Counter(row.status for row in self.rows)


@lru_cache(maxsize=1)
def marking_code_version() -> str:
    """Hash of the code that turns source bytes into outputs: changing it invalidates caches."""
    root = Path(__file__).resolve().parents[1]
    return source_hash([root / "images.py", *(root / "mark").glob("*.py"), *(root / "segment").glob("*.py")])


def mark_shard(items: list[SourceImage], dest: str, config: MarkConfig, segmenter: Segmenter) -> ShardResult:
    started = time.perf_counter()
    rows = [mark_source(item, dest, config, segmenter) for item in items]
    return ShardResult(rows, time.perf_counter() - started)


def mark_source(item: SourceImage, dest: str, config: MarkConfig, segmenter: Segmenter) -> ManifestRow:
    """Mark one source image into `dest`; see the module docstring for the guarantees."""
    failed: dict[str, Any] = dict(
        source_uri=item.uri, source_fingerprint=item.fingerprint, status="failed", segmenter=config.segmenter
    )
    try:
        data = storage.read_bytes(item.uri)
    except FileNotFoundError:
        return ManifestRow(sha256=None, error="source disappeared before it was read", **failed)
    try:
        loaded = decode_image(data, item.uri)
    except ImageLoadError as exc:
        return ManifestRow(sha256=hashlib.sha256(data).hexdigest(), error=exc.reason, **failed)
    json_url = storage.join(dest, storage.content_key(loaded.sha256, "json"))
    image_url = storage.join(dest, storage.content_key(loaded.sha256, config.image_format))
    metadata = _existing(json_url, segmenter, config.options)
    if metadata is None:
        try:
            output = annotate(loaded, segmenter, config.options, image_format=config.image_format)
        except LookupError as exc:  # an annotation-backed segmenter that lacks this image
            return ManifestRow(sha256=loaded.sha256, error=str(exc), **failed)
        except ImageLoadError as exc:  # e.g. an extreme aspect ratio, refused before resizing
            return ManifestRow(sha256=loaded.sha256, error=exc.reason, **failed)
        if output.image_bytes is not None:
            storage.write_bytes_atomic(image_url, output.image_bytes)
        storage.write_bytes_atomic(json_url, output.metadata_json())
        metadata = output.metadata
    skipped = metadata.get("skipped")
    return ManifestRow(
        source_uri=item.uri,
        source_fingerprint=item.fingerprint,
        sha256=loaded.sha256,
        status="skipped" if skipped else "marked",
        marked_uri=None if skipped else image_url,
        json_uri=json_url,
        n_marks=len(metadata["marks"]),
        width=metadata["width"],
        height=metadata["height"],
        segmenter=config.segmenter,
        error=skipped,
    )


def _existing(json_url: str, segmenter: Segmenter, options: MarkOptions) -> dict[str, Any] | None:
    """Metadata already written for these bytes with the same segmenter and style, if any."""
    try:
        metadata = json.loads(storage.read_bytes(json_url))
    except FileNotFoundError:
        return None
    if metadata.get("segmenter") == segmenter.describe() and metadata.get("style") == options.as_metadata():
        return metadata
    return None
