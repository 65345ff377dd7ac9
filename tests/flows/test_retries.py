"""Prefect retries only what a later attempt may fix (tasks/retries.py): an outage is retried,
wrong credentials fail the shard task at once, with the storage error as the reason."""

from __future__ import annotations

import time
from pathlib import Path
from uuid import UUID

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from som import storage
from som.dataset.shard import MarkConfig
from som.dataset.sources import SourceImage
from tasks.marking import RETRY_DELAYS, mark_shard_task
from tasks.retries import retry_if_transient
from tests.helpers.data import data_path
from tests.helpers.s3 import use_s3

FAST = MarkConfig(segmenter="slic", segmenter_params={"n_segments": 12})


def run_counts(flow_run_id: UUID, timeout: float = 30.0) -> list[int]:
    """How many times each task run of the flow run ran (1: never retried).

    Prefect sends task-run states to the API in the background, so the server may still show
    a task run as not yet run when the flow call returns: wait until every one is final."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if runs and all(run.state is not None and run.state.is_final() for run in runs):
                return [run.run_count for run in runs]
            if time.monotonic() > deadline:
                states = [run.state.type if run.state else None for run in runs]
                raise AssertionError(f"task runs not final after {timeout:.0f} s: {states}")
            time.sleep(0.2)


@task(retries=3, retry_delay_seconds=0, retry_condition_fn=retry_if_transient)
def fails_once(error: BaseException, marker: Path) -> str:
    if not marker.exists():
        marker.touch()
        raise error
    return "done"


@flow
def fails_once_flow(error: BaseException, marker: Path) -> str:
    return fails_once(error, marker)


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (PermissionError("The AWS Access Key Id you provided does not exist in our records."), False),
        (FileNotFoundError("s3://bucket/missing"), False),
    ],
)
def test_only_transient_errors_are_retried(prefect_api, tmp_path: Path, error: BaseException, retried: bool) -> None:
    state = fails_once_flow(error, tmp_path / "marker", return_state=True)
    assert state.is_completed() is retried, state.message
    assert run_counts(state.state_details.flow_run_id) == [2 if retried else 1]
    if not retried:
        assert str(error) in state.message, "the permanent error is the failure's reason"


def test_bad_credentials_fail_the_shard_task_at_once(prefect_api, s3_server, s3_prefix, monkeypatch) -> None:
    """Before: five retries, ~31 s of back-off, for an error no retry fixes."""
    use_s3(monkeypatch, s3_server)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + s3_server.secret_key)
    storage.clear_filesystems()
    photo = data_path("waterview.jpg")
    item = SourceImage(uri=str(photo), size=photo.stat().st_size, fingerprint="test")

    @flow
    def one_shard() -> object:
        return mark_shard_task(0, [item], storage.join(s3_prefix, "dataset"), FAST)

    started = time.monotonic()
    state = one_shard(return_state=True)
    seconds = time.monotonic() - started
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), PermissionError), state.message
    assert "S3 refused access" in state.message and "AWS_SECRET_ACCESS_KEY" in state.message, state.message
    assert run_counts(state.state_details.flow_run_id) == [1]
    assert seconds < RETRY_DELAYS[-1], f"{seconds:.1f} s: the failure waited for retries"


def test_a_task_retry_is_a_warning_with_the_task_error_class_and_attempt(
    prefect_api, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Prefect announces a retry at INFO only; an outage carried by task retries left no
    warning (issue 11 item 9)."""
    import logging

    caplog.set_level(logging.INFO)
    refused = ConnectionRefusedError(111, "Connection refused")
    state = fails_once_flow(refused, tmp_path / "marker", return_state=True)
    assert state.is_completed(), state.message
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and " attempt " in r.getMessage()
    ]
    assert len(warnings) == 1, caplog.text
    assert warnings[0].startswith("fails_once-") and warnings[0].endswith(
        " attempt 1/4 failed (ConnectionRefusedError: [Errno 111] Connection refused); retrying"
    ), warnings
