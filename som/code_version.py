"""One hash of a set of source files, for cache keys that must change when the code does.

Why: a cached dataset shard or training run is only valid for the code that made it. Both
caches key on a hash of the files that turn inputs into outputs (name and bytes of each), and
they must hash them the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def source_hash(paths: Iterable[Path]) -> str:
    """16 hex digits of sha256 over (file name, NUL, bytes) of each file, in path order."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
