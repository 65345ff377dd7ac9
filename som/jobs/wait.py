"""Waiting for jobs: results in order, state changes and new log lines streamed to callbacks,
and one `JobFailed` that names every failed job with its log tail and what to do.

Why apart from submitting: the loop reads only what submitit leaves in the submission folder
(result pickles, logs) and sacct's states, so it follows jobs whoever submitted them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import pickle_load

LOG_TAIL_LINES = 40
# Slurm states of a job that is not over yet (as submitit counts them).
ACTIVE_STATES = frozenset(
    {
        "READY",
        "PENDING",
        "RUNNING",
        "UNKNOWN",
        "REQUEUED",
        "COMPLETING",
        "PREEMPTED",
        "CONFIGURING",
        "RESIZING",
        "SUSPENDED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
    }
)
# A job that wrote an error result is given this long to show a final state (and a full log).
ERROR_SETTLE_S = 60.0
# A COMPLETED job's result file may show up late on a shared file system (submitit waits 15 s).
RESULT_GRACE_S = 15.0
# Past this many jobs in one wait, result files and logs are read only every poll_s.
MANY_JOBS = 64
ADVICE = {
    "FAILED": "the job's code raised or exited non-zero: read the log tail above, fix the cause and run again.",
    "CANCELLED": "the job was cancelled (scancel, preemption without requeue, or an admin): run again.",
    "TIMEOUT": "the time limit was reached after all requeues: raise timeout_min, or make the job "
    "Checkpointable (it then resumes from its last checkpoint) and raise max_requeues.",
    "OUT_OF_MEMORY": "the job ran out of memory: raise mem_gb (0 = the whole node) or lower the batch size.",
    "NODE_FAIL": "a node failed: run again (Prefect retries do), and tell the admins if it repeats.",
    "BOOT_FAIL": "a node failed to boot: run again, and tell the admins if it repeats.",
    "DEADLINE": "the job missed its deadline: run again with a later deadline or none.",
}


class JobFailed(RuntimeError):
    """One or more jobs ended without a result; the message says which, how and what to do.

    `failures` holds (index in the waited list, job id, state, log tail lines) per failed job.
    """

    def __init__(self, name: str, failures: list[tuple[int, str, str, list[str]]], total: int) -> None:
        self.failures = failures
        self.indices = [index for index, *_ in failures]
        super().__init__(_failure_message(name, failures, total))


def _failure_message(name: str, failures: list[tuple[int, str, str, list[str]]], total: int) -> str:
    if total > 1:
        indices = ", ".join(str(f[0]) for f in failures)
        head = f"{len(failures)} of {total} jobs of {name} failed (indices {indices})"
    else:
        head = f"job {failures[0][1]} ({name}) ended {failures[0][2]}"
    parts = [head]
    for index, job_id, state, tail in failures[:3]:
        parts.append(f"--- job {job_id} (index {index}) ended {state}; last {len(tail)} log lines:")
        parts.extend(tail or ["(no log output)"])
        parts.append(f"What to do: {ADVICE.get(state, 'read the log above and run again.')}")
    if len(failures) > 3:
        parts.append(f"... and {len(failures) - 3} more failed jobs (their logs are in the submission folder)")
    return "\n".join(parts)


class _LogFollower:
    """New complete lines of a job's task-0 stdout and stderr since the last call."""

    def __init__(self, job: submitit.Job) -> None:
        self.paths = [job.paths.stdout, job.paths.stderr]
        self.offsets = [0, 0]
        self.partial = ["", ""]

    def new_lines(self, flush: bool = False) -> list[str]:
        lines: list[str] = []
        for i, path in enumerate(self.paths):
            try:
                with open(path, encoding="utf-8", errors="replace") as stream:
                    stream.seek(self.offsets[i])
                    chunk = stream.read()
                    self.offsets[i] = stream.tell()
            except FileNotFoundError:
                continue
            text = self.partial[i] + chunk
            complete, _, self.partial[i] = text.rpartition("\n")
            lines.extend(complete.splitlines() if complete else [])
            if flush and self.partial[i]:
                lines.append(self.partial[i])
                self.partial[i] = ""
        return lines


