"""The local Slurm cluster (infra/slurm/cluster.py) through submitit, as training uses it.

Run: python -m pytest -p tests.plugins.slurm tests/slurm -q
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import submitit

from tests.helpers.slurm_jobs import add, node_name, sleep_long
from tests.plugins.slurm import INSTALL_HINT, SlurmCluster, slurm_packages_installed

JOB_TIMEOUT_S = 60
DAEMON_NAMES = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "slurmstepd")


@pytest.fixture
def executor(slurm_env: SlurmCluster, tmp_path: Path) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="slurm")
    ex.update_parameters(timeout_min=5, slurm_partition="debug", cpus_per_task=1, nodes=1, tasks_per_node=1)
    return ex


def _wait_done(job, timeout: float = JOB_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job.done(force_check=True):
            return
        time.sleep(0.5)
    pytest.fail(f"job {job.job_id} not done after {timeout:.0f} s (state {job.state})")


def _wait_state(job, states: set[str], timeout: float = JOB_TIMEOUT_S) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = job.watcher.get_state(job.job_id, mode="force")
        if state.split()[0] in states:
            return state
        time.sleep(0.5)
    pytest.fail(f"job {job.job_id} state {state!r}, not in {states} after {timeout:.0f} s")


def test_trivial_job_result_and_completed_state(executor) -> None:
    started = time.monotonic()
    job = executor.submit(add, 2, 3)
    _wait_done(job)
    assert job.result() == 5
    elapsed = time.monotonic() - started
    assert _wait_state(job, {"COMPLETED"}).startswith("COMPLETED")
    assert job.state == "COMPLETED"  # read through sacct (slurmdbd accounting)
    print(f"trivial job submit->result {elapsed:.1f} s")


def test_two_nodes_one_task_each(executor, slurm_env: SlurmCluster) -> None:
    executor.update_parameters(nodes=2, tasks_per_node=1)
    job = executor.submit(node_name)
    _wait_done(job)
    results = job.results()
    assert len(results) == 2
    names = {r[0] for r in results}
    assert names == set(slurm_env.nodes[:2]), results
    assert sorted(r[1] for r in results) == [0, 1]
    assert {r[2] for r in results} == {"127.0.0.1"}  # node names resolve inside jobs


def test_scancel_gives_cancelled_and_result_raises(executor) -> None:
    job = executor.submit(sleep_long)
    _wait_state(job, {"RUNNING"})
    job.cancel()  # scancel
    state = _wait_state(job, {"CANCELLED"})
    assert state.startswith("CANCELLED")
    _wait_done(job, timeout=30)
    # submitit waits up to 15 s for a result file a slow shared file system may still be
    # writing; here none will ever come.
    job._results_timeout_s = 2
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        job.result()


def _our_processes(state_dir: Path) -> list[tuple[int, str]]:
    """Live (non-zombie) daemon processes that belong to `state_dir`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = (entry / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            continue
        if not any(name in cmd for name in DAEMON_NAMES):
            continue
        if str(state_dir) in cmd or str(state_dir) in env:
            found.append((int(entry.name), cmd.strip()))
    return found


def test_up_is_idempotent_and_down_leaves_no_process(tmp_path: Path) -> None:
    """A cluster of its own (the session's keeps running for the other tests)."""
    if not slurm_packages_installed():
        pytest.skip(INSTALL_HINT)
    state = tmp_path / "own"
    cluster = SlurmCluster(state_dir=state)
    try:
        report = cluster.start(nodes=1, cpus_per_node=1)
        assert report["already_running"] is False
        pids = report["pids"]
        assert set(pids) == {"munged", "mariadbd", "slurmdbd", "slurmctld", "node1"}
        assert cluster.status().returncode == 0
        again = cluster.start(nodes=1, cpus_per_node=1)
        assert again["already_running"] is True and again["pids"] == pids
        # a job left running when the cluster goes down must go too
        env = {**os.environ, **cluster.env}
        out = subprocess.run(
            ["sbatch", "--parsable", f"--output={tmp_path}/slurm-%j.out", "--wrap", "sleep 300"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        assert out.stdout.strip()
    finally:
        stopped = cluster.stop()
    assert stopped["remaining"] == []
    assert set(pids) <= set(stopped["stopped"])
    for pid in pids.values():
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    assert _our_processes(state) == []
    status = cluster.status()
    assert status.returncode == 3, status.stdout
    assert json.loads(status.stdout)["running"] is False


def test_cluster_goes_down_when_its_owner_process_dies(tmp_path: Path) -> None:
    """A test session killed before its teardown must not leave Slurm daemons running."""
    if not slurm_packages_installed():
        pytest.skip(INSTALL_HINT)
    owner = subprocess.Popen(["sleep", "300"])
    cluster = SlurmCluster(state_dir=tmp_path / "owned")
    try:
        pids = cluster.start(nodes=1, cpus_per_node=1, owner=owner.pid)["pids"]
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 60
        while _our_processes(tmp_path / "owned") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _our_processes(tmp_path / "owned") == []
        for pid in pids.values():
            stat = Path(f"/proc/{pid}/stat")
            assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    finally:
        owner.kill()
        cluster.stop()
