"""pytest plugin: a marked image and its marks JSON, the inputs of the chat API and describer tests
(the chat server they talk to is tests/plugins/chat.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def marked_image() -> bytes:
    return (DATA / "waterview.jpg").read_bytes()


@pytest.fixture
def marks() -> dict[str, Any]:
    """A marks JSON (README "Marking images") with three tags; masks are not needed here."""
    return {
        "image": "photos/waterview.jpg",
        "sha256": "ab" * 32,
        "width": 640,
        "height": 480,
        "segmenter": {"name": "slic", "params": {}},
        "style": {"label_mode": "number"},
        "marks": [
            {
                "id": i,
                "label": str(i),
                "bbox": [0, 0, 10, 10],
                "area": 100,
                "position": [5, 5],
                "score": 1.0,
                "category": None,
            }
            for i in (1, 2, 3)
        ],
    }
