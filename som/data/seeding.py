"""Seeded RNGs for instruction data: one per (run seed, what it is for), never a shared stream.

Why hash the parts into a fresh RNG instead of drawing from one seeded stream: the records of
an image (its listing question, its QA turns) and the mixer's shuffle then depend only on the
seed and on that image or purpose, not on what else is in the batch or in which order it is
processed, so re-running part of a build reproduces exactly the same records.
"""

from __future__ import annotations

import hashlib
import random


def seeded_random(*parts: object) -> random.Random:
    """An RNG seeded by `parts` alone (joined with ':' and hashed with SHA-256)."""
    digest = hashlib.sha256(":".join(str(part) for part in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def seeded_rng(seed: int, sha256: str, purpose: str) -> random.Random:
    """An RNG that depends only on the run seed, the image and what it is used for."""
    if not sha256:
        raise ValueError("the marks JSON has no sha256; records are seeded and named by it")
    return seeded_random(seed, sha256, purpose)
