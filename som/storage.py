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

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import fsspec
from fsspec.spec import AbstractFileSystem
from fsspec.utils import get_protocol

from som.images import IMAGE_EXTENSIONS
from som.s3fs_retries import log_s3fs_retries

log = logging.getLogger(__name__)

CONFIG_ENV_VAR = "SOMFLOW_STORAGE_CONFIG"
S3_PROTOCOLS = frozenset({"s3", "s3a"})
LOCAL_PROTOCOLS = frozenset({"file", "local"})
HASH_CHUNK_SIZE = 8 * 2**20
"""Streaming hash reads: large enough for few S3 range requests, small enough for memory."""

Options = Mapping[str, Any]

_SETTING_ALIASES = {
    "AWS_ACCESS_KEY_ID": "key",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "AWS_SESSION_TOKEN": "token",
    "AWS_DEFAULT_REGION": "region",
    "AWS_REGION": "region",
    "AWS_ENDPOINT_URL": "endpoint_url",
    "AWS_ENDPOINT_URL_S3": "endpoint_url",
    "key": "key",
    "secret": "secret",
    "token": "token",
    "region": "region",
    "endpoint_url": "endpoint_url",
}
# Within one source, the more specific name wins (botocore's own rule for endpoints).
_PREFERRED = ("AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION")


class StorageError(Exception):
    """Base of the errors this module raises itself."""


class StorageConfigError(StorageError, ValueError):
    """A storage config file or option that cannot be used; the message names it."""


class StorageAuthError(StorageError, PermissionError):
    """S3 refused the credentials or the permission (subclass of PermissionError)."""


# ----------------------------------------------------------------------------- settings


def _mask(value: str | None) -> str | None:
    if value is None:
        return None
    return value[:4] + "..." if len(value) > 8 else "***"


