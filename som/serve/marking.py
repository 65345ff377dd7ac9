"""Set-of-Mark on the fly for serving: image bytes in, marked PNG plus per-tag masks out.

`som serve --tags auto`, `som chat` and `som demo` mark user images while a person waits, with
the same pipeline as `som mark` and the "w/ tags" evaluation (som.mark.annotate through the
settings of a som.eval.tagging.TagConfig), so a served model sees exactly the images it was
trained and evaluated on. Unlike `tag_image` (which returns only the JPEG an eval run feeds
the model), this keeps the marks: the chat and demo list tags, highlight the ones an answer
mentions and show a tag's mask. PNG, not JPEG: the demo overlays masks on the marked pixels.

Chat clients resend the whole conversation, image included, on every turn; results are kept
in a small in-process LRU keyed by the image and every setting, so a turn does not re-run the
segmenter. User uploads go through the safe loader (som.images): corrupt, oversized and
extreme-aspect images raise ImageLoadError whose `reason` says why.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from som.eval.tagging import TagConfig

log = logging.getLogger(__name__)

CACHE_SIZE = 32
"""Marked images kept per process (a PNG plus its RLEs: well under a few MB each)."""

HIGHLIGHT = (255, 0, 0)  # outline colour of highlighted tags
_NUMBER_MENTION = re.compile(r"(?<![\w.])(\d+)(?![\w]|\.\d)")
_ALPHA_MENTION = re.compile(r"\[([a-z]{1,3})\]|\b(?:tags?|marks?|labels?)\s+([a-z]{1,3})\b", re.IGNORECASE)


@dataclass(frozen=True)
class MarkedImage:
    """A marked image and its tags.

    image: PNG bytes of the marked image (the plain resized image when `skipped`).
    marks: one dict per tag, in tag order: `tag` (the label drawn), `id` (1..N), `bbox`
        [x, y, w, h] and `area` of the tag's residual mask, `position` [x, y] of the label's
        centre, `score`, `category`, and `rle` (COCO RLE, {"size": [h, w], "counts": str}).
    width, height: size of the marked image (marks are in its pixels).
    label_mode: "number" or "alpha", how tags are written (and so how answers mention them).
    segmenter: the segmenter's name and parameters actually used ("auto" resolved).
    skipped: why nothing was tagged (the segmenter found no usable mask), else None.

    Results are cached and shared between callers: treat them as read-only.
    """

    image: bytes
    marks: list[dict[str, Any]]
    width: int
    height: int
    label_mode: str
    segmenter: dict[str, Any]
    skipped: str | None = None

    def mark(self, tag: str) -> dict[str, Any]:
        """The mark labelled `tag`; KeyError names the known tags."""
        for mark in self.marks:
            if mark["tag"] == str(tag):
                return mark
        raise KeyError(f"no tag {tag!r}; tags are {', '.join(m['tag'] for m in self.marks) or 'none'}")

    def mask(self, tag: str) -> np.ndarray:
        """HxW boolean mask of one tag (its residual: the pixels it owns in the drawing)."""
        from som.mark import rle

        return rle.decode(self.mark(tag)["rle"])

    def tag_at(self, x: int, y: int) -> str | None:
        """The tag whose mask holds pixel (x, y), or None (untagged pixels: small residuals
        and, with SLIC, nothing; with SAM, the background)."""
        for mark in self.marks:
            left, top, width, height = mark["bbox"]
            if left <= x < left + width and top <= y < top + height and self.mask(mark["tag"])[y, x]:
                return mark["tag"]
        return None

    def rgb(self) -> np.ndarray:
        """The marked image as an HxWx3 uint8 array."""
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(self.image)).convert("RGB"))

    def mentioned(self, text: str) -> list[str]:
        """Tags that `text` mentions, in order of first mention (see `mentioned_tags`)."""
        return mentioned_tags(text, [m["tag"] for m in self.marks], self.label_mode)

    def highlight(self, tags: Iterable[str]) -> bytes:
        """PNG of the marked image with `tags` outlined and everything else dimmed.

        The model's answer names tags; a person checks them against the image. Unknown tags
        are ignored (an answer may mention a number that is not a tag)."""
        chosen = [t for t in dict.fromkeys(str(t) for t in tags) if any(m["tag"] == t for m in self.marks)]
        if not chosen:
            return self.image
        return encode_png(outline(self.rgb(), [self.mask(t) for t in chosen]))


def tag_spans(text: str, tags: Sequence[str], label_mode: str) -> list[tuple[int, int, str]]:
    """(start, end, tag) of every mention in `text` of a tag in `tags`, in text order.

    Numbers count when they stand alone ("3", "[3]", "tag 3"; not "3.5" or "3rd"). Letters are
    also English words ("a"), so alpha tags count only as "[a]" or after "tag"/"mark"/"label".
    """
    known = set(tags)
    pattern, lower = (_ALPHA_MENTION, str.lower) if label_mode == "alpha" else (_NUMBER_MENTION, str)
    spans = []
    for match in pattern.finditer(text):
        group = 1 if match.group(1) is not None else 2
        if lower(match.group(group)) in known:
            spans.append((match.start(group), match.end(group), lower(match.group(group))))
    return spans


def mentioned_tags(text: str, tags: Sequence[str], label_mode: str) -> list[str]:
    """Tags of `tags` mentioned in `text` (see `tag_spans`), in order of first mention, once each."""
    return list(dict.fromkeys(tag for _, _, tag in tag_spans(text, tags, label_mode)))


def outline(rgb: np.ndarray, masks: Sequence[np.ndarray], dim: float = 0.55) -> np.ndarray:
    """`rgb` with pixels outside every mask darkened by `dim` and each mask outlined."""
    import cv2

    union = np.zeros(rgb.shape[:2], dtype=bool)
    for mask in masks:
        union |= mask
    canvas = rgb.copy()
    canvas[~union] = np.rint(canvas[~union] * (1 - dim)).astype(np.uint8)
    width = max(2, round(min(rgb.shape[:2]) / 200))
    for mask in masks:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, HIGHLIGHT, width)
    return canvas


def encode_png(rgb: np.ndarray) -> bytes:
    from som.mark import encode_image

    return encode_image(rgb, "png")


def mark_image(data: bytes, config: TagConfig, *, source: str = "upload") -> MarkedImage:
    """Segment and mark the encoded image `data` as `config` says.

    `source` names the image in errors and logs. Raises som.images.ImageLoadError for a
    corrupt or non-image input, too many pixels, or an extreme aspect ratio (its `reason`
    says which), and ValueError for an unknown segmenter, parameter or mark option.
    """
    from som.eval.tagging import _resolve_segmenter, tag_key

    options = config.style()
    name, params = _resolve_segmenter(config.segmenter, config.params)
    key = tag_key(data, name, params, options)
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
    log.info(
        "marking %s (%s bytes, sha256 %s) with %s %s",
        source,
        len(data),
        hashlib.sha256(data).hexdigest()[:12],
        name,
        params,
    )
    marked = _mark(data, source, name, params, options)
    with _LOCK:
        _CACHE[key] = marked
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return marked


def _mark(data: bytes, source: str, name: str, params: dict[str, Any], options: Any) -> MarkedImage:
    from som.images import decode_image, resize_short_side
    from som.mark import annotate
    from som.segment import resident_segmenter

    loaded = decode_image(data, source)
    output = annotate(loaded, resident_segmenter(name, params), options, image_format="png")
    meta = output.metadata
    image = output.image_bytes
    if image is None:
        log.warning("nothing tagged on %s (%s); showing it untagged", source, output.skipped)
        image = encode_png(resize_short_side(loaded.rgb, options.short_side, source=source)[0])
    marks = [
        {
            "tag": m["label"],
            "id": m["id"],
            "bbox": m["bbox"],
            "area": m["area"],
            "position": m["position"],
            "score": m["score"],
            "category": m["category"],
            "rle": m["segmentation"],
        }
        for m in meta["marks"]
    ]
    return MarkedImage(
        image=image,
        marks=marks,
        width=meta["width"],
        height=meta["height"],
        label_mode=options.label_mode,
        segmenter=meta["segmenter"],
        skipped=output.skipped,
    )


_CACHE: OrderedDict[str, MarkedImage] = OrderedDict()
_LOCK = threading.Lock()
