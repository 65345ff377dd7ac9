"""When a Prefect task is retried: only after an error that a later attempt may not meet.

Why: a task that retries everything spends its whole back-off (31 s for the shard task) on
errors that no retry fixes, such as wrong credentials or a missing bucket, and then reports
them last. `som.storage.is_transient` tells the two kinds apart (connection errors, timeouts,
5xx and throttling are transient; permission, not-found and bad arguments are permanent), so a
permanent error fails the task run at once, with its own message as the state's reason.
"""

from __future__ import annotations

from typing import Any

from prefect import Task, get_run_logger
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from som import storage


def retry_if_transient(task: Task[..., Any], task_run: TaskRun, state: State) -> bool:
    """`retry_condition_fn` for tasks whose failures come from storage or the network."""
    error = state.result(raise_on_failure=False)
    if not isinstance(error, BaseException):
        return False
    if storage.is_transient(error):
        # Prefect announces the retry at INFO; an outage must leave warnings (issue 11 item 9).
        # Prefect asks only while retries remain, so True here always means another attempt.
        get_run_logger().warning(
            "%s attempt %d/%d failed (%s: %s); retrying",
            task_run.name,
            task_run.run_count,
            task.retries + 1,
            type(error).__name__,
            error,
        )
        return True
    get_run_logger().error(
        "%s: not retried, the error is permanent: %s: %s", task_run.name, type(error).__name__, error
    )
    return False
