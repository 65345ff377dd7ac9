"""``RUN/endpoint.json``: where a running `som serve` answers.

Why a file: a server on a Slurm node gets its node and port only once the job runs (and
again after a requeue). The job writes this file atomically when it listens, and readers
(`som serve stop`, the ``served:RUN`` model spec of `som eval`, `som chat --remote`) find the
server through it. Fields: ``url`` (the OpenAI API root, ``http://host:port/v1``), ``health``,
``node``, ``host``, ``port``, ``model`` (the name to send), ``job_id`` (None when local),
``pid``, ``restarts`` (Slurm requeues so far), ``api_key_required``, ``started`` (Unix time).
The API key itself is never written: clients read it from $SOMFLOW_API_KEY.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

ENDPOINT_FILE = "endpoint.json"
JOB_FILE = "serve-job.json"
"""Written at submission (job id, submission folder) so `som serve stop` works before the
server listens."""
API_KEY_ENV = "SOMFLOW_API_KEY"


class EndpointError(RuntimeError):
    """No usable endpoint in a run folder; the message says how to start one."""


def write_json_atomic(path: Path, value: dict[str, Any]) -> None:
    """Write `value` to `path` through a temporary file and a rename: readers see the old or
    the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(value, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_endpoint(run_dir: str | Path, info: dict[str, Any]) -> Path:
    path = Path(run_dir) / ENDPOINT_FILE
    write_json_atomic(path, info)
    return path


def read_endpoint(run_dir: str | Path) -> dict[str, Any]:
    """The endpoint of the server of `run_dir`; EndpointError when there is none (yet)."""
    path = Path(run_dir) / ENDPOINT_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise EndpointError(
            f"no {ENDPOINT_FILE} in {run_dir}: no server is running for it (start one with "
            f"`som serve MODEL --run-dir {run_dir}`, or wait for its Slurm job to start)"
        ) from None
    except (OSError, ValueError) as exc:
        raise EndpointError(f"{path} is unreadable: {exc}") from None
    if not isinstance(info, dict) or not info.get("url") or not info.get("model"):
        raise EndpointError(f"{path} lacks url/model: {str(info)[:200]}")
    return info


def remove_endpoint(run_dir: str | Path, *, pid: int | None = None, job_id: str | None = None) -> bool:
    """Remove the endpoint file if it is still the one of `pid` / `job_id` (a restarted
    server may have written a newer one); returns whether it was removed."""
    path = Path(run_dir) / ENDPOINT_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if pid is not None and info.get("pid") != pid:
        return False
    if job_id is not None and str(info.get("job_id")) != str(job_id):
        return False
    path.unlink(missing_ok=True)
    return True
