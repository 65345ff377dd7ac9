"""The som-evaluate flow through the local Slurm cluster: job arrays of 2 shards answering real
POPE and MME questions with the tiny LLaVA, scores.json, the table artifact, a rerun that
answers nothing new; plus input checks that fail before anything is submitted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.eval_sources import mme_source, pope_source, reference_available

pytestmark = pytest.mark.skipif(not reference_available(), reason="../shared/reference is not there")

FAST = {"local_files_only": True, "max_new_tokens": 4}
TAGS = {"segmenter": "slic", "params": {"n_segments": 6}, "mark_options": {"short_side": 0, "min_tag_area": 10}}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.helpers.tiny_llava import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


def _artifact_rows(flow_run_id) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), type=ArtifactFilterType(any_=["table"])
            )
        )
    assert len(artifacts) == 1
    data = artifacts[0].data
    return json.loads(data) if isinstance(data, str) else data


@pytest.mark.slow
def test_evaluate_on_slurm_arrays_then_rerun_answers_nothing(
    prefect_api, slurm_cluster, tiny_model, tmp_path, monkeypatch
) -> None:
    from flows.evaluate import evaluate

    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # array tasks inherit it: 2 cores, 4 Slurm slots
    data = {"pope": str(pope_source(tmp_path / "pope", per_split=1)), "mme": str(mme_source(tmp_path / "mme"))}
    run_dir = tmp_path / "run"
    params = dict(
        model=tiny_model,
        benchmarks=["pope", "mme"],
        run_dir=str(run_dir),
        data=data,
        variants=["plain", "tags"],
        shards=2,
        executor="slurm",
        slurm={"partition": "debug", "timeout_min": 5},
        model_kwargs=FAST,
        tag_options=TAGS,
        poll_s=1.0,
    )

    state = evaluate(**params, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["answered"] == {"pope": {"plain": 3, "tags": 3}, "mme": {"plain": 4, "tags": 4}}
    for benchmark in ("pope", "mme"):
        for variant in ("plain", "tags"):
            folder = run_dir / "eval" / benchmark / variant
            assert sorted(p.name for p in folder.iterdir()) == ["responses-00000.jsonl", "responses-00001.jsonl"]
        saved = json.loads((run_dir / "eval" / benchmark / "scores.json").read_text())
        assert saved["model"] == tiny_model and set(saved["variants"]) == {"plain", "tags"}
        assert saved["variants"] == result["scores"][benchmark]
    assert sum(s["n"] for s in result["scores"]["pope"]["plain"]["splits"].values()) == 3
    assert set(result["scores"]["mme"]["tags"]["tasks"]) == {"existence", "count"}
    # each (benchmark, variant) ran as one Slurm array of 2 tasks (submitit logs: <array>_<index>_0_log.out)
    assert len(list((run_dir / "eval" / "_jobs").iterdir())) == 4
    for folder in (run_dir / "eval" / "_jobs").iterdir():
        logs = [p.name.split("_") for p in folder.glob("*_log.out")]
        assert len({array for array, *_ in logs}) == 1 and sorted(index for _, index, *_ in logs) == ["0", "1"]

    rows = _artifact_rows(state.state_details.flow_run_id)
    assert [row["benchmark"] for row in rows] == ["pope", "mme"]
    column = f"{Path(tiny_model).name} (plain)"
    assert rows[0][column] == result["table"][0][column] != "–"
    assert rows[1]["LLaVA-1.5-13B (paper)"] == "1531.3"

    before = {p: p.read_bytes() for p in (run_dir / "eval").rglob("responses-*.jsonl")}
    again = evaluate(**params)
    assert again["answered"] == {"pope": {"plain": 0, "tags": 0}, "mme": {"plain": 0, "tags": 0}}
    assert {p: p.read_bytes() for p in (run_dir / "eval").rglob("responses-*.jsonl")} == before
    assert again["scores"] == result["scores"]


def test_bad_inputs_fail_before_any_job(prefect_api, tmp_path) -> None:
    from flows.evaluate import evaluate

    base = dict(model="unused", run_dir=str(tmp_path), executor="local")
    cases = [
        (dict(benchmarks=["pope"], data={}), "no data source for pope"),
        (dict(benchmarks=["pope"], data={"pope": "x"}, variants=["plain", "boxes"]), "unknown variant 'boxes'"),
        (dict(benchmarks=["mmvet"], data={"mmvet": "x"}), "graded by a judge model"),
        (dict(benchmarks=["nope"], data={"nope": "x"}), "unknown benchmark 'nope'"),
    ]
    for extra, message in cases:
        state = evaluate(**base, **extra, return_state=True)
        assert state.is_failed()
        with pytest.raises(ValueError, match=message):
            state.result()
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_cli_runs_the_flow_with_local_jobs(prefect_api, tiny_model, tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    from flows.eval_cli import run

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pope = pope_source(tmp_path / "pope", per_split=1)
    run_dir = tmp_path / "run"
    args = [
        "--model",
        tiny_model,
        "--benchmark",
        "pope",
        "--data",
        f"pope={pope}",
        "--variants",
        "plain",
        "--shards",
        "1",
        "--run-dir",
        str(run_dir),
        "--executor",
        "local",
        "--limit",
        "2",
        "--batch-size",
        "2",
    ]
    result = CliRunner().invoke(run, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout[: result.stdout.rindex("]") + 1])
    assert table[0]["benchmark"] == "pope" and table[0][f"{Path(tiny_model).name} (plain)"] != "–"
    assert len((run_dir / "eval" / "pope" / "plain" / "responses-00000.jsonl").read_text().splitlines()) == 2
    assert (run_dir / "eval" / "pope" / "scores.json").exists()

    bad = CliRunner().invoke(run, [*args[:6], "--data", "pope", *args[8:]])
    assert bad.exit_code != 0 and "expected KEY=VALUE" in bad.output


def test_judge_spec_and_job_folders(tmp_path, monkeypatch) -> None:
    from som.eval.plan import jobs_folder, make_judge

    judge = make_judge("openai:gpt-4-0613@http://127.0.0.1:9/v1")
    try:
        assert judge.model == "gpt-4-0613" and "127.0.0.1:9" in repr(judge)
    finally:
        judge.close()
    assert make_judge(None) is None
    assert jobs_folder(str(tmp_path / "run"), "pope", "tags") == str(tmp_path / "run" / "eval" / "_jobs" / "pope-tags")
    monkeypatch.setenv("SOMFLOW_JOBS_DIR", str(tmp_path / "jobs"))
    remote = Path(jobs_folder("s3://bucket/runs/a", "mme", "plain"))
    assert remote.is_relative_to(tmp_path / "jobs") and remote.name == "mme-plain"


def test_inputs_resolve_benchmark_aliases() -> None:
    from som.eval.plan import check_inputs
    from som.eval.report import model_label

    sources = check_inputs(
        ["llava-bench", "pope"], {"llava_bench": "a", "pope": "b", "unused": "c"}, ["plain"], 1, judge="gpt-4-0314"
    )
    assert sources == {"llava_bench": "a", "pope": "b"}
    assert model_label("openai:gpt-4o@http://127.0.0.1:8000/v1") == "gpt-4o"
    assert (
        model_label("runs/som-13b/hf/") == "som-13b" and model_label("llava-hf/llava-1.5-13b-hf") == "llava-1.5-13b-hf"
    )
