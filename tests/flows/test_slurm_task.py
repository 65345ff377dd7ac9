"""tasks/slurm.py inside real flows: retries resubmit a failed job, a cache key skips the
submission, and a cancelled flow run or a SIGTERM'd flow process cancels its job.

Run: python -m pytest tests/flows/test_slurm_task.py -q
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelled, Cancelling, State

from flows.prefect_api import flush_to_api
from som.jobs import JobSpec
from tasks.slurm import FlowRunCancelled, run_job, run_job_array
from tests.helpers.slurm_jobs import fail_once, sleep_recording_pid, square

REPO_ROOT = Path(__file__).resolve().parents[2]
SLURM = JobSpec(executor="slurm", timeout_min=5, partition="debug")
LOCAL = JobSpec(executor="local", timeout_min=5)
POLL_S = 0.3


@flow(name="slurm-task-probe")
def flaky_flow(marker: str, folder: str, cache_key: str | None = None, retries: int = 1) -> int:
    return run_job(
        fail_once,
        marker,
        7,
        spec=SLURM,
        folder=folder,
        name="flaky",
        cache_key=cache_key,
        retries=retries,
        retry_delay_s=0,
        poll_s=POLL_S,
    )


@flow(name="slurm-array-probe")
def squares_flow(folder: str) -> list[int]:
    return run_job_array(square, [[3], [4]], spec=LOCAL, folder=folder, name="squares", retries=0, poll_s=POLL_S)


@flow(name="slurm-cancel-probe")
def sleeping_flow(pid_file: str, folder: str) -> State | None:
    try:
        run_job(sleep_recording_pid, pid_file, spec=LOCAL, folder=folder, name="sleepy", retries=2, poll_s=POLL_S)
    except FlowRunCancelled as exc:
        return Cancelled(message=str(exc))
    return None


def submitted_job_ids(folder: Path) -> list[str]:
    """Every job submitit submitted from `folder` (one pickle per job, kept after it ran)."""
    return sorted(p.name.split("_submitted")[0] for p in folder.glob("*_submitted.pkl"))


def sacct_states(job_ids: list[str]) -> list[str]:
    args = [arg for job_id in job_ids for arg in ("-j", job_id)]
    out = subprocess.run(
        ["sacct", "-n", "-X", "--parsable2", "-o", "State", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return [line.split()[0] for line in out.stdout.splitlines()]


@pytest.mark.slow
def test_failed_job_is_retried_and_succeeds(prefect_api, slurm_env, tmp_path: Path) -> None:
    marker, folder = tmp_path / "marker", tmp_path / "jobs"
    state = flaky_flow(str(marker), str(folder), return_state=True)
    assert state.result() == 7
    jobs = submitted_job_ids(folder)
    assert len(jobs) == 2, jobs  # the injected failure, then the retry
    assert sacct_states(jobs) == ["FAILED", "COMPLETED"]
    # the job states and the job's own log lines are in the flow run's logs
    flush_to_api()
    with get_client(sync_client=True) as client:
        logs = [
            log.message
            for log in client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
            )
        ]
    assert f"flaky job {jobs[0]}: FAILED" in logs and f"flaky job {jobs[1]}: COMPLETED" in logs
    assert any(m.startswith(f"[{jobs[0]}] RuntimeError: injected failure") for m in logs), logs


def test_failure_after_retries_fails_the_flow_with_the_log_tail(prefect_api, slurm_env, tmp_path: Path) -> None:
    state = flaky_flow(str(tmp_path / "marker"), str(tmp_path / "jobs"), retries=0, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"(?s)ended FAILED.*RuntimeError: injected failure"):
        state.result()


def test_same_cache_key_returns_the_result_without_submitting(prefect_api, slurm_env, tmp_path: Path) -> None:
    marker, folder = tmp_path / "marker", tmp_path / "jobs"
    marker.write_text("no failure this time")
    assert flaky_flow(str(marker), str(folder), cache_key="probe-1") == 7
    first = submitted_job_ids(folder)
    marker.unlink()  # a real run would now fail: only the cache can answer
    state = flaky_flow(str(marker), str(folder), cache_key="probe-1", return_state=True)
    assert state.result() == 7
    assert submitted_job_ids(folder) == first and len(first) == 1
    assert not marker.exists()
    assert (folder / "_prefect").is_dir()  # results persisted beside the jobs


def test_array_results_in_order(prefect_api, tmp_path: Path) -> None:
    assert squares_flow(str(tmp_path / "jobs")) == [9, 16]


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_cancelling_the_flow_run_cancels_the_job(prefect_api, tmp_path: Path) -> None:
    pid_file, folder = tmp_path / "pid", tmp_path / "jobs"
    outcome: dict = {}
    runner = threading.Thread(
        target=lambda: outcome.update(state=sleeping_flow(str(pid_file), str(folder), return_state=True))
    )
    runner.start()
    pid = int(_wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60, "the job to start"))
    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(limit=1, sort="START_TIME_DESC")[0]
        assert run.name and run.state.is_running()
        client.set_flow_run_state(run.id, Cancelling(), force=True)
    runner.join(timeout=60)
    assert not runner.is_alive()
    _wait_for(lambda: not _alive(pid), 15, f"job process {pid} to end")
    assert len(submitted_job_ids(folder)) == 1  # cancelled, not retried
    assert outcome["state"].is_cancelled(), outcome["state"]
    assert "cancelled its job(s)" in outcome["state"].message
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run.id).state.is_cancelled()


CHILD = """
import sys
from prefect import flow
from flows.prefect_api import flush_to_api
from som.jobs import JobSpec
from tasks.slurm import run_job
from tests.helpers.slurm_jobs import sleep_long

@flow(name="sigterm-probe")
def probe(folder: str) -> None:
    run_job(sleep_long, spec=JobSpec(executor="slurm", timeout_min=5, partition="debug"), folder=folder,
            name="sleepy", retries=0, poll_s=0.3)

probe(sys.argv[1])
"""


@pytest.mark.slow
def test_sigterm_to_the_flow_process_cancels_the_slurm_job(prefect_api, slurm_env, tmp_path: Path) -> None:
    folder = tmp_path / "jobs"
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PYTHONPATH": str(REPO_ROOT),
        "OMP_NUM_THREADS": "1",
    }
    log = (tmp_path / "flow.log").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder)], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        job_id = _wait_for(lambda: (submitted_job_ids(folder) or [None])[0], 90, "the job to be submitted")
        _wait_for(lambda: sacct_states([job_id]) == ["RUNNING"], 60, f"job {job_id} to run")
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    output = (tmp_path / "flow.log").read_text()
    _wait_for(lambda: sacct_states([job_id]) == ["CANCELLED"], 30, f"job {job_id} to be cancelled:\n{output}")
    assert "cancelled Slurm job(s)" in output or "cancelling job(s)" in output, output
