"""Prefect tasks that run a callable as a Slurm job or job array (submitit) and wait for it.

Thin over `som.jobs`: Prefect adds retries (a failed job is resubmitted after a delay), caching
on a caller-given key (a finished training is not redone), and the job's state changes and log
lines in the task run's logs. The job is cancelled (scancel) whenever the wait ends without a
result: the flow run cancelled in the UI, Ctrl-C, SIGTERM to the flow process (Prefect's
engine turns it into an exception in the main thread), or any other error while waiting.

    from tasks.slurm import run_job, run_job_array
    export = run_job(TrainJob(config, run_dir), spec=JobSpec(nodes=2, gpus_per_node=8),
                     folder=f"{run_dir}/slurm", name="som-train", cache_key=key)
    counts = run_job_array(answer_shard, [[shard] for shard in range(8)], spec=spec,
                           folder=jobs_dir, name="som-eval-pope")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import submitit
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import TaskRunContext
from prefect.states import Cancelled, State
from prefect.utilities.annotations import quote

from som import jobs
from som.jobs import JobSpec
from tasks.cluster import worker_environment
from tasks.result_storage import result_storage_for

LOG_LINES_PER_POLL = 200
CANCEL_CHECK_S = 2.0


class FlowRunCancelled(Exception):
    """The flow run was cancelled while its job ran (the job is cancelled too).

    `run_job` raises it in the flow; a flow that catches it and returns
    `prefect.states.Cancelled(...)` ends Cancelled, otherwise it ends Failed with this message."""


class _CancellationWatch:
    """A `som.jobs.wait` check that raises once this task's flow run is cancelling/cancelled.

    Flow runs started by a worker are stopped with SIGTERM; a flow started from a shell is not
    stopped by cancelling it in the UI, so the wait asks the API (at most every 2 s) and, once
    the job is cancelled, completes the cancellation as a worker would."""

    def __init__(self, client: Any) -> None:
        context = TaskRunContext.get()
        self.client = client
        self.flow_run_id = context.task_run.flow_run_id if context else None
        self.last = 0.0

    def __call__(self) -> None:
        if self.flow_run_id is None or time.monotonic() - self.last < CANCEL_CHECK_S:
            return
        self.last = time.monotonic()
        state = self.client.read_flow_run(self.flow_run_id).state
        if state is not None and (state.is_cancelling() or state.is_cancelled()):
            raise FlowRunCancelled(f"flow run {self.flow_run_id} was cancelled")

    def finish(self, message: str) -> None:
        """Move a cancelling flow run to Cancelled (its job is gone)."""
        state = self.client.read_flow_run(self.flow_run_id).state
        if state is not None and state.is_cancelling():
            self.client.set_flow_run_state(self.flow_run_id, Cancelled(message=message), force=True)


def _watch(submitted: list[submitit.Job], name: str, poll_s: float) -> list[Any] | State:
    """Wait with state/log lines in the task's logs; cancel the jobs if the wait is cut short."""
    logger = get_run_logger()

    def on_state(job: submitit.Job, state: str) -> None:
        logger.info("%s job %s: %s", name, job.job_id, state)

    def on_log(job: submitit.Job, lines: list[str]) -> None:
        if len(lines) > LOG_LINES_PER_POLL:
            logger.info(
                "[%s] ... %d lines skipped (full log: %s)",
                job.job_id,
                len(lines) - LOG_LINES_PER_POLL,
                job.paths.stderr,
            )
        for line in lines[-LOG_LINES_PER_POLL:]:
            logger.info("[%s] %s", job.job_id, line)

    with get_client(sync_client=True) as client:
        watch = _CancellationWatch(client)
        try:
            return jobs.wait(submitted, poll_s=poll_s, on_state=on_state, on_log=on_log, check=watch, name=name)
        except jobs.JobFailed:
            raise  # every job has ended: nothing to cancel; Prefect retries
        except FlowRunCancelled as exc:
            jobs.cancel(submitted)
            message = f"{exc}; cancelled its job(s) {_ids(submitted)}"
            watch.finish(message)
            return Cancelled(message=message)
        except BaseException:
            logger.warning("%s interrupted: cancelling job(s) %s", name, _ids(submitted))
            jobs.cancel(submitted)
            raise


