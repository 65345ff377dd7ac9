"""Names for tags from zero-shot CLIP classification of each tag's crop ("clip").

The third name source, for tags neither COCO ground truth nor a describer can name: each
tag's bounding box, padded a little for context, is cut from the marked-size image *without*
the drawn marks (a tag number inside the crop would be read as part of the object), and
CLIP scores it against "a photo of a {label}." for every label of a vocabulary (COCO's 80
categories by default, or a list / a text file with one label per line). The tag is named
with the top-1 label and the softmax probability over the vocabulary is kept, so callers
can drop low-confidence names.

Optionally the pixels of the crop outside the tag's residual mask are filled with CLIP's
mean colour (normalised to about zero, i.e. "no signal"), so a small tag inside a large
object is not named after the object around it.

torch and transformers are imported only when a namer is built, so importing this module
(for example by the CLI to list name sources) stays cheap.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from som.data.naming import TagName, TagNames
from som.devices import auto_dtype
from som.mark import rle

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SOURCE_CLIP = "clip"
DEFAULT_MODEL = "openai/clip-vit-large-patch14"
DEFAULT_LABELS_FILE = "coco_categories.txt"
# CLIP's image normalisation mean in 0..255: masked pixels become ~0 after normalisation.
CLIP_MEAN_RGB = (122, 117, 104)


@dataclass(frozen=True)
class ClipTagName(TagName):
    """A TagName (so listings and QA take it unchanged) plus CLIP's top-1 probability."""

    probability: float | None = None


def load_labels(path: str | os.PathLike[str]) -> list[str]:
    """Labels from a text file, one per line; blank lines and `#` comments are skipped."""
    lines = Path(path).read_text("utf-8").splitlines()
    return _check_labels([s.strip() for s in lines if s.strip() and not s.strip().startswith("#")], str(path))


def coco_labels() -> list[str]:
    """COCO's 80 category names (som/data/prompts/coco_categories.txt)."""
    text = resources.files("som.data").joinpath("prompts", DEFAULT_LABELS_FILE).read_text("utf-8")
    return _check_labels([s.strip() for s in text.splitlines() if s.strip()], DEFAULT_LABELS_FILE)


def resolve_labels(labels: Sequence[str] | str | os.PathLike[str] | None) -> list[str]:
    """None -> COCO's 80; a str or path -> a label file; otherwise the labels themselves."""
    if labels is None:
        return coco_labels()
    if isinstance(labels, (str, os.PathLike)):
        return load_labels(labels)
    return _check_labels([str(s).strip() for s in labels], "labels")


def _check_labels(labels: list[str], where: str) -> list[str]:
    if not labels:
        raise ValueError(f"{where}: the label vocabulary is empty")
    if any(not s for s in labels):
        raise ValueError(f"{where}: empty label")
    duplicates = sorted(label for label, n in Counter(labels).items() if n > 1)
    if duplicates:
        raise ValueError(f"{where}: duplicate labels {duplicates}")
    return labels


