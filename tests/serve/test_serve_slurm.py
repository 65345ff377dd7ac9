"""`som serve --slurm` on the real local Slurm cluster (tests/plugins/slurm.py): submit, wait
for RUN/endpoint.json, ask through it, survive a requeue (the endpoint is rewritten), stop.

Run: python -m pytest tests/serve/test_serve_slurm.py -q
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from som.cli import cli
from som.serve.endpoint import EndpointError, read_endpoint
from som.serve.engine import local_engine
from tests.helpers.data import data_path
from tests.helpers.slurm_requeue import release_requeued
from tests.helpers.tiny_llava import build_tiny_llava
from tests.plugins.slurm import SlurmCluster

pytestmark = pytest.mark.slow

KEY = "slurm-test-key"


def wait_for(run: Path, predicate, timeout_s: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            info = read_endpoint(run)
            if predicate(info):
                return info
        except EndpointError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no matching endpoint in {run} after {timeout_s}s")


def job_state(job_id: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        ["sacct", "-j", job_id, "-X", "-n", "-o", "State"], capture_output=True, text=True, env=env, check=False
    ).stdout.split()
    return out[0] if out else ""


def info_job(run: Path) -> dict:
    """RUN/serve-job.json: the job id and its submitit folder."""
    return json.loads((run / "serve-job.json").read_text())


def ask(info: dict) -> str:
    from openai import OpenAI

    from som.chat_api import image_content, text_content

    client = OpenAI(base_url=info["url"], api_key=KEY, max_retries=0, timeout=120)
    photo = data_path("extreme_ironing.jpg").read_bytes()
    messages = [{"role": "user", "content": [image_content(photo), text_content("What is the man doing?")]}]
    return (
        client.chat.completions.create(model=info["model"], messages=messages, max_tokens=6).choices[0].message.content
    )


def test_serve_on_slurm(slurm_env: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Submit: the endpoint appears and answers as the model does in process. The job then
    gets the signal Slurm sends 90 s before its time limit (submitit's USR2, `--signal=USR2@90`
    in its batch script); submitit checkpoints it (the endpoint goes away) and requeues it, and
    the restarted job serves and rewrites the endpoint; `som serve stop` cancels it.

    The test sends that signal itself, once the first endpoint has answered: with a real
    2-minute limit the signal came 30 s after the start, and a loaded machine could take that
    long to load the model, so the first endpoint was already a restarted one."""
    import os

    folder = build_tiny_llava(tmp_path / "model")
    run = tmp_path / "run"
    monkeypatch.setenv("SOMFLOW_API_KEY", KEY)
    result = CliRunner().invoke(
        cli,
        [
            "serve",
            folder,
            "--slurm",
            "--gpus",
            "0",
            "--partition",
            "debug",
            "--cpus-per-task",
            "1",
            "--time",
            "30",
            "--run-dir",
            str(run),
            "--local-files-only",
            "--wait-s",
            "240",
        ],
    )
    assert result.exit_code == 0, result.output
    info = read_endpoint(run)
    assert result.output.strip().splitlines()[-1] == info["url"]
    assert info["job_id"] and info["restarts"] == 0 and info["api_key_required"] is True
    assert info["model"] == folder and info["node"] in slurm_env.nodes
    assert (run / "serve-job.json").exists()
    env = {**os.environ, **slurm_env.env}
    try:
        expected = local_engine(folder, local_files_only=True).complete(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": _data_url()}},
                        {"type": "text", "text": "What is the man doing?"},
                    ],
                }
            ],
            max_tokens=6,
        )
        assert ask(info) == expected

        batch_script = next(Path(info_job(run)["folder"]).glob("*_submission.sh")).read_text()
        assert "#SBATCH --signal=USR2@90" in batch_script  # what Slurm sends before the limit
        subprocess.run(["scancel", str(info["job_id"]), "--signal", "USR2"], env=env, check=True, timeout=30)
        release_requeued(str(info["job_id"]), env, timeout_s=180)  # not the ~120 s hold of a requeue
        restarted = wait_for(run, lambda new: new["restarts"] >= 1, timeout_s=300)
        assert restarted["job_id"] == info["job_id"] and restarted["started"] > info["started"]
        assert ask(restarted) == expected
    finally:
        stopped = CliRunner().invoke(cli, ["serve", "stop", str(run)])
    assert stopped.exit_code == 0 and f"cancelled serve job {info['job_id']}" in stopped.output
    assert not (run / "endpoint.json").exists() and not (run / "serve-job.json").exists()
    deadline = time.monotonic() + 60
    while job_state(info["job_id"], env) not in ("CANCELLED", "CANCELLED+"):
        assert time.monotonic() < deadline, job_state(info["job_id"], env)
        time.sleep(1)


def _data_url() -> str:
    from som.chat_api import image_content

    return image_content(data_path("extreme_ironing.jpg").read_bytes())["image_url"]["url"]
