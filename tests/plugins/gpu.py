"""pytest plugin: tests marked ``gpu`` are skipped where no CUDA device is visible.

One place decides it, at collection, instead of a `skipif(not torch.cuda.is_available())` on
each test; torch is imported only when a collected test carries the marker.
"""

from __future__ import annotations

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items or _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in gpu_items:
        item.add_marker(skip)
