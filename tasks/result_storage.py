"""Where Prefect persists task results and cache records: next to the dataset they describe.

For object storage the block holds only the base URL; credentials are resolved by
`som.storage` in each process (environment or config file), so no secret is ever written into
Prefect's database or shown in its UI.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect.filesystems import RemoteFileSystem

from som import storage


class SomflowStorage(RemoteFileSystem):
    """A RemoteFileSystem whose fsspec filesystem comes from `som.storage` (fork-safe, no secrets)."""

    _block_type_name = "Somflow Storage"

    @property
    def filesystem(self):  # type: ignore[override]
        return storage.resolve(self.basepath)[0]


def result_storage_for(dest: str) -> Path | SomflowStorage:
    """Result storage under `<dest>/_prefect`: a Path for local datasets, else a saved block."""
    url = storage.join(dest, "_prefect")
    if storage.protocol_of(url) in storage.LOCAL_PROTOCOLS:
        return Path(storage.resolve(url)[1])
    block = SomflowStorage(basepath=url)
    name = "somflow-" + hashlib.sha256(url.encode()).hexdigest()[:16]
    block.save(name, overwrite=True)
    return block
