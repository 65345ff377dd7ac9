"""The "w/ tags" variant of every benchmark: the model sees the Set-of-Mark image, not the plain one.

SoM-LLaVA reports each benchmark with and without tags on the input image; the tagged image
is what `som mark` would draw (som.mark.annotate: resize, segment, number the masks), with a
configurable segmenter ("auto" = SAM when its checkpoint is cached, else SLIC) and
granularity, which is the segmenter's own knobs (SAM `points_per_side`, SLIC `n_segments`,
...) plus the marking options (`MarkOptions`: `min_tag_area`, `label_mode`, ...).

Marking costs a segmenter pass per image and the same images recur across runs and models,
so tagged images are cached under `cache_url` by the sha256 of (image bytes, segmenter,
params, mark options). `with_tags` turns plain items into tagged ones without reading any
image: it records the settings in `meta["tagging"]`, and `read_image_bytes` (here, beside the
marking it calls; the runner imports it) marks the image when the runner reads it, on whichever
worker that is.

Light at import time (the standard library and som.settings' pydantic); som.storage, the marker
and the segmenters load when an image is read or a config is checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import ValidationInfo, field_validator

from som.eval.items import EvalItem, with_meta
from som.settings import Settings, validate

if TYPE_CHECKING:
    from som.mark import MarkOptions

log = logging.getLogger(__name__)

TAGGING_KEY = "tagging"
"""meta key set by `with_tags`: the Set-of-Mark settings for this item."""
PREMARKED_KEY = "premarked"
"""meta flag of items whose image already is a Set-of-Mark image (the listing probe)."""


class ItemImageError(RuntimeError):
    """An item's image could not be read; the message names the item and the URL."""


class TagConfig(Settings):
    """How the tagged images of a "w/ tags" run are made; checked when built, so that a bad
    segmenter, parameter or mark option fails a run before any job, naming the key.

    Arguments:
    segmenter: a som.segment name ("auto", "sam", "slic", "felzenszwalb", ...).
    params: the segmenter's parameters (its granularity), strings or typed values ("auto"
      takes SAM's: it is SAM when its checkpoint is cached, else SLIC with its defaults).
    mark_options: som.mark.MarkOptions fields (short_side, min_tag_area, label_mode, ...).
    cache_url: where marked images are kept (any som.storage URL); None marks every time.

    `params` and `mark_options` are kept as given, not typed: they are hashed into the
    answers' prompt hashes (`to_dict`) and the tagged images' cache keys (params).
    """

    segmenter: str = "auto"
    params: dict[str, Any] = {}
    mark_options: dict[str, Any] = {}
    cache_url: str | None = None

    @field_validator("segmenter")
    @classmethod
    def _known_segmenter(cls, segmenter: str) -> str:
        from som.segment import available

        if segmenter != "auto" and segmenter not in available():
            raise ValueError(f"unknown segmenter {segmenter!r}; choose one of: auto, {', '.join(available())}")
        return segmenter

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from som.segment import segmenter_params

        if "segmenter" in info.data:  # else the segmenter is unknown, and that is the error
            segmenter = info.data["segmenter"]
            segmenter_params("sam" if segmenter == "auto" else segmenter, params)
        return params

    @field_validator("mark_options")
    @classmethod
    def _known_mark_options(cls, mark_options: dict[str, Any]) -> dict[str, Any]:
        _style(mark_options)
        return mark_options

    def to_dict(self) -> dict[str, Any]:
        """The settings as given (JSON-able): what `with_tags` records in each item's meta."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TagConfig:
        """The config of `to_dict` or of a flow's `tag_options` (None: the default)."""
        return validate(cls, {k: v for k, v in data.items() if v is not None})

    def style(self) -> MarkOptions:
        """The mark options, typed."""
        return _style(self.mark_options)


def _style(values: Mapping[str, Any]) -> MarkOptions:
    from som.mark import MarkOptions

    return validate(MarkOptions, values)


