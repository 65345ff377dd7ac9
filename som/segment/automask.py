"""What the `sam` and `hf-sam` segmenters share: the knobs of Segment Anything's automatic mask
generator, and how a precision choice becomes an autocast region.

Why one class: the two segmenters run the same algorithm (a point grid, IoU and stability
filters, NMS, optional crops) through two implementations; declaring the knobs once keeps their
names, defaults and CLI parsing (`--param points_per_side=16`) the same for both.
"""

from __future__ import annotations

import contextlib
from typing import Literal

from som.settings import Real, Settings

Autocast = Literal["none", "bf16", "fp16"]


class AutoMaskKnobs(Settings):
    """Device, precision and the automatic generator's knobs both implementations support (each
    segmenter's params add their model choice and the knobs only one of them has)."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    autocast: Autocast = "none"
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: Real = 0.88
    stability_score_thresh: Real = 0.95
    stability_score_offset: Real = 1.0
    box_nms_thresh: Real = 0.7
    crop_n_layers: int = 0
    crop_overlap_ratio: Real = 512 / 1500
    crop_n_points_downscale_factor: int = 1


def autocast_context(autocast: Autocast, device: str) -> contextlib.AbstractContextManager:
    """torch autocast to bf16/fp16 on `device`'s type, or nothing for "none"."""
    if autocast == "none":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if autocast == "bf16" else torch.float16
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)