def padded_box(bbox: Sequence[float], padding: float, height: int, width: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), end-exclusive, of bbox [x, y, w, h] grown by `padding` x its width
    on the left and right and x its height on top and bottom, clipped to the image.
    Never empty: a degenerate box still yields one pixel."""
    x, y, w, h = (float(v) for v in bbox)
    pad_x, pad_y = padding * w, padding * h
    x0 = min(max(int(np.floor(x - pad_x)), 0), width - 1)
    y0 = min(max(int(np.floor(y - pad_y)), 0), height - 1)
    x1 = max(min(int(np.ceil(x + w + pad_x)), width), x0 + 1)
    y1 = max(min(int(np.ceil(y + h + pad_y)), height), y0 + 1)
    return x0, y0, x1, y1


def tag_crop(
    image_rgb: np.ndarray,
    mark: Mapping[str, Any],
    padding: float,
    mask_background: bool,
    fill: tuple[int, int, int] = CLIP_MEAN_RGB,
) -> np.ndarray:
    """The padded bbox crop of one tag (a copy), pixels outside its residual set to `fill`
    when `mask_background` is on."""
    height, width = image_rgb.shape[:2]
    x0, y0, x1, y1 = padded_box(mark["bbox"], padding, height, width)
    crop = np.array(image_rgb[y0:y1, x0:x1], dtype=np.uint8, copy=True)
    if mask_background:
        inside = rle.decode(rle.tag_segmentation(mark, height, width))[y0:y1, x0:x1]
        crop[~inside] = fill
    return crop


class ClipNamer:
    """Zero-shot CLIP names for tags; build once, call `name_tags` per image.

    model_id: a hub id or a local folder holding a CLIP model and its processor (with
      HF_HUB_OFFLINE set, only files already on disk are used).
    labels: the vocabulary (see `resolve_labels`); default COCO's 80 categories.
    device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...; bf16 on CUDA, fp32 on CPU.
    crop_padding: context around each bbox, as a fraction of its width / height per side.
    mask_background: fill the crop outside the tag's residual mask with CLIP's mean colour.
    """

    def __init__(
        self,
        model_id: str = DEFAULT_MODEL,
        labels: Sequence[str] | str | os.PathLike[str] | None = None,
        device: str = "auto",
        batch_size: int = 32,
        prompt_template: str = "a photo of a {}.",
        crop_padding: float = 0.1,
        mask_background: bool = False,
    ) -> None:
        import torch
        from transformers import AutoProcessor, CLIPModel

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        if "{}" not in prompt_template:
            raise ValueError(f"prompt_template needs a '{{}}' for the label: {prompt_template!r}")
        self.model_id = model_id
        self.labels = resolve_labels(labels)
        self.batch_size = batch_size
        self.prompt_template = prompt_template
        self.crop_padding = crop_padding
        self.mask_background = mask_background
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.dtype = auto_dtype(self.device, without_bf16=torch.float16)  # native bf16 only (som.devices)
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")
        self.processor = AutoProcessor.from_pretrained(model_id, local_files_only=offline)
        # Cast after loading rather than passing a dtype: the keyword's name changed across
        # transformers releases (torch_dtype -> dtype), the cast works on all of them.
        self.model = CLIPModel.from_pretrained(model_id, local_files_only=offline)
        # transformers wraps PreTrainedModel.to in functools.wraps, whose stub does not bind self
        cast("torch.nn.Module", self.model).to(self.device, self.dtype).eval()
        self._text_embeddings: torch.Tensor | None = None
        log.info("CLIP namer %s on %s (%s), %d labels", model_id, self.device, self.dtype, len(self.labels))

    @property
    def text_embeddings(self) -> torch.Tensor:
        """Unit-norm embeddings of every label prompt, computed on first use and then reused
        (the vocabulary does not change between images)."""
        if self._text_embeddings is None:
            import torch

            prompts = [self.prompt_template.format(label) for label in self.labels]
            chunks = []
            with torch.inference_mode():
                for start in range(0, len(prompts), self.batch_size):
                    tokens = self.processor.tokenizer(
                        prompts[start : start + self.batch_size], padding=True, truncation=True, return_tensors="pt"
                    ).to(self.device)
                    chunks.append(_features(self.model.get_text_features(**tokens)).float())
            embeddings = torch.cat(chunks)
            self._text_embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
        return self._text_embeddings

    def probabilities(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """crops x labels softmax probabilities (CLIP's scaled cosine similarities)."""
        import torch

        text = self.text_embeddings
        scale = self.model.logit_scale.detach().float().exp()
        rows = []
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                chunk = list(crops[start : start + self.batch_size])
                batch = self.processor.image_processor(images=chunk, return_tensors="pt")
                pixels = batch["pixel_values"].to(self.device, self.dtype)
                image = _features(self.model.get_image_features(pixel_values=pixels)).float()
                image = image / image.norm(dim=-1, keepdim=True)
                rows.append((scale * image @ text.T).softmax(dim=-1).cpu())
        if not rows:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return torch.cat(rows).numpy()

    def crops(self, image_rgb: np.ndarray, marks: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        """The crop each tag is classified from, in tag order."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB image, got shape {image_rgb.shape}")
        return [tag_crop(image_rgb, m, self.crop_padding, self.mask_background) for m in marks]

    def name_tags(
        self, image_rgb: np.ndarray, marks: Sequence[Mapping[str, Any]] | Mapping[str, Any]
    ) -> list[ClipTagName]:
        """Top-1 label and its probability for every tag, in the order given.

        image_rgb: the marked-size image without drawn marks (the resized source), HxWx3 uint8.
        marks: the tag dicts of a marks JSON (or the marks JSON itself).
        """
        tags = list(marks.get("marks") or []) if isinstance(marks, Mapping) else list(marks)
        probs = self.probabilities(self.crops(image_rgb, tags))
        best = probs.argmax(axis=1)
        return [
            ClipTagName(
                int(mark["id"]),
                str(mark.get("label", mark["id"])),
                self.labels[int(k)],
                SOURCE_CLIP,
                probability=float(probs[i, k]),
            )
            for i, (mark, k) in enumerate(zip(tags, best, strict=False))
        ]

    def name_marks(self, image_rgb: np.ndarray, marks_json: Mapping[str, Any]) -> TagNames:
        """`name_tags` for a whole marks JSON, as the TagNames the other sources return."""
        names = self.name_tags(image_rgb, marks_json)
        return TagNames(str(marks_json.get("image", "")), str(marks_json.get("sha256", "")), tuple(names))


def _features(output: Any) -> torch.Tensor:
    """Projected embeddings: transformers 5 wraps them in an output object, 4.x returns them."""
    return output if hasattr(output, "shape") else output.pooler_output
