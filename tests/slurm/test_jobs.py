"""som.jobs against the real local Slurm cluster and submitit's local executor.

Run: python -m pytest tests/slurm/test_jobs.py -q
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import submitit

from som import jobs
from som.jobs import JobFailed, JobSpec
from tests.helpers.slurm_jobs import fail, report, sleep_long, square, square_or_fail

POLL_S = 0.3


SLURM = JobSpec(executor="slurm", timeout_min=5, partition="debug")
LOCAL = JobSpec(executor="local", timeout_min=5)


# ----------------------------------------------------------------------------- no scheduler


def test_spec_from_mapping_names_unknown_keys_and_bad_values() -> None:
    spec = JobSpec.from_mapping({"nodes": 2, "partition": "gpu", "setup": ["module load x"], "qos": None})
    assert spec.nodes == 2 and spec.partition == "gpu" and spec.setup == ("module load x",)
    with pytest.raises(ValueError, match="job options: unknown key 'gpus' .known:.*gpus_per_node"):
        JobSpec.from_mapping({"gpus": 8})
    with pytest.raises(ValueError, match="job options: executor: Input should be 'auto', 'slurm' or 'local'"):
        JobSpec.from_mapping({"executor": "slrum"})
    with pytest.raises(ValueError, match="job options: nodes: Input should be greater than or equal to 1"):
        JobSpec.from_mapping({"nodes": 0})
    with pytest.raises(ValueError, match=r"nodes\s+Input should be greater than or equal to 1"):
        JobSpec(nodes=0)


def test_sbatch_script_carries_every_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The options a real cluster needs, checked as sbatch text (no scheduler involved).

    submitit's Slurm executor only checks that an `srun` is on PATH and never runs it to write
    the script, so a stub stands in for it: the test runs on machines without Slurm too."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "srun").write_text("#!/bin/sh\nexit 1\n")
    (stubs / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", str(stubs))
    spec = JobSpec(
        executor="slurm",
        nodes=2,
        tasks_per_node=8,
        gpus_per_node=8,
        cpus_per_task=10,
        mem_gb=64,
        timeout_min=120,
        partition="gpu",
        account="proj",
        qos="high",
        constraint="a100&80gb",
        signal_delay_s=120,
        setup=("module load cuda/12.4",),
        extra={"exclusive": True, "mail_type": "END"},
    )
    executor = jobs.slurm_executor(spec, tmp_path, "som-train")
    script = executor._executor._make_submission_file_text("python -m x", "uid")
    for flag in (
        "--job-name=som-train",
        "--nodes=2",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--cpus-per-task=10",
        "--mem=64GB",
        "--time=120",
        "--partition=gpu",
        "--account=proj",
        "--qos=high",
        "--constraint='a100&80gb'",
        "--signal=USR2@120",
        "--mail-type=END",
    ):
        assert f"#SBATCH {flag}\n" in script, flag
    assert "#SBATCH --exclusive\n" in script
    assert "module load cuda/12.4\n" in script
    assert executor._executor.max_num_timeout == spec.max_requeues


def test_auto_executor_is_local_without_a_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "missing.conf"))
    assert jobs.resolve_executor(JobSpec()) == "local"
    with pytest.raises(RuntimeError, match="executor slurm: no Slurm controller answers.*missing.conf"):
        jobs.submit(JobSpec(executor="slurm"), tmp_path, "x", square, 2)
    with pytest.raises(ValueError, match="local executor runs on this one machine.*3 nodes"):
        jobs.make_executor(JobSpec(nodes=3), tmp_path, "x")


def test_submission_environment_hides_enclosing_job_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_CONF", "/etc/x.conf")
    monkeypatch.delenv("SOMFLOW_PROBE", raising=False)
    with jobs.submission_environment({"SOMFLOW_PROBE": "p"}):
        assert "SLURM_JOB_ID" not in os.environ
        assert os.environ["SLURM_CONF"] == "/etc/x.conf"
        assert os.environ["SOMFLOW_PROBE"] == "p"
    assert os.environ["SLURM_JOB_ID"] == "41"
    assert "SOMFLOW_PROBE" not in os.environ


# ----------------------------------------------------------------------------- local executor


def test_local_array_results_in_order_and_failed_indices(tmp_path: Path) -> None:
    arrays = jobs.submit_array(LOCAL, tmp_path, "squares", square, [[3], [1], [2]])
    assert jobs.wait(arrays, poll_s=POLL_S) == [9, 1, 4]
    failing = jobs.submit_array(LOCAL, tmp_path, "squares", square_or_fail, [[0, 1], [1, 1], [2, 1]])
    with pytest.raises(JobFailed) as info:
        jobs.wait(failing, poll_s=POLL_S, name="squares")
    assert info.value.indices == [1]
    message = str(info.value)
    assert "1 of 3 jobs of squares failed (indices 1)" in message
    assert "ValueError: element 1 is bad" in message and "What to do:" in message


@pytest.mark.parametrize("executor", ["local", "slurm"])
def test_cancel_a_running_job(executor: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """A wait stopped by `check` leaves the job running; `cancel` ends it within seconds, and
    the next wait reports CANCELLED with its advice (for Slurm, as sacct records it too)."""
    if executor == "slurm":
        request.getfixturevalue("slurm_env")
    job = jobs.submit(SLURM if executor == "slurm" else LOCAL, tmp_path, "sleepy", sleep_long)
    states: list[str] = []

    def stop_once_running() -> None:
        if states and states[-1] == "RUNNING":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        jobs.wait([job], poll_s=POLL_S, on_state=lambda _, s: states.append(s), check=stop_once_running)
    started = time.monotonic()
    jobs.cancel([job])
    with pytest.raises(JobFailed) as info:
        jobs.wait([job], poll_s=POLL_S)
    assert info.value.failures[0][2] == "CANCELLED"
    assert "What to do: the job was cancelled" in str(info.value)
    assert time.monotonic() - started < 30
    if executor == "slurm":
        sacct = subprocess.run(
            ["sacct", "-n", "-X", "--parsable2", "-j", job.job_id, "-o", "State"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert sacct.stdout.split()[0] == "CANCELLED"


def test_a_local_job_cancelled_while_python_starts_is_cancelled_not_failed(tmp_path: Path) -> None:
    """SIGINT that lands while the job's Python is still importing `site` ends it with exit
    code 1 ("Fatal Python error: init_import_site"), which looked like a failed job; a
    cancel is a cancel whenever it lands (seen on a loaded 2-core machine)."""
    for step in range(12):  # 10-30 ms after the start on an idle machine, later under load
        job = jobs.submit(LOCAL, tmp_path / str(step), "sleepy", sleep_long)
        time.sleep(step * 0.01)
        jobs.cancel([job])
        with pytest.raises(JobFailed) as info:
            jobs.wait([job], poll_s=POLL_S)
        assert info.value.failures[0][2] == "CANCELLED", (step, info.value)


# ----------------------------------------------------------------------------- Slurm


def test_slurm_job_result_states_logs_and_environment(slurm_env, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SOMFLOW_INHERITED", "from-env")
    monkeypatch.setenv("RANK", "7")  # as if submitted from inside a distributed job
    assert jobs.resolve_executor(JobSpec()) == "slurm"
    states: list[str] = []
    lines: list[str] = []
    with jobs.submission_environment({"SOMFLOW_PROBE": "in-memory-only"}):
        job = jobs.submit(SLURM, tmp_path, "report", report, 3)
    assert isinstance(job, submitit.SlurmJob)
    result = jobs.wait(
        [job], poll_s=POLL_S, on_state=lambda _, s: states.append(s), on_log=lambda _, new: lines.extend(new)
    )
    assert result == [
        {"SOMFLOW_PROBE": "in-memory-only", "SOMFLOW_INHERITED": "from-env", "RANK": None, "SUBMITIT_EXECUTOR": "slurm"}
    ]
    assert states[-1] == "COMPLETED" and len(states) == len(set(states))
    assert {"report line 0", "report line 2", "report on stderr"} <= set(lines)
    assert "SOMFLOW_PROBE" not in Path(job.paths.submission_file).read_text()


def test_slurm_failure_raises_with_log_tail(slurm_env, tmp_path: Path) -> None:
    job = jobs.submit(SLURM, tmp_path, "doomed", fail, "the data file is corrupt")
    with pytest.raises(JobFailed) as info:
        jobs.wait([job], poll_s=POLL_S, name="doomed")
    message = str(info.value)
    assert message.startswith(f"job {job.job_id} (doomed) ended FAILED")
    assert "ValueError: the data file is corrupt" in message
    assert "What to do: the job's code raised" in message
    assert info.value.failures[0][2] == "FAILED"


@pytest.mark.slow
def test_slurm_array_results_in_order(slurm_env, tmp_path: Path) -> None:
    array = jobs.submit_array(
        SLURM.model_copy(update={"array_parallelism": 2}), tmp_path, "squares", square, [[i] for i in range(4)]
    )
    assert len({job.job_id.split("_")[0] for job in array}) == 1  # one Slurm array
    assert jobs.wait(array, poll_s=POLL_S) == [0, 1, 4, 9]
    script = Path(array[0].paths.submission_file).read_text()
    assert "#SBATCH --array=0-3%2\n" in script