def log_tail(job: submitit.Job, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last `lines` lines of the job's (task 0) stderr, else of its stdout."""
    for path in (job.paths.stderr, job.paths.stdout):
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        if text.strip():
            return text.rstrip("\n").splitlines()[-lines:]
    return []


def _outcomes(job: submitit.Job) -> list[tuple[str, Any]] | None:
    """Every task's (outcome, result) once all result files exist, else None."""
    tasks = [job.task(i) for i in range(job.num_tasks)]
    if not all(task.paths.result_pickle.exists() for task in tasks):
        return None
    return [pickle_load(task.paths.result_pickle) for task in tasks]


def local_cancel_marker(job: submitit.LocalJob) -> Path:
    """The file `cancel` leaves beside a local job's logs: Slurm records a cancel itself, a
    local process does not (a SIGINT that lands while Python is still starting ends it with
    exit code 1, not as interrupted)."""
    return Path(job.paths.folder) / f"{job.job_id}.cancelled"


def _scheduler_state(job: submitit.Job) -> str:
    """Slurm's state word (sacct, cached by the last update); for local jobs a Slurm-like word."""
    if isinstance(job, submitit.LocalJob):
        raw = job.state
        if raw == "RUNNING":
            return "RUNNING"
        return "CANCELLED" if raw == "INTERRUPTED" or local_cancel_marker(job).exists() else "EXITED"
    return (job.watcher.get_state(job.job_id, mode="cache") or "UNKNOWN").split()[0].upper()


@dataclass
class _Tracked:
    job: submitit.Job
    follower: _LogFollower
    state: str = ""
    grace_from: float | None = None  # when a wait for a final state / a late result began
    result: Any = None
    failure: tuple[str, list[str]] | None = None
    finished: bool = False


def _in_grace(item: _Tracked, seconds: float) -> bool:
    """True for `seconds` after the first call (per job)."""
    if item.grace_from is None:
        item.grace_from = time.monotonic()
    return time.monotonic() - item.grace_from < seconds


def _advance(item: _Tracked, all_tasks: bool) -> str:
    """Update one job; returns the state to report (COMPLETED/FAILED/... or the scheduler's)."""
    state = _scheduler_state(item.job)
    outcomes = _outcomes(item.job)
    active = state in ACTIVE_STATES
    if outcomes is not None:
        errors = [trace for outcome, trace in outcomes if outcome == "error"]
        if not errors:
            item.finished = True
            item.result = [r for _, r in outcomes] if all_tasks else outcomes[0][1]
            return "COMPLETED"
        # Wait for the process to end so that the log (the traceback) is complete.
        if active and _in_grace(item, ERROR_SETTLE_S):
            return state
        tail = log_tail(item.job) or str(errors[0]).splitlines()[-LOG_TAIL_LINES:]
        item.finished, item.failure = True, ("FAILED", tail)
        return "FAILED"
    if active:
        return state
    if state == "COMPLETED" and _in_grace(item, RESULT_GRACE_S):
        return state  # the result file may still be on its way
    reported = "FAILED" if state in ("COMPLETED", "EXITED") else state
    item.finished, item.failure = True, (reported, log_tail(item.job))
    return reported


def wait(
    jobs: Sequence[submitit.Job],
    *,
    poll_s: float = 5.0,
    on_state: Callable[[submitit.Job, str], None] | None = None,
    on_log: Callable[[submitit.Job, list[str]], None] | None = None,
    check: Callable[[], None] | None = None,
    all_tasks: bool = False,
    name: str = "job",
) -> list[Any]:
    """Wait for every job; return their results in order or raise `JobFailed` naming each failure.

    Arguments:
      poll_s: the longest time between two `sacct` calls (one call for all the jobs).
      on_state(job, state): called when a job's state changes (PENDING, RUNNING, COMPLETED, ...).
      on_log(job, lines): new lines of the job's task-0 stdout/stderr since the last call.
      check(): called every poll (every second or so); raise from it to stop waiting (the caller then `cancel`s).
      all_tasks: return every task's result per job (a list) instead of task 0's.
    A job ends FAILED when its code raised; CANCELLED, TIMEOUT (after all requeues),
    OUT_OF_MEMORY, NODE_FAIL... are Slurm's own verdicts. Jobs still running when one fails
    are waited for, so one exception reports every failed array element.
    """
    tracked = [_Tracked(job, _LogFollower(job)) for job in jobs]
    # Result files and logs are read every second (few jobs) or every poll_s (large arrays);
    # sacct is asked every 1, 2, 4... up to poll_s seconds: short jobs answer fast, and a long
    # job costs the scheduler one call per poll_s.
    tick = min(poll_s, 1.0) if len(tracked) <= MANY_JOBS else poll_s
    sacct_every, last_sacct = tick, -float("inf")
    while True:
        pending_slurm = any(isinstance(item.job, submitit.SlurmJob) for item in tracked if not item.finished)
        if pending_slurm and time.monotonic() - last_sacct >= sacct_every:
            submitit.SlurmJob.watcher.update()  # one sacct call for every pending job
            last_sacct, sacct_every = time.monotonic(), min(sacct_every * 2, poll_s)
        for item in tracked:
            if item.finished:
                continue
            state = _advance(item, all_tasks)
            if state != item.state:
                item.state = state
                if on_state:
                    on_state(item.job, state)
            lines = item.follower.new_lines(flush=item.finished)
            if lines and on_log:
                on_log(item.job, lines)
        if all(item.finished for item in tracked):
            break
        if check:
            check()
        time.sleep(tick)
    failures = [(i, item.job.job_id, *item.failure) for i, item in enumerate(tracked) if item.failure]
    if failures:
        raise JobFailed(name, failures, len(tracked))
    return [item.result for item in tracked]