def _ids(submitted: Sequence[submitit.Job]) -> str:
    return ", ".join(sorted({job.job_id.split("_")[0] for job in submitted}))


@task(name="slurm-job")
def _job_task(
    call: tuple[Callable[..., Any], tuple, dict], spec: JobSpec, folder: str, name: str, poll_s: float
) -> Any:
    fn, args, kwargs = call
    with jobs.submission_environment(worker_environment()):
        job = jobs.submit(spec, folder, name, fn, *args, **kwargs)
    get_run_logger().info("submitted %s as job %s (logs: %s)", name, job.job_id, job.paths.stderr)
    watched = _watch([job], name, poll_s)
    return watched if isinstance(watched, State) else watched[0]


@task(name="slurm-array")
def _array_task(
    fn: Callable[..., Any], arg_lists: list[list[Any]], spec: JobSpec, folder: str, name: str, poll_s: float
) -> list[Any] | State:
    with jobs.submission_environment(worker_environment()):
        submitted = jobs.submit_array(spec, folder, name, fn, arg_lists)
    if submitted:
        get_run_logger().info(
            "submitted %s as %d array jobs %s..%s (logs under %s)",
            name,
            len(submitted),
            submitted[0].job_id,
            submitted[-1].job_id,
            folder,
        )
    return _watch(submitted, name, poll_s)


def _options(
    name: str, folder: str, cache_key: str | None, retries: int, retry_delay_s: float, result_storage: str | None
) -> dict[str, Any]:
    options: dict[str, Any] = {"task_run_name": name, "retries": retries, "retry_delay_seconds": retry_delay_s}
    if cache_key is None:
        return {**options, "cache_policy": NO_CACHE, "persist_result": False}
    return {
        **options,
        "cache_key_fn": lambda *_: cache_key,
        "persist_result": True,
        "result_storage": result_storage_for(result_storage or folder),
    }


def run_job(
    fn: Callable[..., Any],
    *args: Any,
    spec: JobSpec,
    folder: str,
    name: str,
    cache_key: str | None = None,
    retries: int = 2,
    retry_delay_s: float = 30,
    result_storage: str | None = None,
    poll_s: float = 5.0,
    **kwargs: Any,
) -> Any:
    """Run `fn(*args, **kwargs)` as one job (from inside a flow) and return its result.

    Arguments:
      spec: resources and scheduler (`som.jobs.JobSpec`); folder: submitit's folder (pickles,
        logs; on a file system every node sees); name: the job's and the task run's name.
      cache_key: when given, a finished run with the same key returns its persisted result
        without submitting (results under `result_storage`, default `<folder>/_prefect`).
      retries, retry_delay_s: a failed job (JobFailed) is resubmitted this many times.
    Raises JobFailed once retries are spent, FlowRunCancelled when the flow run was cancelled.
    """
    job_task = _job_task.with_options(**_options(name, folder, cache_key, retries, retry_delay_s, result_storage))
    return _result(job_task(quote((fn, args, kwargs)), spec, str(folder), name, poll_s, return_state=True))


def run_job_array(
    fn: Callable[..., Any],
    arg_lists: Sequence[Sequence[Any]],
    *,
    spec: JobSpec,
    folder: str,
    name: str,
    cache_key: str | None = None,
    retries: int = 2,
    retry_delay_s: float = 30,
    result_storage: str | None = None,
    poll_s: float = 5.0,
) -> list[Any]:
    """Run `fn(*args)` for every args in `arg_lists` as one Slurm array; results in that order.

    Failed elements fail the task with their indices (JobFailed); a retry resubmits the whole
    array, so elements should skip work they already finished (as evaluation shards do).
    Other arguments as `run_job`.
    """
    array_task = _array_task.with_options(**_options(name, folder, cache_key, retries, retry_delay_s, result_storage))
    return _result(
        array_task(
            quote(fn), quote([list(args) for args in arg_lists]), spec, str(folder), name, poll_s, return_state=True
        )
    )


def _result(state: State) -> Any:
    """The task's value; its exception when it failed; FlowRunCancelled when it was cancelled."""
    if state.is_cancelled():
        raise FlowRunCancelled(state.message)
    return state.result()
