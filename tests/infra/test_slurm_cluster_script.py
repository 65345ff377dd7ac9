"""The dask-jobqueue job script, checked as text (no Slurm needed), as dask-jobqueue tests do."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "dask" / "slurm_cluster.py"


def job_script(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--print-script", *args], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def test_gpu_job_script_carries_the_sbatch_parameters_and_dask_cuda_workers(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-print-me")
    text = job_script(
        "--partition",
        "gpu",
        "--account",
        "proj",
        "--qos",
        "high",
        "--constraint",
        "a100",
        "--gpus-per-job",
        "4",
        "--cores",
        "32",
        "--memory",
        "256GB",
        "--walltime",
        "08:00:00",
        "--venv",
        "/shared/venv",
    )
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH -A proj",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a100",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH -t 08:00:00",
        "#SBATCH --cpus-per-task=32",
        "source /shared/venv/bin/activate",
    ):
        assert line in text, line
    assert "-m dask_cuda.cli " in text and "--nthreads 1" in text
    assert "do-not-print-me" not in text


def test_cpu_job_script_runs_one_single_threaded_worker_per_process():
    text = job_script("--cores", "16", "--processes", "8", "--memory", "64GB")
    assert "dask_cuda" not in text
    assert "--nworkers 8" in text and "--nthreads 1" in text
