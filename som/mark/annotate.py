"""One source image in, one Set-of-Mark image plus its metadata JSON out.

This is the per-image unit of work shared by `som mark` and the dataset flow, so both write
exactly the same outputs for the same inputs.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

from PIL import Image

import som
from som.images import DEFAULT_MAX_ASPECT_RATIO, LoadedImage, resize_short_side
from som.mark.marker import mark_image
from som.mark.options import MarkOptions
from som.segment.base import Segmenter
from som.segment.mask import Mask

ImageFormat = Literal["jpg", "png"]


@dataclass(frozen=True)
class SomOutput:
    """Metadata (the JSON of DESIGN.md) and the encoded marked image (None when skipped)."""

    metadata: dict[str, Any]
    image_bytes: bytes | None

    @property
    def skipped(self) -> str | None:
        return self.metadata.get("skipped")

    def metadata_json(self) -> bytes:
        return json.dumps(self.metadata, separators=(",", ":")).encode("utf-8")


def annotate(
    loaded: LoadedImage,
    segmenter: Segmenter,
    options: MarkOptions,
    *,
    image_format: ImageFormat = "jpg",
    jpeg_quality: int = 90,
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
) -> SomOutput:
    """Resize, segment, mark and encode one image.

    Raises ImageLoadError (with a reason to quarantine) for an extreme aspect ratio or a
    resized size over the pixel limit, before allocating it.
    """
    resized, scale = resize_short_side(
        loaded.rgb, options.short_side, source=loaded.source, max_aspect_ratio=max_aspect_ratio
    )
    masks = segment(segmenter, resized, loaded)
    result = mark_image(resized, masks, options)
    metadata: dict[str, Any] = {
        "image": loaded.source,
        "sha256": loaded.sha256,
        "width": int(resized.shape[1]),
        "height": int(resized.shape[0]),
        "original_width": loaded.width,
        "original_height": loaded.height,
        "scale": round(scale, 6),
        "segmenter": segmenter.describe(),
        "style": options.as_metadata(),
        "somflow_version": som.__version__,
        "marks": result.marks,
    }
    if result.skipped:
        metadata["skipped"] = result.skipped
        return SomOutput(metadata, None)
    return SomOutput(metadata, encode_image(result.image, image_format, jpeg_quality))


class SizeCheckingSegmenter(Protocol):
    """A segmenter with `takes_original_size = True` (coco): `generate` also takes the image's
    (height, width) before the marking resize."""

    def generate(
        self, image: Any, *, source: str | None = None, original_size: tuple[int, int] | None = None
    ) -> list[Mask]: ...


def segment(segmenter: Segmenter, resized: Any, loaded: LoadedImage) -> list[Mask]:
    """Masks for the resized image. Annotation-backed segmenters (`takes_original_size`, i.e.
    coco) also get the size before the resize: their "masks must be the image's size" check
    is then exact, where the resized size alone lets a half-size copy pass as the original."""
    if getattr(segmenter, "takes_original_size", False):
        checking = cast(SizeCheckingSegmenter, segmenter)
        return checking.generate(resized, source=loaded.source, original_size=(loaded.height, loaded.width))
    return segmenter.generate(resized, source=loaded.source)


def encode_image(rgb: Any, image_format: ImageFormat, jpeg_quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    picture = Image.fromarray(rgb)
    if image_format == "jpg":
        picture.save(buffer, format="JPEG", quality=jpeg_quality)
    elif image_format == "png":
        picture.save(buffer, format="PNG", compress_level=3)
    else:
        raise ValueError(f"unknown image format {image_format!r}; use jpg or png")
    return buffer.getvalue()
