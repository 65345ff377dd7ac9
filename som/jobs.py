"""Slurm jobs and job arrays through submitit, with the same entry point run locally.

Training and evaluation hand a picklable callable to `submit` / `submit_array`; submitit
pickles it into a submission folder, `sbatch` runs it on the cluster (or a local process runs
it when there is no Slurm) and `wait` returns its results, streaming state changes and log
lines to callbacks, or raises `JobFailed` with the log tail and what to do.

What a real cluster needs (ask the admins, or see `sinfo -s`, `sacctmgr show assoc
user=$USER`, `scontrol show node <n>`; infra/slurm/README.md has a full template):

    JobSpec(executor="slurm", nodes=2, tasks_per_node=8, gpus_per_node=8, cpus_per_task=10,
            mem_gb=0,                      # 0: all of each node's memory
            timeout_min=24 * 60, partition="gpu", account="my-project", qos="normal",
            constraint="a100&80gb", signal_delay_s=120,   # time to checkpoint before the end
            setup=("module load cuda/12.4", "source /shared/venvs/somflow/bin/activate"),
            extra={"exclusive": True, "mail_type": "END,FAIL"})

- The submission folder must be on a file system every node sees; `sacct` must work for
  your user (submitit reads job states from accounting).
- Jobs get the submitting process's environment (sbatch's default `--export=ALL`): S3
  settings (AWS_*, SOMFLOW_STORAGE_CONFIG), SLURM_CONF, PREFECT_* ... Variables that must
  reach the job but live only in memory (a Prefect settings context) go through
  `submission_environment(extra)`; values never enter the sbatch script.
- Jobs whose callable is a `submitit.helpers.Checkpointable` are requeued on preemption and
  before the time limit, up to `max_requeues` times; a TIMEOUT after that is a failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import pickle_load

from som import storage

log = logging.getLogger(__name__)

EXECUTORS = ("auto", "slurm", "local")
JOBS_DIR_ENV = "SOMFLOW_JOBS_DIR"
LOG_TAIL_LINES = 40
FAILED_STATES = frozenset({"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                           "DEADLINE", "REVOKED"})
# Slurm states of a job that is not over yet (as submitit counts them).
ACTIVE_STATES = frozenset({"READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED",
                           "CONFIGURING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED"})
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
_ENV_LOCK = threading.RLock()  # submit() nests inside a caller's submission_environment
# Variables of an enclosing Slurm job that must not leak into a job submitted from inside it.
_INHERITED_PREFIXES = ("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SUBMITIT_")
_KEEP = frozenset({"SLURM_CONF"})
_DISTRIBUTED = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@dataclass(frozen=True)
class JobSpec:
    """Resources and scheduler options of a job (one per node count / partition choice).

    Arguments:
      executor: "slurm", "local" (processes on this machine, one node) or "auto" (slurm when
        `sbatch` is on PATH and a controller answers `scontrol ping`, else local).
      nodes, tasks_per_node, gpus_per_node, cpus_per_task, mem_gb (None: the partition's
        default; 0: all of the node's), timeout_min: sbatch --nodes/--ntasks-per-node/
        --gpus-per-node/--cpus-per-task/--mem/--time. One task per GPU for training.
      partition, account, qos, constraint: sbatch options of the same names (None: unset).
      array_parallelism: array elements running at once (Slurm only: the local executor
        starts every element at once, so keep local arrays to about one element per core).
      signal_delay_s: seconds before the time limit at which Checkpointable jobs are
        signalled to save and requeue; max_requeues: how many times they may be.
      setup: shell lines run before the task (module load, activating an environment).
      extra: any other sbatch option, without the leading dashes ({"mail_type": "END"};
        True gives a bare flag: {"exclusive": True}).
    """

    executor: str = "auto"
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = 64
    signal_delay_s: int = 90
    max_requeues: int = 3
    setup: tuple[str, ...] = ()
    extra: Mapping[str, str | bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"JobSpec executor {self.executor!r}: expected one of {', '.join(EXECUTORS)}")
        for name in ("nodes", "tasks_per_node", "cpus_per_task", "timeout_min", "array_parallelism"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"JobSpec {name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("gpus_per_node", "signal_delay_s", "max_requeues"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"JobSpec {name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.mem_gb is not None and self.mem_gb < 0:
            raise ValueError(f"JobSpec mem_gb must be >= 0 (0: the whole node), got {self.mem_gb!r}")
        object.__setattr__(self, "setup", tuple(self.setup))
        object.__setattr__(self, "extra", {str(k): v if isinstance(v, bool) else str(v)
                                           for k, v in dict(self.extra).items()})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> JobSpec:
        """A spec from config values (YAML, CLI); unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown job option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in values.items() if v is not None})


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
        head = f"{len(failures)} of {total} jobs of {name} failed (indices {', '.join(map(str, [f[0] for f in failures]))})"
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


