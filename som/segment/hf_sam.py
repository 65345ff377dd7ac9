"""Segment Anything through transformers (SamModel) behind the segmenter protocol.

Models come from the Hugging Face hub or a local folder (any SamModel checkpoint: the
facebook/sam-vit-* family, SlimSAM, a fine-tune), so no separate checkpoint download code is
needed. Automatic mask generation is transformers' own "mask-generation" pipeline: point grid,
per-crop image embeddings, IoU and stability filtering and NMS all happen there.
torch and transformers are imported only when an hf-sam segmenter is built.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from som.segment.automask import AutoMaskKnobs, autocast_context
from som.segment.mask import Mask
from som.segment.sam import half_to_float32, resolve_device
from som.settings import Real

log = logging.getLogger(__name__)


class HfSamParams(AutoMaskKnobs):
    """Model choice plus the knobs of segment-anything's automatic generator that transformers'
    pipeline supports (`AutoMaskKnobs`, and mask_threshold; min_mask_region_area is not: SAM's
    post-processing there has no small-region removal)."""

    model: str = "facebook/sam-vit-base"  # a hub id or a local folder
    local_files_only: bool = False  # never touch the network; the model must be cached
    cache_dir: str | None = None  # None = the Hugging Face cache
    mask_threshold: Real = 0.0


class HfSamSegmenter:
    """The mask-generation pipeline over a SamModel loaded once, when the segmenter is built."""

    name = "hf-sam"

    def __init__(self, params: HfSamParams) -> None:
        from transformers import pipeline

        self.params = params
        self.device = resolve_device(params.device)
        log.info("loading SAM model %s for %s", params.model, self.device)
        model, processor = load_model(params.model, params.local_files_only, params.cache_dir)
        self.pipeline = pipeline(
            "mask-generation",
            model=model.eval(),
            image_processor=processor.image_processor,
            device=self.device,
            pipeline_class=_float32_pipeline_class(),
        )

    def generate(self, image: np.ndarray, *, source: str | None = None) -> list[Mask]:
        from PIL import Image

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"hf-sam needs an HxWx3 uint8 RGB image, got {image.shape} {image.dtype}"
                + (f" for {source}" if source else "")
            )
        p = self.params
        with self._autocast():
            output = self.pipeline(
                Image.fromarray(image),
                points_per_crop=p.points_per_side,
                points_per_batch=p.points_per_batch,
                pred_iou_thresh=p.pred_iou_thresh,
                stability_score_thresh=p.stability_score_thresh,
                stability_score_offset=p.stability_score_offset,
                mask_threshold=p.mask_threshold,
                crops_nms_thresh=p.box_nms_thresh,
                crops_n_layers=p.crop_n_layers,
                crop_overlap_ratio=p.crop_overlap_ratio,
                crop_n_points_downscale_factor=p.crop_n_points_downscale_factor,
            )
        masks = [
            # The predicted IoU estimates an IoU, so it is clamped to [0, 1], the range of what
            # it estimates (the regression head can stray slightly outside it).
            Mask.from_full(mask.cpu().numpy(), score=min(max(float(score), 0.0), 1.0))
            for mask, score in zip(output["masks"], output["scores"], strict=True)
        ]
        return [mask for mask in masks if mask.area > 0]

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast_context(self.params.autocast, self.device)

    def describe(self) -> dict[str, Any]:
        """Params without machine-specific paths: a local model folder is recorded by name."""
        params = self.params.model_dump(exclude={"cache_dir"})
        if Path(params["model"]).is_dir():
            params["model"] = Path(params["model"]).name
        return {"name": self.name, "params": params}


_PIPELINE_CLASS = "Float32MaskGenerationPipeline"


def _float32_pipeline_class() -> type:
    """transformers' MaskGenerationPipeline whose per-batch outputs are float32 under autocast.

    Under bf16/fp16 autocast the IoU scores come out in half precision; the pipeline moves
    them to the CPU and runs torchvision NMS outside CUDA autocast, which fails with "dets
    should have the same type as scores". Casting after the batch's thresholding leaves the
    full-size masks (booleans by then) alone. The class is built on first use (transformers
    stays unimported until then) and published as a module attribute, so a segmenter still
    pickles into `som mark` worker processes.
    """
    cached = globals().get(_PIPELINE_CLASS)
    if cached is not None:
        return cached
    from transformers import MaskGenerationPipeline

    class Float32MaskGenerationPipeline(MaskGenerationPipeline):
        def _forward(self, *args: Any, **kwargs: Any) -> Any:
            return half_to_float32(super()._forward(*args, **kwargs))

    Float32MaskGenerationPipeline.__qualname__ = _PIPELINE_CLASS
    globals()[_PIPELINE_CLASS] = Float32MaskGenerationPipeline
    return Float32MaskGenerationPipeline


def __getattr__(name: str) -> Any:
    """Lets unpickling in a fresh process find the lazily built pipeline class."""
    if name == _PIPELINE_CLASS:
        return _float32_pipeline_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_model(model: str, local_files_only: bool, cache_dir: str | None) -> tuple[Any, Any]:
    """SamModel and SamProcessor from a hub id or folder, with an error that names the model
    and says what to do when it is neither cached nor downloadable."""
    from transformers import SamModel, SamProcessor

    try:
        return (
            SamModel.from_pretrained(model, local_files_only=local_files_only, cache_dir=cache_dir),
            SamProcessor.from_pretrained(model, local_files_only=local_files_only, cache_dir=cache_dir),
        )
    except (OSError, ValueError) as exc:
        where = "in the local Hugging Face cache" if local_files_only else "locally or on the hub"
        raise RuntimeError(
            f"cannot load the SAM model {model!r} {where} ({exc}). Offline? Download it on a "
            f"machine with network (huggingface-cli download {model}) and copy the cache or "
            "the folder here, then pass model=FOLDER; or use a CPU segmenter (--segmenter slic) "
            "that needs no weights."
        ) from exc
