"""The benchmarks LLaVA-1.5 reports beyond POPE/MME (VQAv2, GQA, VizWiz, ScienceQA-IMG, TextVQA,
MMBench, MMBench-CN, SEED with video) through som-evaluate on the local Slurm cluster: 2-shard
arrays answering with the tiny LLaVA, scores or upload files in the run folder, and a rerun
after a shard was killed mid-write answering only what that shard lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from som.eval.registry import get_benchmark
from tests.helpers.eval_sources import reference_available
from tests.helpers.suite_sources_gqa_seed import gqa_source, seed_source
from tests.helpers.suite_sources_sqa_mmbench import mmbench_source, sqa_source
from tests.helpers.suite_sources_vqa import textvqa_source, vizwiz_source, vqav2_source

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not reference_available(), reason="../shared/reference is not there"),
]

FAST = {"local_files_only": True, "max_new_tokens": 3}
SCORED = ("gqa", "sqa", "textvqa", "mmbench", "mmbench_cn", "seed")
UPLOAD_ONLY = {"vqav2": "vqav2_test-dev_upload.json", "vizwiz": "upload"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.helpers.tiny_llava import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


def sources(root: Path) -> dict[str, str]:
    """LLaVA's playground/data/eval layout, a few questions each."""
    folders = {
        "vqav2": vqav2_source(root / "vqav2", n=3),
        "gqa": gqa_source(root / "gqa", n=3),
        "vizwiz": vizwiz_source(root / "vizwiz", n=3),
        "sqa": sqa_source(root / "scienceqa", n=4),
        "textvqa": textvqa_source(root / "textvqa", n=3),
        "mmbench": mmbench_source(root / "mmbench", n=1),
        "mmbench_cn": mmbench_source(root / "mmbench", n=1, lang="cn"),
        "seed": seed_source(root / "seed_bench", n=2, with_video=True),
    }
    return {name: str(folder) for name, folder in folders.items()}


def test_llava15_benchmarks_on_slurm_arrays_then_resume_a_killed_shard(
    prefect_api, slurm_cluster, tiny_model, tmp_path, monkeypatch
) -> None:
    from flows.evaluate import evaluate

    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = sources(tmp_path / "eval")
    questions = {name: len(get_benchmark(name).load_items(source)) for name, source in data.items()}
    assert questions["seed"] > 2  # the video questions came in as frames
    run_dir = tmp_path / "run"
    params = dict(
        model=tiny_model,
        benchmarks=list(data),
        run_dir=str(run_dir),
        data=data,
        variants=["plain"],
        shards=2,
        executor="slurm",
        slurm={"partition": "debug", "timeout_min": 10},
        model_kwargs=FAST,
        poll_s=1.0,
    )

    state = evaluate(**params, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["answered"] == {name: {"plain": count} for name, count in questions.items()}
    for name in data:
        shards = sorted(p.name for p in (run_dir / "eval" / name / "plain").glob("responses-*.jsonl"))
        assert shards == ["responses-00000.jsonl", "responses-00001.jsonl"], name
        saved = json.loads((run_dir / "eval" / name / "scores.json").read_text())
        assert saved["variants"]["plain"] == result["scores"][name]["plain"]
    for name in SCORED:
        assert result["scores"][name]["plain"]["headline"] is not None, name
    assert result["scores"]["seed"]["plain"]["video_skipped"] == 0
    assert result["scores"]["seed"]["plain"]["all_accuracy"] is not None
    for name, marker in UPLOAD_ONLY.items():
        scores = result["scores"][name]["plain"]
        assert scores["submission_only"] and scores["headline"] is None, name
        assert marker in scores["upload_file"] and Path(scores["upload_file"]).is_file(), scores
    assert (run_dir / "eval" / "mmbench" / "plain" / "mmbench_dev_20230712.xlsx").is_file()
    assert (run_dir / "eval" / "mmbench_cn" / "plain" / "mmbench_dev_cn_20231003.xlsx").is_file()
    rows = {row["benchmark"]: row for row in result["table"]}
    assert rows["sqa"]["LLaVA-1.5-13B (paper)"] == "71.6" and rows["vqav2"]["LLaVA-1.5-7B (paper)"] == "78.5"
    assert rows["seed_all"]["LLaVA-1.5-13B (paper)"] == "61.6"

    # A shard killed mid-write: its last answer lost and half of the one before torn off.
    shard = run_dir / "eval" / "sqa" / "plain" / "responses-00001.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text("".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2])
    again = evaluate(**params)
    expected = {name: {"plain": 0} for name in data} | {"sqa": {"plain": 2}}
    assert again["answered"] == expected
    assert again["scores"]["sqa"] == result["scores"]["sqa"]
