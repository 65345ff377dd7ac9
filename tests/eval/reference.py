"""Paths into ../shared/reference, the real benchmark files the scores are checked against.

The folder exists on development machines only; tests that need it skip elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REFERENCE = Path(os.environ.get("SOMFLOW_REFERENCE", Path(__file__).resolve().parents[3] / "shared" / "reference"))


def reference(*parts: str) -> Path:
    """A path under the reference folder, or skip the calling test when it is absent."""
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not available: {path}")
    return path
