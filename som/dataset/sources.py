"""Listing source images cheaply enough to do on every scheduled refresh.

One recursive listing gives every object's size and ETag (S3) or mtime (files): that
fingerprint decides what is new since the last manifest without reading a single image.
Content hashes are computed later, by the workers that read the bytes anyway.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from som import storage
from som.images import IMAGE_EXTENSIONS


@dataclass(frozen=True, order=True)
class SourceImage:
    """One image to mark: where it is and what identifies its current bytes."""

    uri: str
    size: int
    fingerprint: str  # "<size>:<etag or mtime>"; changes when the object is rewritten


def _fingerprint(info: dict[str, Any]) -> str:
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
    return f"{info.get('size', 0)}:{str(tag).strip(chr(34))}"


def list_sources(root: str, *, coco: str | None = None, extensions=IMAGE_EXTENSIONS) -> list[SourceImage]:
    """Images under `root` (a folder or object-store prefix), sorted by URI.

    With `coco` (a COCO instances JSON URL), only the images that file lists, as
    `root/<file_name>`, in the same sorted order.
    """
    wanted = {"." + e.lower().lstrip(".") for e in extensions}
    fs, base = storage.resolve(root)
    base = base.rstrip("/")
    fs.invalidate_cache(base)
    try:
        found = fs.find(base, detail=True)
    except FileNotFoundError:
        found = {}
    listed = None if coco is None else coco_file_names(coco)
    images = []
    for path, info in found.items():
        if info.get("type") == "directory" or not path.startswith(base + "/"):
            continue
        relative = path[len(base) + 1 :]
        name = PurePosixPath(relative).name
        if name.startswith(".") or os.path.splitext(name)[1].lower() not in wanted:
            continue
        if listed is not None and relative not in listed:
            continue
        images.append(SourceImage(storage.join(root, relative), int(info.get("size") or 0), _fingerprint(info)))
    return sorted(images)


def coco_file_names(coco_url: str) -> set[str]:
    """The `file_name`s of a COCO instances file's images."""
    data = json.loads(storage.read_bytes(coco_url))
    return {record["file_name"] for record in data.get("images", [])}


def split_into_shards(items: list[SourceImage], shard_size: int) -> list[list[SourceImage]]:
    """Consecutive runs of `shard_size` items (stable order gives stable shards)."""
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    return [items[i : i + shard_size] for i in range(0, len(items), shard_size)]