def jobs_folder(run_dir: str, *parts: str) -> Path:
    """submitit's folder for a run: `<run_dir>/<parts>` when the run folder is a path (it must
    be on a file system every node sees), else under $SOMFLOW_JOBS_DIR (default
    ~/.cache/somflow/jobs) in a folder named after the run's URL."""
    if storage.protocol_of(run_dir) in storage.LOCAL_PROTOCOLS:
        return Path(storage.resolve(run_dir)[1]).joinpath(*parts)
    slug = "".join(c if c.isalnum() else "-" for c in run_dir.lower()).strip("-")
    base = Path(os.environ.get(JOBS_DIR_ENV) or Path.home() / ".cache" / "somflow" / "jobs")
    return base.joinpath(slug, *parts)


def slurm_available(timeout_s: float = 10.0) -> bool:
    """True when `sbatch` is on PATH and a Slurm controller answers (`scontrol ping`)."""
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():  # scontrol would retry reading it for 60 s
        log.warning("SLURM_CONF=%s does not exist: treating Slurm as unavailable", conf)
        return False
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return ping.returncode == 0 and "UP" in ping.stdout


def resolve_executor(spec: JobSpec) -> str:
    """"slurm" or "local" for this spec on this machine; "slurm" without a cluster is an error."""
    if spec.executor == "local":
        return "local"
    if spec.executor == "slurm":
        if not slurm_available():
            raise RuntimeError("executor slurm: no Slurm controller answers `scontrol ping` (is sbatch on PATH "
                               f"and SLURM_CONF={os.environ.get('SLURM_CONF', '(unset)')} right?); start the "
                               "cluster, or use executor local / auto")
        return "slurm"
    chosen = "slurm" if slurm_available() else "local"
    log.info("executor auto: %s", "Slurm answers, submitting with sbatch" if chosen == "slurm"
             else "no Slurm controller answers, running jobs as local processes")
    return chosen


def slurm_parameters(spec: JobSpec, name: str) -> dict[str, Any]:
    """submitit AutoExecutor parameters (sbatch options) for `spec`."""
    params: dict[str, Any] = {
        "name": name, "nodes": spec.nodes, "tasks_per_node": spec.tasks_per_node,
        "cpus_per_task": spec.cpus_per_task, "timeout_min": spec.timeout_min,
        "slurm_array_parallelism": spec.array_parallelism, "slurm_signal_delay_s": spec.signal_delay_s,
    }
    if spec.gpus_per_node:
        params["gpus_per_node"] = spec.gpus_per_node
    if spec.mem_gb is not None:
        params["mem_gb"] = spec.mem_gb
    for option in ("partition", "account", "qos", "constraint"):
        if getattr(spec, option):
            params[f"slurm_{option}"] = getattr(spec, option)
    if spec.setup:
        params["slurm_setup"] = list(spec.setup)
    if spec.extra:
        params["slurm_additional_parameters"] = dict(spec.extra)
    return params


def slurm_executor(spec: JobSpec, folder: str | Path, name: str) -> submitit.AutoExecutor:
    """The Slurm executor for `spec`, built without asking the cluster (its sbatch script can be
    inspected anywhere srun is installed)."""
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=spec.max_requeues)
    executor.update_parameters(**slurm_parameters(spec, name))
    return executor


