"""One filesystem per process, protocol and options; fork-safe; S3 errors explained.

Why per process: s3fs runs its requests on an asyncio loop in a background thread, and a
loop or HTTP session inherited through ``fork`` is dead or shared with the parent (see the
`som.storage` docstring).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator

import fsspec
from fsspec.spec import AbstractFileSystem
from fsspec.utils import get_protocol

from som.storage.errors import StorageAuthError
from som.storage.retry_logging import log_botocore_retries, log_s3fs_retries
from som.storage.settings import CONFIG_ENV_VAR, SETTING_NAMES, Options, s3_options

log = logging.getLogger(__name__)

S3_PROTOCOLS = frozenset({"s3", "s3a"})
LOCAL_PROTOCOLS = frozenset({"file", "local"})

_FILESYSTEMS: dict[tuple[int, str, str], AbstractFileSystem] = {}
_INHERITED: list[AbstractFileSystem] = []  # parent's instances, kept alive in a forked child
_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()
    _INHERITED.extend(_FILESYSTEMS.values())
    _FILESYSTEMS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def protocol_of(url: str) -> str:
    """The fsspec protocol of a URL; plain paths are ``file``."""
    protocol = get_protocol(str(url))
    return "s3" if protocol == "s3a" else protocol


_S3_ONLY_OPTIONS = frozenset(SETTING_NAMES) | {"config_file", "client_kwargs", "config_kwargs"}


def filesystem(protocol: str, options: Options | None = None) -> AbstractFileSystem:
    """This process's filesystem for `protocol` and `options` (made on first use).

    One `options` mapping can serve every URL of a job: S3 settings in it are ignored for
    other protocols (a local source and an S3 destination share it)."""
    if protocol in S3_PROTOCOLS:
        kwargs = s3_options(options)
    else:
        kwargs = {k: v for k, v in (options or {}).items() if k not in _S3_ONLY_OPTIONS}
    token = json.dumps(kwargs, sort_keys=True, default=repr)
    cache_key = (os.getpid(), protocol, token)
    with _LOCK:
        fs = _FILESYSTEMS.get(cache_key)
        if fs is None:
            fs = fsspec.filesystem(protocol, skip_instance_cache=True, **kwargs)
            if protocol in S3_PROTOCOLS:
                log_botocore_retries(fs, kwargs)
                log_s3fs_retries()
            _FILESYSTEMS[cache_key] = fs
            log.debug("new %s filesystem in pid %d", protocol, os.getpid())
    return fs


def resolve(url: str, options: Options | None = None) -> tuple[AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URL or plain path."""
    url = os.fspath(url)
    protocol = protocol_of(url)
    fs = filesystem(protocol, options)
    return fs, fs._strip_protocol(url)


def clear_filesystems() -> None:
    """Forget cached filesystems (e.g. after credentials changed in the environment)."""
    with _LOCK:
        _FILESYSTEMS.clear()


@contextlib.contextmanager
def explained(url: str) -> Iterator[None]:
    """Turn S3's bare 'access denied' into an error that says what to check."""
    try:
        yield
    except StorageAuthError:
        raise
    except PermissionError as exc:
        if protocol_of(url) not in S3_PROTOCOLS:
            raise
        raise StorageAuthError(
            f"S3 refused access to {url}: {exc}. Check AWS_ACCESS_KEY_ID / "
            f"AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL (or ${CONFIG_ENV_VAR}); for the local "
            "SeaweedFS, `source <state>/s3.env` written by infra/storage/seaweed.py up"
        ) from exc