def _resolve_segmenter(name: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if name != "auto":
        return name, dict(params)
    chosen, chosen_json = _choose_auto(json.dumps({k: str(v) for k, v in params.items()}, sort_keys=True))
    return chosen, json.loads(chosen_json)


@lru_cache(maxsize=8)
def _choose_auto(params_json: str) -> tuple[str, str]:
    """'auto' resolved once per process (its SLIC fallback warning is loud by design)."""
    from som.segment.auto import choose_segmenter

    chosen, chosen_params = choose_segmenter(json.loads(params_json))
    return chosen, json.dumps(chosen_params, sort_keys=True)


def tag_key(image: bytes, segmenter: str, params: Mapping[str, Any], options: Any) -> str:
    """Cache key: sha256 over the image's sha256 and every setting that changes the drawing."""
    payload = {
        "image": hashlib.sha256(image).hexdigest(),
        "segmenter": segmenter,
        "params": {k: params[k] for k in sorted(params)},
        "style": options.as_metadata(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def tag_image(
    image: bytes,
    *,
    segmenter: str = "auto",
    params: Mapping[str, Any] | None = None,
    cache_url: str | None = None,
    **mark_options: Any,
) -> bytes:
    """The Set-of-Mark JPEG of `image` (encoded bytes), from the cache when there.

    When the segmenter finds nothing to tag, the plain image is returned (logged): a
    "w/ tags" run then asks about the untagged image rather than dropping the question."""
    from som import storage
    from som.images import decode_image
    from som.mark import annotate
    from som.segment import resident_segmenter

    options = TagConfig.from_dict({"segmenter": segmenter, "params": params, "mark_options": mark_options}).style()
    name, resolved = _resolve_segmenter(segmenter, params or {})
    key = tag_key(image, name, resolved, options)
    url = storage.join(cache_url, key[:2], f"{key}.jpg") if cache_url else None
    if url is not None:
        try:
            return storage.read_bytes(url)
        except FileNotFoundError:
            pass
    loaded = decode_image(image, f"sha256:{key[:12]}")
    output = annotate(loaded, resident_segmenter(name, resolved), options, image_format="jpg")
    if output.image_bytes is None:
        log.warning("Set-of-Mark skipped an image (%s); the model gets it untagged", output.skipped)
        return image
    if url is not None:
        storage.write_bytes_atomic(url, output.image_bytes, durable=False)
    return output.image_bytes


def with_tags(items: Sequence[EvalItem], config: TagConfig) -> list[EvalItem]:
    """The "w/ tags" variant of `items`: same ids and prompts, the image marked when read.

    Items whose image already is a Set-of-Mark image (meta["premarked"], the listing probe)
    are returned unchanged: marking them again would bury their tags under new ones."""
    settings = config.to_dict()
    tagged = []
    for item in items:
        if item.image is None or item.meta.get(PREMARKED_KEY):
            tagged.append(item)
        else:
            tagged.append(with_meta(item, **{TAGGING_KEY: settings}))
    return tagged


def read_image_bytes(item: EvalItem) -> bytes | None:
    """The bytes the model sees for `item`: None for text-only items, the Set-of-Mark image
    for items of a "w/ tags" variant (see `with_tags`), else the image itself."""
    if item.image is None:
        return None
    from som import storage

    try:
        data = storage.read_bytes(item.image)
    except Exception as exc:  # noqa: BLE001 - re-raised with the item named
        raise ItemImageError(f"item {item.id}: cannot read image {item.image}: {exc}") from exc
    settings = item.meta.get(TAGGING_KEY)
    if settings is None:
        return data
    config = TagConfig.from_dict(settings)
    try:
        return tag_image(
            data,
            segmenter=config.segmenter,
            params=dict(config.params),
            cache_url=config.cache_url,
            **dict(config.mark_options),
        )
    except Exception as exc:  # noqa: BLE001 - re-raised with the item named
        raise ItemImageError(f"item {item.id}: cannot mark image {item.image}: {exc}") from exc
