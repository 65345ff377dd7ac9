"""S3 credentials from a Prefect Secret block, for deployments that keep them in Prefect.

The Secret holds a JSON object with the AWS_* names (or key / secret / region /
endpoint_url). They are put into this process's environment, where `som.storage` reads them
and from where the local Dask workers this flow starts inherit them. Values are never logged.
Workers of a remote cluster (--scheduler) need the credentials in their own environment.
"""

from __future__ import annotations

import json
import os

from som import storage
from som.storage import S3Settings

ENV_NAMES = {
    "key": "AWS_ACCESS_KEY_ID",
    "secret": "AWS_SECRET_ACCESS_KEY",
    "token": "AWS_SESSION_TOKEN",
    "region": "AWS_DEFAULT_REGION",
    "endpoint_url": "AWS_ENDPOINT_URL",
}


def use_storage_secret(name: str) -> S3Settings:
    """Load the Secret block `name` into the environment; returns the (masked-repr) settings."""
    from prefect.blocks.system import Secret

    value = Secret.load(name).get()
    try:
        data = json.loads(value) if isinstance(value, str) else dict(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Secret block {name!r} must hold a JSON object of S3 settings") from exc
    settings = S3Settings.from_mapping(data)
    for field, env_name in ENV_NAMES.items():
        if getattr(settings, field):
            os.environ[env_name] = getattr(settings, field)
    storage.clear_filesystems()
    return settings
