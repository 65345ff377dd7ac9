"""A test-only segmenter that kills its own worker process on chosen images, as the OOM killer
would: SIGKILL, no Python clean-up. It never kills the process that built it (the test run)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np

from som.segment import SEGMENTERS, Segmenter, SegmenterSpec, build_segmenter
from som.segment.mask import Mask
from som.settings import Settings


class DyingParams(Settings):
    attempts_dir: str  # one file per attempt at a killer image, named by the attempting pid
    kill_word: str = "killer"


class DyingSegmenter:
    """slic, except that sources whose name holds `kill_word` SIGKILL the marking worker."""

    name = "dying"

    def __init__(self, params: DyingParams) -> None:
        self.params = params
        self.parent_pid = os.getpid()
        self.inner: Segmenter = build_segmenter("slic", {"n_segments": 8})

    def generate(self, image: np.ndarray, *, source: str | None = None) -> list[Mask]:
        if source is not None and self.params.kill_word in Path(source).name:
            Path(self.params.attempts_dir, str(os.getpid())).touch()
            if os.getpid() != self.parent_pid:
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("refusing to kill the process that built this segmenter")
        return self.inner.generate(image, source=source)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "params": {"kill_word": self.params.kill_word}}


def register_dying() -> None:
    """Make `--segmenter dying` available in this process (the CLI looks segmenters up by name)."""
    SEGMENTERS["dying"] = SegmenterSpec(
        "dying", DyingParams, DyingSegmenter, "test only: SIGKILLs its worker on chosen images"
    )