def make_executor(spec: JobSpec, folder: str | Path, name: str) -> submitit.Executor:
    """A submitit executor for `spec` writing its pickles and logs under `folder`."""
    if resolve_executor(spec) == "slurm":
        return slurm_executor(spec, folder, name)
    if spec.nodes > 1:
        raise ValueError(f"job {name}: the local executor runs on this one machine, but {spec.nodes} nodes were "
                         "asked for; use nodes=1 (tasks_per_node for several processes) or a Slurm cluster")
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=spec.max_requeues)
    executor.update_parameters(timeout_min=spec.timeout_min, tasks_per_node=spec.tasks_per_node,
                               gpus_per_node=spec.gpus_per_node, signal_delay_s=spec.signal_delay_s,
                               setup=list(spec.setup))
    return executor


@contextlib.contextmanager
def submission_environment(extra: Mapping[str, str] | None = None) -> Iterator[None]:
    """Submit with `extra` variables set and an enclosing job's SLURM_*/rank variables hidden.

    Jobs inherit the environment at submission; a job submitted from inside another Slurm
    job would otherwise inherit its allocation's variables (wrong GPUs, ranks).
    """
    with _ENV_LOCK:
        hidden = {k: os.environ.pop(k) for k in list(os.environ)
                  if (k.startswith(_INHERITED_PREFIXES) and k not in _KEEP) or k in _DISTRIBUTED}
        replaced = {k: os.environ.get(k) for k in (extra or {})}
        os.environ.update(extra or {})
        try:
            yield
        finally:
            for key, value in replaced.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            os.environ.update(hidden)


def submit(spec: JobSpec, folder: str | Path, name: str, fn: Callable[..., Any], *args: Any,
           **kwargs: Any) -> submitit.Job:
    """Submit `fn(*args, **kwargs)` as one job (`nodes` x `tasks_per_node` tasks each run it)."""
    executor = make_executor(spec, folder, name)
    with submission_environment():
        job = executor.submit(fn, *args, **kwargs)
    log.info("submitted %s as job %s (%s, folder %s)", name, job.job_id, type(job).__name__, folder)
    return job


def submit_array(spec: JobSpec, folder: str | Path, name: str, fn: Callable[..., Any],
                 arg_lists: Sequence[Sequence[Any]]) -> list[submitit.Job]:
    """Submit `fn(*args)` for each args in `arg_lists` as one Slurm array (jobs in that order)."""
    if not arg_lists:
        return []
    executor = make_executor(spec, folder, name)
    with submission_environment():
        with executor.batch():
            jobs = [executor.submit(fn, *args) for args in arg_lists]
    log.info("submitted %s as %d array jobs (%s .. %s, folder %s)", name, len(jobs), jobs[0].job_id,
             jobs[-1].job_id, folder)
    return jobs


def cancel(jobs: Sequence[submitit.Job]) -> None:
    """Cancel jobs that may still run; a whole array with one scancel. Never raises for jobs
    that already ended."""
    slurm_ids = sorted({job.job_id.split("_")[0] for job in jobs if isinstance(job, submitit.SlurmJob)})
    if slurm_ids:
        done = subprocess.run(["scancel", *slurm_ids], capture_output=True, text=True, timeout=60)
        log.warning("cancelled Slurm job(s) %s%s", " ".join(slurm_ids),
                    f" (scancel: {done.stderr.strip()})" if done.returncode else "")
    for job in jobs:
        if isinstance(job, submitit.LocalJob) and job.state == "RUNNING":
            job.cancel(check=False)
            log.warning("cancelled local job %s", job.job_id)


# ----------------------------------------------------------------------------- waiting


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


def _scheduler_state(job: submitit.Job) -> str:
    """Slurm's state word (sacct, cached by the last update); for local jobs a Slurm-like word."""
    if isinstance(job, submitit.LocalJob):
        raw = job.state
        return "RUNNING" if raw == "RUNNING" else "CANCELLED" if raw == "INTERRUPTED" else "EXITED"
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


def wait(jobs: Sequence[submitit.Job], *, poll_s: float = 5.0,
         on_state: Callable[[submitit.Job, str], None] | None = None,
         on_log: Callable[[submitit.Job, list[str]], None] | None = None,
         check: Callable[[], None] | None = None, all_tasks: bool = False,
         name: str = "job") -> list[Any]:
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
