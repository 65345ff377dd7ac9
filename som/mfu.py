"""Model FLOPs utilisation: the dense bf16 peak of known GPUs, and the fraction of it a run's
analytic FLOPs reach (as nanoGPT's `estimate_mfu` and PaLM's MFU define it).

Why a table matched by name: torch reports a device's name (`torch.cuda.get_device_name`), not
its peak; the peaks are the vendor's dense (no structured sparsity) bf16 tensor-core numbers,
so MFU compares like with like whatever precision a run chose. A GPU not in the table gets no
MFU rather than a guessed one, and the log says so once.

torch is imported only to name a CUDA device, so the table and `utilization` cost nothing to
import.
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger(__name__)

# (pattern searched in the device name, dense bf16 FLOP/s); the first match wins, so more
# specific names (H100 PCIe, H200 NVL) come before the family (H100, H200).
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    (r"GH200", 989e12),
    (r"H200 NVL", 835e12),
    (r"H200", 989e12),  # SXM
    (r"H100 NVL", 835e12),
    (r"H100 PCIe", 756e12),
    (r"H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    (r"B200", 2250e12),
    (r"A100", 312e12),  # SXM4 and PCIe alike
    (r"L40S", 362e12),
    (r"\bL4\b", 121e12),
    (r"\bA10\b", 125e12),
)

_unknown_reported: set[str] = set()


def peak_bf16_flops(device_name: str) -> float | None:
    """The dense bf16 peak FLOP/s of a GPU by its name; None when it is not in the table."""
    for pattern, peak in PEAK_BF16_FLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peak
    return None


def device_peak_flops(device: Any) -> float | None:
    """The peak of a torch device (a torch.device or a string like "cuda:1"); None on the CPU,
    and for a GPU not in the table, which is logged once per name."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    peak = peak_bf16_flops(name)
    if peak is None and name not in _unknown_reported:
        _unknown_reported.add(name)
        log.warning("MFU not reported: no dense bf16 peak known for %r (add it to som.mfu.PEAK_BF16_FLOPS)", name)
    return peak


def format_flops(flops: float) -> str:
    """FLOPs with a decimal prefix that keeps 3 significant digits: "5.96 TFLOP", "42.1 MFLOP"."""
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(flops) >= scale:
            return f"{flops / scale:.3g} {prefix}FLOP"
    return f"{flops:.3g} FLOP"


def utilization(flops: float, seconds: float, peak: float | None, devices: int = 1) -> float | None:
    """The fraction of `devices` x `peak` that `flops` done in `seconds` reach; None without a
    peak."""
    if peak is None or seconds <= 0:
        return None
    return flops / (seconds * devices * peak)