@dataclass(frozen=True)
class S3Settings:
    """Resolved S3 connection settings. The repr hides the secret and the token."""

    key: str | None = None
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint_url: str | None = None

    def __repr__(self) -> str:
        return (
            f"S3Settings(key={_mask(self.key)!r}, secret={'***' if self.secret else None}, "
            f"token={'***' if self.token else None}, region={self.region!r}, "
            f"endpoint_url={self.endpoint_url!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> S3Settings:
        """Read AWS_* environment names or the short names; unknown keys are ignored."""
        found: dict[str, str] = {}
        for name, value in values.items():
            target = _SETTING_ALIASES.get(name)
            if target is None or value in (None, ""):
                continue
            if target in found and name not in _PREFERRED:
                continue
            found[target] = str(value)
        return cls(**found)

    def overlay(self, other: S3Settings) -> S3Settings:
        """These settings with every field that `other` sets replaced."""
        merged = {
            name: getattr(other, name) or getattr(self, name)
            for name in ("key", "secret", "token", "region", "endpoint_url")
        }
        return S3Settings(**merged)

    def fsspec_options(self) -> dict[str, Any]:
        """s3fs keyword arguments. The region goes through botocore's Config, not
        ``client_kwargs``: s3fs turns a client region into a LocationConstraint on bucket
        creation, which S3-compatible servers reject (INFRA-NOTES)."""
        opts: dict[str, Any] = {}
        for name in ("key", "secret", "token", "endpoint_url"):
            value = getattr(self, name)
            if value:
                opts[name] = value
        if self.region:
            opts["config_kwargs"] = {"region_name": self.region}
        return opts


def read_config_file(path: str | os.PathLike[str]) -> S3Settings:
    """Settings from a JSON object or an env file (``[export] NAME=value`` lines)."""
    file = Path(path).expanduser()
    try:
        text = file.read_text()
    except OSError as exc:
        raise StorageConfigError(
            f"cannot read storage config {file} ({exc}); fix ${CONFIG_ENV_VAR} or options['config_file']"
        ) from exc
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StorageConfigError(f"storage config {file} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise StorageConfigError(f"storage config {file} must hold a JSON object")
        return S3Settings.from_mapping(data)
    return S3Settings.from_mapping(_parse_env_lines(text, file))


def _parse_env_lines(text: str, file: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
            raise StorageConfigError(f"{file}:{number}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def load_s3_settings(options: Options | None = None, env: Mapping[str, str] | None = None) -> S3Settings:
    """Environment, then config file, then explicit options (later wins)."""
    env = os.environ if env is None else env
    options = options or {}
    settings = S3Settings.from_mapping(env)
    config_file = options.get("config_file") or env.get(CONFIG_ENV_VAR)
    if config_file:
        settings = settings.overlay(read_config_file(config_file))
    settings = settings.overlay(S3Settings.from_mapping(options))
    log.debug("S3 settings resolved: %r", settings)
    return settings


def s3_options(options: Options | None = None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The complete s3fs keyword arguments for `options` (see the module docstring)."""
    options = dict(options or {})
    settings = load_s3_settings(options, env)
    resolved = settings.fsspec_options()
    extra = {k: v for k, v in options.items() if k not in _SETTING_ALIASES and k != "config_file"}
    client_kwargs = dict(extra.pop("client_kwargs", None) or {})
    config_kwargs = {**resolved.pop("config_kwargs", {}), **(extra.pop("config_kwargs", None) or {})}
    if "region_name" in client_kwargs:
        config_kwargs.setdefault("region_name", client_kwargs.pop("region_name"))
        log.debug("moved client_kwargs.region_name to config_kwargs (no LocationConstraint)")
    resolved.update(extra)
    if client_kwargs:
        resolved["client_kwargs"] = client_kwargs
    if config_kwargs:
        resolved["config_kwargs"] = config_kwargs
    resolved.setdefault("use_listings_cache", False)
    return resolved


# ----------------------------------------------------------------------------- filesystems

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


_S3_ONLY_OPTIONS = frozenset(_SETTING_ALIASES) | {"config_file", "client_kwargs", "config_kwargs"}


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
                _log_s3_retries(fs, kwargs)
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
def _explained(url: str) -> Iterator[None]:
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


# ----------------------------------------------------------------------------- paths


def join(url: str, *parts: str) -> str:
    """Join path parts onto a URL with '/', whatever the protocol (S3 keys are not OS paths).

    Empty parts are skipped; '..' is refused because S3 keys do not resolve it."""
    base = os.fspath(url)
    pieces = [p.strip("/") for p in parts if p and p.strip("/")]
    for piece in pieces:
        if ".." in piece.split("/"):
            raise ValueError(f"refusing '..' in path part {piece!r}")
    if not pieces:
        return base
    scheme, sep, rest = base.partition("://")
    if not sep:
        scheme, rest = "", base
    head = rest.rstrip("/")
    if not head and rest.startswith("/"):
        head = ""  # a root such as "/" or "file:///": keep its single leading slash
        pieces[0] = "/" + pieces[0]
    joined = "/".join([head, *pieces]) if head else "/".join(pieces)
    return f"{scheme}{sep}{joined}"


_SHA256 = re.compile(r"[0-9a-f]{64}")


def content_key(sha256: str, suffix: str) -> str:
    """Key of a content-addressed object: ``marks/<sha256>.<suffix>``.

    Keyed by the hash of the source bytes, so the same image is stored once however many
    times or under however many names it is submitted."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
    suffix = suffix.lstrip(".")
    if not suffix or "/" in suffix:
        raise ValueError(f"bad suffix {suffix!r}")
    return f"marks/{sha256}.{suffix}"


# ----------------------------------------------------------------------------- reads


def read_bytes(url: str, options: Options | None = None) -> bytes:
    """The whole object."""
    fs, path = resolve(url, options)
    with _explained(url):
        return fs.cat_file(path)


def exists(url: str, options: Options | None = None) -> bool:
    """Whether an object (or a non-empty prefix / folder) exists, asked fresh."""
    fs, path = resolve(url, options)
    with _explained(url):
        fs.invalidate_cache(path)
        return bool(fs.exists(path))


def sha256_of(url: str, options: Options | None = None, chunk_size: int = HASH_CHUNK_SIZE) -> str:
    """Hex sha256 of an object, streamed in chunks (never the whole object in memory)."""
    fs, path = resolve(url, options)
    digest = hashlib.sha256()
    open_kwargs: dict[str, Any] = {"block_size": chunk_size}
    if protocol_of(url) in S3_PROTOCOLS:
        open_kwargs["cache_type"] = "none"  # each read is one range GET; no read-ahead copy
    with _explained(url), fs.open(path, "rb", **open_kwargs) as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    return frozenset("." + e.lower().lstrip(".") for e in extensions)


def list_images(
    prefix_url: str, extensions: Iterable[str] = IMAGE_EXTENSIONS, options: Options | None = None
) -> list[str]:
    """Every object under a prefix/folder whose extension matches (case-insensitive),
    recursively, as URLs in the caller's own form, sorted so every run sees the same order.

    Hidden names (starting with '.') are skipped: they include temp files of atomic writes."""
    wanted = _normalise_extensions(extensions)
    fs, root = resolve(prefix_url, options)
    root = root.rstrip("/")
    with _explained(prefix_url):
        fs.invalidate_cache(root)
        try:
            found = fs.find(root)
        except FileNotFoundError:
            found = []
    base = os.fspath(prefix_url)
    urls = []
    for path in found:
        if not path.startswith(root + "/"):  # "images2/x.jpg" is not under "images"
            continue
        relative = path[len(root) + 1 :]
        name = relative.rsplit("/", 1)[-1]
        if name.startswith(".") or os.path.splitext(name)[1].lower() not in wanted:
            continue
        urls.append(join(base, relative))
    return sorted(urls)


# ----------------------------------------------------------------------------- writes

_UMASK = os.umask(0)
os.umask(_UMASK)


def _write_local_atomic(path: str, data: bytes, durable: bool) -> None:
    """Temp sibling + os.replace: readers see the old file or the new one, never a part."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600; look like open()
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:  # make the rename itself survive a crash
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_bytes_atomic(url: str, data: bytes, options: Options | None = None, durable: bool = True) -> None:
    """Write an object whole or not at all.

    Local files: temp sibling, fsync (when `durable`), os.replace. S3: one PUT (or a
    multipart upload that only appears on completion), atomic by the S3 contract.
    memory://: stored in one step."""
    fs, path = resolve(url, options)
    protocol = protocol_of(url)
    with _explained(url):
        if protocol in LOCAL_PROTOCOLS:
            _write_local_atomic(path, bytes(data), durable)
        else:
            fs.pipe_file(path, bytes(data))
        fs.invalidate_cache(path)


def write_many(
    items: Mapping[str, bytes], options: Options | None = None, batch_size: int | None = None, durable: bool = True
) -> int:
    """Write several objects; each is atomic, the set is not (a failure leaves some written).

    S3 objects go through one concurrent ``fs.pipe`` per filesystem (about 2x the
    throughput of one PUT after another, INFRA-NOTES); local files are written atomically one
    by one. Returns the number of objects written."""
    groups: dict[int, tuple[AbstractFileSystem, str, dict[str, bytes], str]] = {}
    for url, data in items.items():
        fs, path = resolve(url, options)
        group = groups.setdefault(id(fs), (fs, protocol_of(url), {}, url))
        group[2][path] = bytes(data)
    for fs, protocol, batch, first_url in groups.values():
        with _explained(first_url):
            if protocol in LOCAL_PROTOCOLS:
                for path, data in batch.items():
                    _write_local_atomic(path, data, durable)
            elif getattr(fs, "async_impl", False):
                fs.pipe(batch, batch_size=batch_size)  # concurrent PUTs
            else:
                fs.pipe(batch)
            for path in batch:
                fs.invalidate_cache(path)
    return len(items)


# ----------------------------------------------------------------------------- errors

_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EPIPE,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EAGAIN,
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequests",
        "RequestLimitExceeded",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
    }
)
_TRANSIENT_TEXT = ("SlowDown", "reduce your request rate", "ServiceUnavailable", "Service Unavailable", "InternalError")
_PERMANENT = (
    PermissionError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    StorageConfigError,
    ValueError,
    TypeError,
)


@lru_cache(maxsize=1)
def _transient_classes() -> tuple[type[BaseException], ...]:
    """Network error classes of the optional S3 stack, imported only when classifying."""
    classes: list[type[BaseException]] = []
    with contextlib.suppress(ImportError):
        from botocore import exceptions as be

        classes += [be.HTTPClientError, be.ConnectionError]
    with contextlib.suppress(ImportError):
        import aiohttp

        classes += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError]
    with contextlib.suppress(ImportError):
        from urllib3.exceptions import IncompleteRead, ProtocolError

        classes += [IncompleteRead, ProtocolError]
    return tuple(classes)


def _client_error_is_transient(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return False
    error = response.get("Error") or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
    return error.get("Code") in _TRANSIENT_CODES or int(status) >= 500 or int(status) == 429


def _one_is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):  # refused, reset, broken pipe, ...
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    if isinstance(exc, _transient_classes()):
        return True
    if _client_error_is_transient(exc):
        return True
    return any(text in str(exc) for text in _TRANSIENT_TEXT)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the operation later may succeed: connection refused or reset,
    timeouts, HTTP 5xx / 429, S3 SlowDown and throttling. Wrong credentials, missing objects
    and bad arguments are permanent. The whole cause/context chain is examined because s3fs
    wraps botocore errors (which wrap aiohttp and socket errors) in plain OSErrors."""
    if isinstance(exc, _PERMANENT):
        return False
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _one_is_transient(current):
            return True
        current = current.__cause__ or current.__context__
    return False


# ----------------------------------------------------------------------------- retry logging


def _max_attempts(config_kwargs: Mapping[str, Any]) -> int:
    """botocore's attempts per request (first try included) for these Config kwargs."""
    retries = dict(config_kwargs.get("retries") or {})
    if retries.get("total_max_attempts"):
        return int(retries["total_max_attempts"])
    if retries.get("max_attempts") is not None:
        return int(retries["max_attempts"]) + 1
    if os.environ.get("AWS_MAX_ATTEMPTS", "").isdigit():
        return int(os.environ["AWS_MAX_ATTEMPTS"])
    mode = retries.get("mode") or os.environ.get("AWS_RETRY_MODE") or "legacy"
    return 5 if mode == "legacy" else 3


class _RetryLogger:
    """A botocore `needs-retry` hook that logs each failed S3 attempt as a warning.

    botocore retries connection errors, 5xx and throttling itself (5 attempts, up to ~15 s of
    back-off in legacy mode) and logs that only at DEBUG, so an outage of that length passed
    without a line. The hook only observes: it returns None and leaves the decision to
    botocore's own handler."""

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts

    def __call__(
        self, attempts: int = 0, operation: Any = None, caught_exception: Any = None, response: Any = None, **_: Any
    ) -> None:
        if caught_exception is not None:
            error = f"{type(caught_exception).__name__}: {caught_exception}"
        else:
            status, code = _response_status(response)
            if not (status >= 500 or status == 429 or code in _TRANSIENT_CODES):
                return None
            error = f"HTTP {status}" + (f" {code}" if code else "")
        name = getattr(operation, "name", None) or "request"
        action = "retrying" if attempts < self.max_attempts else "giving up"
        log.warning("S3 %s attempt %d/%d failed (%s); %s", name, attempts, self.max_attempts, error, action)
        return None


def _response_status(response: Any) -> tuple[int, str]:
    """(HTTP status, S3 error code) of a botocore (http_response, parsed) pair."""
    if not isinstance(response, tuple) or len(response) != 2:
        return 0, ""
    http, parsed = response
    code = ((parsed or {}).get("Error") or {}).get("Code", "") if isinstance(parsed, Mapping) else ""
    return int(getattr(http, "status_code", 0) or 0), str(code or "")


def _log_s3_retries(fs: AbstractFileSystem, kwargs: Mapping[str, Any]) -> None:
    """Give an s3fs filesystem a botocore session whose clients log every retry (warning).

    The session is the one s3fs would create (same kwargs); s3fs only replaces it on a
    refresh, which would drop the logging, not change behaviour."""
    try:
        from aiobotocore.session import AioSession
    except ImportError:  # pragma: no cover - s3fs always brings aiobotocore
        return
    if getattr(fs, "session", True) is not None:
        return  # a session was given, or this s3fs has none to set
    session = AioSession(**getattr(fs, "kwargs", {}))
    session.register(
        "needs-retry.s3",
        _RetryLogger(_max_attempts(kwargs.get("config_kwargs") or {})),
        unique_id="somflow-log-s3-retries",
    )
    fs.session = session


# ----------------------------------------------------------------------------- conditional writes


class PreconditionFailed(StorageError):
    """A conditional write lost: the object changed (or appeared) since the caller read it."""


_CAS_LOCK = threading.Lock()  # memory:// and other in-process filesystems
_CAS_SUPPORT: dict[tuple[int, str, str], bool] = {}


def _content_tag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_precondition_failure(exc: BaseException) -> bool:
    """s3fs turns HTTP 412 (and AWS's 409 ConditionalRequestConflict) into a bare OSError;
    the botocore error underneath says which it was."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, Mapping):
            code = (response.get("Error") or {}).get("Code")
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return True
        if "pre-condition" in str(current) or "PreconditionFailed" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


@contextlib.contextmanager
def _local_cas_lock(path: str) -> Iterator[None]:
    """flock on a hidden sibling: serialises read-compare-replace across processes, and
    the kernel drops it when a holder dies (no stale lock after kill -9)."""
    import fcntl

    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, f".{os.path.basename(path)}.cas-lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def read_tagged(url: str, options: Options | None = None) -> tuple[bytes, str] | None:
    """(content, tag) read in one step, or None when the object does not exist.

    The tag is what `compare_and_swap` expects back: the S3 ETag, or the content's sha256
    for local and memory files."""
    fs, path = resolve(url, options)
    protocol = protocol_of(url)
    with _explained(url):
        if protocol in S3_PROTOCOLS:
            from fsspec.asyn import sync

            bucket, key, _ = fs.split_path(path)

            async def get() -> tuple[bytes, str]:
                response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
                async with response["Body"] as body:
                    return await body.read(), response["ETag"]

            try:
                return sync(fs.loop, get)
            except FileNotFoundError:
                return None
        try:
            data = fs.cat_file(path)
        except FileNotFoundError:
            return None
        return data, _content_tag(data)


def compare_and_swap(url: str, data: bytes, expected: str | None, options: Options | None = None) -> str:
    """Write `url` only if it still has tag `expected` (None: only if it does not exist);
    returns the new tag, raises PreconditionFailed otherwise.

    S3: one PutObject with If-Match / If-None-Match (the server decides atomically; check
    `supports_conditional_writes` for servers that ignore the headers). Local files: read,
    compare and os.replace under an flock. memory://: under a process lock."""
    fs, path = resolve(url, options)
    protocol = protocol_of(url)
    data = bytes(data)
    with _explained(url):
        if protocol in S3_PROTOCOLS:
            bucket, key, _ = fs.split_path(path)
            condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
            try:
                response = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
            except OSError as exc:
                if _is_precondition_failure(exc):
                    raise PreconditionFailed(f"{url} changed since it was read ({condition})") from exc
                raise
            finally:
                fs.invalidate_cache(path)
            return response["ETag"]
        guard = _local_cas_lock(path) if protocol in LOCAL_PROTOCOLS else _CAS_LOCK
        with guard:
            try:
                current: str | None = _content_tag(fs.cat_file(path))
            except FileNotFoundError:
                current = None
            if current != expected:
                raise PreconditionFailed(f"{url} has tag {current}, expected {expected}")
            if protocol in LOCAL_PROTOCOLS:
                _write_local_atomic(path, data, durable=True)
            else:
                fs.pipe_file(path, data)
            fs.invalidate_cache(path)
        return _content_tag(data)


def remove(url: str, options: Options | None = None) -> None:
    """Delete one object; a missing one is fine."""
    fs, path = resolve(url, options)
    with _explained(url), contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)
        fs.invalidate_cache(path)


def supports_conditional_writes(url: str, options: Options | None = None) -> bool:
    """Whether `compare_and_swap` is safe for `url`: always for local and memory files; for
    S3, probed once per endpoint and bucket (two If-None-Match PUTs of one key: the second
    must be refused), because some S3-compatible servers silently ignore the headers."""
    protocol = protocol_of(url)
    if protocol not in S3_PROTOCOLS:
        return True
    fs, path = resolve(url, options)
    bucket = fs.split_path(path)[0]
    cache_key = (os.getpid(), str(getattr(fs, "endpoint_url", None) or s3_options(options).get("endpoint_url")), bucket)
    if cache_key in _CAS_SUPPORT:
        return _CAS_SUPPORT[cache_key]
    import uuid

    probe = join(url.rsplit("/", 1)[0], f".cas-probe-{uuid.uuid4().hex}")
    try:
        compare_and_swap(probe, b"1", None, options)
        try:
            compare_and_swap(probe, b"2", None, options)
            supported = False
        except PreconditionFailed:
            supported = True
    finally:
        remove(probe, options)
    log.info(
        "S3 conditional writes %s on %s (bucket %s)", "supported" if supported else "IGNORED", cache_key[1], bucket
    )
    _CAS_SUPPORT[cache_key] = supported
    return supported
