"""Namers that fill the tags COCO ground truth (or the segmenter) left unlabeled.

Each implements `name_unlabeled(marks, names, marked_image_url) -> TagNames` and touches only
unlabeled tags, so they chain: the build tries them in the configured order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from som import storage
from som.chat_api import ChatClient
from som.data.clip_namer import ClipNamer
from som.data.describer import Describer
from som.data.naming import TagName, TagNames
from som.images import decode_image, resize_short_side


def _replace(names: TagNames, updates: Mapping[int, TagName]) -> TagNames:
    return TagNames(names.image, names.sha256, tuple(updates.get(t.tag, t) for t in names.tags))


def _unlabeled(names: TagNames) -> set[int]:
    return {t.tag for t in names.tags if not t.labeled}


@dataclass
class DescriberFallback:
    """Ask a describer model about the marked image; keep its answers for unlabeled tags."""

    describer: Describer

    def name_unlabeled(self, marks: Mapping[str, Any], names: TagNames, marked_image_url: str) -> TagNames:
        result = self.describer.describe(marks, storage.read_bytes(marked_image_url))
        missing = _unlabeled(names)
        return _replace(names, {t.tag: t for t in result.tags if t.tag in missing and t.labeled})


@dataclass
class ClipFallback:
    """Classify the crops of unlabeled tags with CLIP (on the unmarked image at marking size)."""

    namer: ClipNamer
    min_probability: float = 0.0

    def name_unlabeled(self, marks: Mapping[str, Any], names: TagNames, marked_image_url: str) -> TagNames:
        missing = _unlabeled(names)
        pending = [m for m in marks.get("marks") or [] if m["id"] in missing]
        if not pending:
            return names
        results = self.namer.name_tags(source_at_marking_size(marks), pending)
        # name_tags always sets probability (it is Optional only for the dataclass field order)
        return _replace(
            names, {r.tag: r for r in results if r.probability is not None and r.probability >= self.min_probability}
        )


def source_at_marking_size(marks: Mapping[str, Any]) -> np.ndarray:
    """The source image resized exactly as it was for marking (tags' coordinates fit it)."""
    loaded = decode_image(storage.read_bytes(marks["image"]), marks["image"])
    if loaded.sha256 != marks.get("sha256"):
        raise ValueError(f"{marks['image']} changed since it was marked (sha256 differs)")
    image, _ = resize_short_side(loaded.rgb, marks["style"]["short_side"])
    if image.shape[:2] != (marks["height"], marks["width"]):
        raise ValueError(f"{marks['image']} does not resize to the marked size {marks['width']}x{marks['height']}")
    return image


def build_fallback_namers(
    names: Sequence[str],
    *,
    cache_url: str,
    describer_model: str | None = None,
    describer_base_url: str | None = None,
    api_key: str | None = None,
    clip_model: str = "openai/clip-vit-large-patch14",
    clip_labels: str | None = None,
) -> list[DescriberFallback | ClipFallback]:
    """The namers called `names`, in that order ("describer": an OpenAI-compatible chat model,
    answers cached under `cache_url`; "clip": zero-shot CLIP over `clip_labels`, else COCO's
    80). Built once per build, so a model loads once."""
    namers: list[DescriberFallback | ClipFallback] = []
    for name in names:
        if name == "describer":
            client = ChatClient(describer_base_url, describer_model, api_key, cache_url=cache_url)
            namers.append(DescriberFallback(Describer(client)))
        elif name == "clip":
            namers.append(ClipFallback(ClipNamer(model_id=clip_model, labels=clip_labels)))
        else:
            raise ValueError(f"unknown namer {name!r}: use describer and/or clip")
    return namers
