"""Precision choices that depend on the GPU, decided in one place for training, evaluation and
segmentation.

Why not ``torch.cuda.is_bf16_supported()``: by default it also returns True when bf16 is only
*emulated* (V100, T4: compute capability 7.x), where bf16 matmuls are many times slower than
fp16 and no faster than fp32. "auto" must mean native support: compute capability >= 8.0
(Ampere and later), or ROCm. TF32 likewise exists only from Ampere on.

torch is imported lazily so that importing this module stays cheap for CPU-only tools.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

AMPERE = (8, 0)


def _cuda_index(device: Any) -> int | None:
    """The CUDA index of `device` (a torch.device, "cuda:1", an int, None for the current one);
    None when it is not a CUDA device or CUDA is unavailable."""
    import torch

    if not torch.cuda.is_available():
        return None
    if device is None:
        return torch.cuda.current_device()
    if isinstance(device, int):
        return device
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.current_device() if device.index is None else device.index


def compute_capability(device: Any = None) -> tuple[int, int] | None:
    """(major, minor) of a CUDA device, None for CPU or without CUDA."""
    import torch

    index = _cuda_index(device)
    if index is None:
        return None
    return tuple(torch.cuda.get_device_capability(index))  # type: ignore[return-value]


def native_bf16(device: Any = None) -> bool:
    """True when `device` computes bf16 in hardware (Ampere+ CUDA, or ROCm), not by emulation."""
    import torch

    if _cuda_index(device) is None:
        return False
    if torch.version.hip:
        return True
    capability = compute_capability(device)
    return capability is not None and capability >= AMPERE


def auto_dtype(device: Any, *, without_bf16: torch.dtype | None = None) -> torch.dtype:
    """The "auto" dtype on `device`: bf16 with native support, else `without_bf16` on a CUDA
    device that lacks it (default fp32: training refuses fp16), fp32 on the CPU."""
    import torch

    if native_bf16(device):
        return torch.bfloat16
    if _cuda_index(device) is not None and without_bf16 is not None:
        return without_bf16
    return torch.float32


def enable_tf32(device: Any) -> bool:
    """Let fp32 matmuls and convolutions use TF32 on Ampere+ GPUs; returns whether it did.

    Process-wide (torch has no per-model switch). TF32 keeps fp32's range with a 10-bit
    mantissa in the multiplies; for SAM's image encoder it is the conservative speed-up (about
    2x for ViT-H on A100) compared with bf16 autocast, whose effect on masks has not been
    measured on a GPU yet (see benchmarks/gpu_check.py)."""
    import torch

    capability = compute_capability(device)
    if capability is None or capability < AMPERE:
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    log.info("TF32 matmuls enabled on %s (compute capability %d.%d)", device, *capability)
    return True
