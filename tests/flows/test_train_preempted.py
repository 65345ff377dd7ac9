"""The training flow on the local Slurm cluster, its job preempted twice (issue 11 chaos list):
submitit requeues it each time, each restart resumes from the latest complete checkpoint, the
flow completes, `metrics.jsonl` holds every step exactly once, and the model is exported once.

Preemption is what submitit's `_interrupt()` sends (SIGTERM, then USR2: Slurm's preemption
signals); a requeued job is held 120 s by Slurm, so the test releases it (INFRA-NOTES)."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import submitit

from flows.train import train_llava
from tests.helpers.slurm_requeue import release_requeued, squeue_state
from tests.helpers.training import flow_config

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)
STEPS = 300  # the tiny model takes ~30-100 ms a step here: long enough for a signal to land
PREEMPT_AFTER = (50, 150)  # preempt once a checkpoint of at least this step is complete
TIMEOUT_S = 240


def _config(base_config: dict[str, Any]) -> dict[str, Any]:
    return flow_config(base_config, save_every=10, max_steps=STEPS)


def _until(condition, what: str, timeout_s: float = TIMEOUT_S, poll_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(poll_s)
    return value


def _latest_complete(run_dir: Path) -> int:
    """Step of the latest complete checkpoint in the run folder (0: none)."""
    steps = [int(p.parent.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*/complete.json")]
    return max(steps, default=0)


def test_training_preempted_twice_resumes_from_its_checkpoints_and_exports_once(
    prefect_api, slurm_env, base_config, listing_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    run_dir = tmp_path / "runs" / "tiny"
    outcome: dict[str, Any] = {}

    def run_flow() -> None:
        outcome["state"] = train_llava(
            data=str(listing_data),
            run_dir=str(run_dir),
            image_root=str(listing_data.parent),
            config=_config(base_config),
            executor="slurm",
            retries=0,
            slurm={"partition": "debug", "timeout_min": 10},
            return_state=True,
        )

    flow = threading.Thread(target=run_flow, daemon=True)
    flow.start()
    submitted = _until(lambda: sorted(run_dir.rglob("*_submitted.pkl")), "the training job was submitted")
    folder, job_id = submitted[0].parent, submitted[0].name.split("_")[0]
    job = submitit.SlurmJob(folder=folder, job_id=job_id)
    resumed_expected = []
    for step in PREEMPT_AFTER:
        _until(lambda step=step: _latest_complete(run_dir) >= step or not flow.is_alive(), f"checkpoint {step}")
        assert flow.is_alive(), f"the flow ended before checkpoint {step}: {outcome}"
        job._interrupt()  # preemption: SIGTERM, then USR2; submitit asks checkpoint() and requeues
        _until(lambda: squeue_state(job_id) == "PENDING", f"job {job_id} requeued after step {step}")
        resumed_expected.append(_latest_complete(run_dir))  # the job is stopped: no newer checkpoint
        release_requeued(job_id)
    flow.join(TIMEOUT_S)
    assert not flow.is_alive(), "the flow did not finish"
    state = outcome["state"]
    assert state.is_completed(), state.message
    export = Path(state.result())
    assert export == run_dir / "hf" and (export / "config.json").exists()

    logs = "".join(p.read_text() for p in folder.glob("*_log.err"))
    resumed = [int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", logs)]
    log.info("preempted after checkpoints %s; resumed at steps %s", PREEMPT_AFTER, resumed)
    assert resumed == resumed_expected, (resumed, resumed_expected)
    assert all(step >= after for step, after in zip(resumed, PREEMPT_AFTER, strict=True)), resumed
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1)), "every step exactly once, none lost"
    assert logs.count("exported the model to") == 1, "exported once, by the last run only"
    assert sorted(run_dir.rglob("*_submitted.pkl")) == submitted, "one job, requeued (not resubmitted)"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["resumed_from_step"] == resumed_expected[-1]
