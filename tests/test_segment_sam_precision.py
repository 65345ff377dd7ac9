"""SAM's masks under bf16 autocast against fp32, on a GPU (skipped elsewhere).

The `sam` default is fp32 with TF32 on Ampere+ (som.devices.enable_tf32); bf16 autocast stays
opt-in until this test has passed on real GPUs. Recorded tolerance: each fp32 mask's best IoU
among the bf16 masks averages >= 0.9 (benchmarks/gpu_check.py uses the same number); not yet
measured, as no GPU was available when it was written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

MEAN_IOU_TOLERANCE = 0.9
PHOTO = Path(__file__).resolve().parent / "data" / "waterview.jpg"


def _mean_best_iou(reference: list, other: list) -> float:
    others = [m.full() for m in other]
    scores = []
    for mask in reference:
        full = mask.full()
        scores.append(
            max((np.logical_and(full, o).sum() / max(np.logical_or(full, o).sum(), 1) for o in others), default=0.0)
        )
    return float(np.mean(scores)) if scores else 1.0


@pytest.mark.gpu
def test_bf16_autocast_masks_match_fp32_within_tolerance() -> None:
    from PIL import Image
    from segment_anything import sam_model_registry

    from som.segment.sam import SamParams, SamSegmenter

    image = np.asarray(Image.open(PHOTO).convert("RGB"))
    torch.manual_seed(0)
    model = sam_model_registry["vit_b"](checkpoint=None)
    knobs = {
        "model_type": "vit_b",
        "device": "cuda",
        "points_per_side": 16,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
    }
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        fp32_segmenter = SamSegmenter(SamParams(**knobs), model=model)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # strict
        reference = fp32_segmenter.generate(image)
        bf16 = SamSegmenter(SamParams(autocast="bf16", **knobs), model=model).generate(image)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert reference
    assert _mean_best_iou(reference, bf16) >= MEAN_IOU_TOLERANCE
