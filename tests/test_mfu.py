"""som.mfu: dense bf16 peaks matched from CUDA device names, and utilisation."""

from __future__ import annotations

import logging

import pytest

from som import mfu


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA H200 NVL", 835e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA A10G", None),
        ("Tesla V100-SXM2-32GB", None),
    ],
)
def test_peak_by_device_name(name: str, peak: float | None) -> None:
    assert mfu.peak_bf16_flops(name) == peak


def test_format_flops() -> None:
    assert mfu.format_flops(5.961e12) == "5.96 TFLOP"
    assert mfu.format_flops(42_100_000) == "42.1 MFLOP"
    assert mfu.format_flops(2.25e15) == "2.25 PFLOP"
    assert mfu.format_flops(12) == "12 FLOP"


def test_utilization() -> None:
    assert mfu.utilization(989e12, 1.0, 989e12) == 1.0
    assert mfu.utilization(1e12, 0.5, 1e13, devices=4) == pytest.approx(0.05)
    assert mfu.utilization(1e12, 0.5, None) is None


def test_cpu_has_no_peak_and_an_unknown_gpu_is_reported_once(monkeypatch, caplog) -> None:
    import torch

    assert mfu.device_peak_flops("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA Imaginary X1")
    monkeypatch.setattr(mfu, "_unknown_reported", set())
    with caplog.at_level(logging.WARNING, logger="som.mfu"):
        assert mfu.device_peak_flops("cuda") is None
        assert mfu.device_peak_flops("cuda:0") is None
    assert [r.getMessage() for r in caplog.records] == [
        "MFU not reported: no dense bf16 peak known for 'NVIDIA Imaginary X1' (add it to som.mfu.PEAK_BF16_FLOPS)"
    ]
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert mfu.device_peak_flops("cuda") == 989e12
