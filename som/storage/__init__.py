"""Object storage by URL: ``s3://bucket/key``, ``file:///path`` or a plain path, ``memory://``.

Every pipeline stage reads and writes through these functions so the same code runs against
a local folder, a local SeaweedFS (``infra/storage/``) or a real S3 service.

S3 settings come from, lowest precedence first:
1. the standard AWS environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
   ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``/``AWS_REGION``,
   ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``);
2. a config file named by ``$SOMFLOW_STORAGE_CONFIG`` or ``options["config_file"]``: JSON with
   those names (or ``key``, ``secret``, ``token``, ``region``, ``endpoint_url``), or the
   ``s3.env`` file that ``infra/storage/seaweed.py`` writes;
3. the explicit ``options`` mapping (s3fs keyword arguments).
When nothing gives credentials, botocore's own chain (profiles, instance roles) applies.

The package, one job per module: `settings` (S3 settings), `filesystems` (per-process
filesystems, error explanations), `paths` (URL joins, content keys), `io` (reads, atomic
writes), `conditional` (compare-and-swap), `errors` (error classes, transient or not),
`retry_logging` (warnings for botocore's and s3fs's retries). Import from `som.storage`.

Design points:
- Secrets never reach logs or reprs: `S3Settings` masks them.
- Listings are always fresh: S3 filesystems are made with ``use_listings_cache=False`` and are
  never shared through fsspec's instance cache, because other processes (Dask workers) write
  to the same prefixes and a cached listing would hide their objects.
- Fork safety: s3fs runs its requests on an asyncio loop in a background thread, and a loop
  or HTTP session inherited through ``fork`` is dead or shared with the parent. Filesystems
  are therefore cached per process id; a forked child builds its own on first use, and the
  parent's instances are kept referenced (never finalized) in the child so their cleanup
  cannot touch connections that still belong to the parent.
"""

from som.storage.conditional import compare_and_swap, read_tagged, supports_conditional_writes
from som.storage.errors import (
    PreconditionFailed,
    StorageAuthError,
    StorageConfigError,
    StorageError,
    is_transient,
)
from som.storage.filesystems import (
    LOCAL_PROTOCOLS,
    S3_PROTOCOLS,
    clear_filesystems,
    filesystem,
    protocol_of,
    resolve,
)
from som.storage.io import (
    HASH_CHUNK_SIZE,
    exists,
    list_images,
    read_bytes,
    remove,
    sha256_of,
    write_bytes_atomic,
    write_many,
)
from som.storage.paths import content_key, join
from som.storage.settings import (
    CONFIG_ENV_VAR,
    Options,
    S3Settings,
    load_s3_settings,
    read_config_file,
    s3_options,
)

__all__ = [
    "CONFIG_ENV_VAR",
    "HASH_CHUNK_SIZE",
    "LOCAL_PROTOCOLS",
    "S3_PROTOCOLS",
    "Options",
    "PreconditionFailed",
    "S3Settings",
    "StorageAuthError",
    "StorageConfigError",
    "StorageError",
    "clear_filesystems",
    "compare_and_swap",
    "content_key",
    "exists",
    "filesystem",
    "is_transient",
    "join",
    "list_images",
    "load_s3_settings",
    "protocol_of",
    "read_bytes",
    "read_config_file",
    "read_tagged",
    "remove",
    "resolve",
    "s3_options",
    "sha256_of",
    "supports_conditional_writes",
    "write_bytes_atomic",
    "write_many",
]
