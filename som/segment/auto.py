"""`--segmenter auto`: SAM when its checkpoint is already available, otherwise SLIC, loudly."""

from __future__ import annotations

import logging

from som.segment.sam import CHECKPOINTS, default_cache_dir

log = logging.getLogger(__name__)


def choose_segmenter(params: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Pick (name, params) without downloading anything."""
    model_type = params.get("model_type", "vit_h")
    url = CHECKPOINTS.get(model_type, CHECKPOINTS["vit_h"])[0]
    cached = default_cache_dir() / "sam" / url.rsplit("/", 1)[1]
    if params.get("checkpoint") or cached.exists():
        return "sam", params
    log.warning(
        "no SAM %s checkpoint at %s: using the CPU 'slic' segmenter instead. Its superpixels are "
        "not object masks; for real datasets run with --segmenter sam (downloads %s once).",
        model_type,
        cached,
        url,
    )
    return "slic", {}
