"""Segment Anything's automatic mask generator behind the segmenter protocol.

Checkpoints are fetched once from Meta's official URLs into a cache folder and verified by
sha256; offline, a missing checkpoint raises an error that says where to put the file.
torch and segment_anything are imported only when a SAM segmenter is built.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import urllib.error
import urllib.request
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from som.devices import enable_tf32
from som.segment.automask import AutoMaskKnobs, autocast_context
from som.segment.mask import Mask
from som.settings import Real

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=MutableMapping[str, Any])

CHECKPOINTS: dict[str, tuple[str, str]] = {
    "vit_h": (
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
    "vit_l": (
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    "vit_b": (
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
}


class SamParams(AutoMaskKnobs):
    """Model choice plus every knob of segment-anything's SamAutomaticMaskGenerator (the shared
    ones in `AutoMaskKnobs`)."""

    model_type: Literal["vit_b", "vit_l", "vit_h"] = "vit_h"
    checkpoint: str | None = None  # a local .pth; None = the official one, cached
    cache_dir: str | None = None
    crop_nms_thresh: Real = 0.7
    min_mask_region_area: int = 0


def default_cache_dir() -> Path:
    """$SOMFLOW_CACHE, else $XDG_CACHE_HOME/somflow, else ~/.cache/somflow."""
    if os.environ.get("SOMFLOW_CACHE"):
        return Path(os.environ["SOMFLOW_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "somflow"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def official_checkpoint(model_type: str, cache_dir: str | Path | None = None) -> Path:
    """Path of the official checkpoint, downloading and verifying it on first use."""
    url, expected = CHECKPOINTS[model_type]
    folder = Path(cache_dir) if cache_dir else default_cache_dir() / "sam"
    target = folder / url.rsplit("/", 1)[1]
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    log.info("downloading SAM %s checkpoint from %s to %s", model_type, url, target)
    try:
        _download(url, partial)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise RuntimeError(
            f"cannot download the SAM {model_type} checkpoint ({exc}). Offline? Download {url} "
            f"yourself and place it at {target}, or pass checkpoint=PATH; or use a CPU segmenter "
            "(--segmenter slic) that needs no weights."
        ) from exc
    actual = sha256_file(partial)
    if actual != expected:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"{url} downloaded with sha256 {actual}, expected {expected}")
    partial.replace(target)
    return target


def _download(url: str, destination: Path) -> None:
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=destination.stem) as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class SamSegmenter:
    """SAM's automatic mask generator; `model` lets tests pass a tiny randomly built Sam."""

    name = "sam"

    def __init__(self, params: SamParams, model: Any = None) -> None:
        from segment_anything import sam_model_registry

        self.params = params
        self.device = resolve_device(params.device)
        if model is None:
            checkpoint = params.checkpoint or official_checkpoint(params.model_type, params.cache_dir)
            model = sam_model_registry[params.model_type](checkpoint=str(checkpoint))
        model.to(self.device).eval()
        if params.autocast == "none":
            # Precision default: TF32 on Ampere+ GPUs (fp32 range, ~2x faster ViT-H), not bf16
            # autocast, whose masks have not yet been compared with fp32 on a GPU; autocast
            # stays an explicit choice. See som.devices.enable_tf32, benchmarks/gpu_check.py.
            enable_tf32(self.device)
        knobs = params.model_dump(exclude={"model_type", "checkpoint", "cache_dir", "device", "autocast"})
        self.generator = _generator_class()(model, output_mode="binary_mask", **knobs)

    def generate(self, image: np.ndarray, *, source: str | None = None) -> list[Mask]:
        import torch

        with torch.inference_mode(), self._autocast():
            records = self.generator.generate(image)
        return [Mask.from_full(r["segmentation"], score=float(r["predicted_iou"])) for r in records if r["area"] > 0]

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast_context(self.params.autocast, self.device)

    def describe(self) -> dict[str, Any]:
        params = self.params.model_dump(exclude={"cache_dir"})
        if params["checkpoint"]:
            params["checkpoint"] = Path(params["checkpoint"]).name
        return {"name": self.name, "params": params}


def _generator_class() -> type:
    """SamAutomaticMaskGenerator whose per-batch outputs are float32 even under autocast.

    Under bf16/fp16 autocast the mask decoder returns half-precision IoU predictions, and
    segment-anything's MaskData.to_numpy() then fails ("Got unsupported ScalarType BFloat16").
    """
    from segment_anything import SamAutomaticMaskGenerator

    class Float32OutputGenerator(SamAutomaticMaskGenerator):
        def _process_batch(self, *args: Any, **kwargs: Any) -> Any:
            return half_to_float32(super()._process_batch(*args, **kwargs))

    return Float32OutputGenerator


def half_to_float32(data: _M) -> _M:
    """Cast the bf16/fp16 tensors among `data`'s values to float32, in place.

    Autocast makes SAM's heads return half precision; post-processing that runs after the
    autocast region (numpy conversion, torchvision NMS on the CPU) rejects it or mixes dtypes.
    Shared by the `sam` and `hf-sam` segmenters.
    """
    import torch

    for key, value in list(data.items()):
        if isinstance(value, torch.Tensor) and value.dtype in (torch.bfloat16, torch.float16):
            data[key] = value.float()
    return data
