"""S3 connection settings: environment, then a config file, then explicit options.

See the `som.storage` docstring for the precedence; secrets never reach logs or reprs.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from som.storage.errors import StorageConfigError

log = logging.getLogger(__name__)

CONFIG_ENV_VAR = "SOMFLOW_STORAGE_CONFIG"
Options = Mapping[str, Any]

SETTING_NAMES = {
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
            target = SETTING_NAMES.get(name)
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
    extra = {k: v for k, v in options.items() if k not in SETTING_NAMES and k != "config_file"}
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
