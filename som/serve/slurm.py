"""`som serve MODEL --slurm`: the server as a Slurm job (through som.jobs / submitit).

Why a job: the model needs a GPU node, and clients (an evaluation's ``served:RUN``, `som
chat`) need to find it. The job binds a free port on its node's address, writes
``RUN/endpoint.json`` atomically (som.serve.endpoint) and logs the URL; `som serve stop RUN`
cancels it. The job is `Checkpointable`: before its time limit (or on preemption) submitit
requeues it, the stale endpoint file is removed, and the restarted job loads the model again
on whatever node it gets and rewrites the endpoint (``restarts`` counts the requeues).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import submitit

from som.jobs import JobSpec, cancel, jobs_folder, log_tail, submission_environment, submit
from som.serve.endpoint import (
    API_KEY_ENV,
    ENDPOINT_FILE,
    JOB_FILE,
    EndpointError,
    read_endpoint,
    remove_endpoint,
    write_json_atomic,
)
from som.serve.launch import ServeOptions, serve

log = logging.getLogger(__name__)

JOB_NAME = "som-serve"


class ServeJob(submitit.helpers.Checkpointable):
    """The job's callable: serve `options` and publish the endpoint under `run_dir`.
    `options.host` None: the node's own address (reachable from the other nodes)."""

    def __init__(self, options: ServeOptions, run_dir: str) -> None:
        self.options = options
        self.run_dir = run_dir

    def __call__(self) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        job_id = submitit.JobEnvironment().job_id
        host = self.options.host or node_address()
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        log.info("job %s serving %s on %s (restart %d)", job_id, self.options.model, host, restarts)
        serve(
            dataclasses.replace(self.options, host=host),
            api_key=os.environ.get(API_KEY_ENV),
            run_dir=self.run_dir,
            job_id=job_id,
            restarts=restarts,
        )

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Requeue as is (the model reloads); the endpoint goes away until the restart."""
        remove_endpoint(self.run_dir, job_id=submitit.JobEnvironment().job_id)
        return super().checkpoint(*args, **kwargs)


def node_address() -> str:
    """This node's address as the other nodes resolve its Slurm name."""
    name = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    try:
        return socket.gethostbyname(name)
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def submit_server(
    options: ServeOptions, spec: JobSpec, run_dir: str | Path, *, api_key: str | None = None
) -> submitit.Job:
    """Submit the server; writes RUN/serve-job.json (job id, submission folder) at once.
    The API key reaches the job through its environment, never through a file."""
    run = Path(run_dir).resolve()
    run.mkdir(parents=True, exist_ok=True)
    remove_endpoint(run)  # a previous server's endpoint would be mistaken for this one's
    folder = jobs_folder(str(run), "serve")
    with submission_environment({API_KEY_ENV: api_key} if api_key else None):
        job = submit(spec, folder, JOB_NAME, ServeJob(options, str(run)))
    write_json_atomic(
        run / JOB_FILE, {"job_id": job.job_id, "folder": str(folder), "model": options.name, "submitted": time.time()}
    )
    return job


def wait_for_endpoint(
    run_dir: str | Path, job: submitit.Job, *, timeout_s: float = 1800.0, poll_s: float = 2.0
) -> dict[str, Any]:
    """The endpoint the job writes; RuntimeError with the job's log tail if it ends first,
    TimeoutError after `timeout_s` (the job keeps running: check it later)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            info = read_endpoint(run_dir)
            if str(info.get("job_id")) == str(job.job_id):
                return info
        except EndpointError:
            pass
        if job.done():
            tail = "\n".join(log_tail(job)) or "(no log output)"
            raise RuntimeError(f"serve job {job.job_id} ended ({job.state}) before listening; its log ends:\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"serve job {job.job_id} has not written {Path(run_dir) / ENDPOINT_FILE} after "
                f"{timeout_s:.0f}s (state {job.state}); it keeps running: `som serve stop {run_dir}` "
                "cancels it"
            )
        time.sleep(poll_s)


def stop_server(run_dir: str | Path) -> str:
    """Stop the server of `run_dir`: cancel its Slurm job, or signal a local server's process
    (SIGTERM, when it runs on this machine); removes the endpoint file. Returns what was done."""
    run = Path(run_dir)
    job_file = run / JOB_FILE
    if job_file.exists():
        record = json.loads(job_file.read_text())
        job_id = str(record["job_id"])
        cancel([submitit.SlurmJob(record["folder"], job_id)])
        job_file.unlink(missing_ok=True)
        remove_endpoint(run)
        return f"cancelled serve job {job_id}"
    info = read_endpoint(run)  # EndpointError when nothing runs
    if info.get("node") != socket.gethostname():
        raise EndpointError(
            f"the server of {run_dir} runs on {info.get('node')} as process {info.get('pid')}, "
            "not a Slurm job: stop it there (Ctrl-C or kill)"
        )
    try:
        os.kill(int(info["pid"]), signal.SIGTERM)
    except ProcessLookupError:
        remove_endpoint(run)
        return f"server process {info['pid']} was not running; removed the stale {ENDPOINT_FILE}"
    return f"sent SIGTERM to server process {info['pid']}"
