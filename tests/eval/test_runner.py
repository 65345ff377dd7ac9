"""answer_shard with the tiny LLaVA on real POPE questions: shards, resume after a kill or a
torn shard file, reruns that answer nothing, stale prompts, bad input; score_variant."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from som.eval import responses
from som.eval.runner import answer_shard, score_variant, shard_of
from som.eval.tagging import ItemImageError
from tests.helpers.eval_sources import pope_source, reference_available

pytestmark = pytest.mark.skipif(not reference_available(), reason="../shared/reference is not there")

FAST = {"local_files_only": True, "max_new_tokens": 4}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.helpers.tiny_llava import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="module")
def pope(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(pope_source(tmp_path_factory.mktemp("pope"), per_split=4))  # 12 questions


def shard_lines(eval_dir: Path, variant: str = "plain", shard: int = 0) -> list[dict]:
    path = Path(responses.shard_url(str(eval_dir / "pope" / variant), shard))
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_shards_cover_every_item_once() -> None:
    items = list(range(11))
    parts = [shard_of(items, s, 3) for s in range(3)]  # type: ignore[arg-type]
    assert sorted(x for part in parts for x in part) == items
    assert [len(p) for p in parts] == [4, 4, 3]
    with pytest.raises(ValueError, match="shard must be in"):
        shard_of(items, 3, 3)  # type: ignore[arg-type]


def test_two_shards_answer_everything_and_a_rerun_answers_nothing(tiny_model: str, pope: str, tmp_path: Path) -> None:
    eval_dir = str(tmp_path / "eval")
    first = [
        answer_shard(tiny_model, "pope", pope, "plain", s, 2, eval_dir, batch_size=4, model_kwargs=FAST)
        for s in range(2)
    ]
    assert [(c["total"], c["answered"], c["skipped"]) for c in first] == [(6, 6, 0), (6, 6, 0)]
    merged = responses.read_responses(str(tmp_path / "eval" / "pope" / "plain"))
    assert len(merged) == 12 and {r.model for r in merged.values()} == {tiny_model}
    # a rerun, even with another shard count, finds every question answered and loads no model
    hidden = Path(tiny_model).rename(tmp_path / "model-moved")
    try:
        again = [answer_shard(tiny_model, "pope", pope, "plain", s, 3, eval_dir, model_kwargs=FAST) for s in range(3)]
    finally:
        hidden.rename(tiny_model)
    assert sum(c["answered"] for c in again) == 0 and sum(c["skipped"] for c in again) == 12
    scores = score_variant("pope", pope, "plain", eval_dir)
    assert set(scores["splits"]) == {"random", "popular", "adversarial"}
    assert all(split["n"] == 4 for split in scores["splits"].values())
    assert scores["headline"] == pytest.approx(100 * scores["mean_f1"])


def test_torn_shard_file_resumes_without_re_answering(tiny_model: str, pope: str, tmp_path: Path) -> None:
    eval_dir = tmp_path / "eval"
    answer_shard(tiny_model, "pope", pope, "plain", 0, 1, str(eval_dir), limit=5, batch_size=5, model_kwargs=FAST)
    complete = shard_lines(eval_dir)
    assert len(complete) == 5
    # a crash left two whole lines and half of a third
    path = Path(responses.shard_url(str(eval_dir / "pope" / "plain"), 0))
    text = path.read_text().splitlines(keepends=True)
    path.write_text(text[0] + text[1] + text[2][: len(text[2]) // 2])
    counts = answer_shard(tiny_model, "pope", pope, "plain", 0, 1, str(eval_dir), limit=5, model_kwargs=FAST)
    assert (counts["answered"], counts["skipped"]) == (3, 2)
    resumed = shard_lines(eval_dir)
    assert resumed[:2] == complete[:2]  # untouched, same timestamps
    assert [r["id"] for r in resumed] == [r["id"] for r in complete]
    assert [r["answer"] for r in resumed] == [r["answer"] for r in complete]  # greedy: same answers


@pytest.mark.slow
def test_task_killed_mid_shard_resumes_where_it_stopped(tiny_model: str, pope: str, tmp_path: Path) -> None:
    """A real SIGKILL of the process answering a shard, then the same call again."""
    eval_dir = tmp_path / "eval"
    call = (
        f"from som.eval.runner import answer_shard; answer_shard({tiny_model!r}, 'pope', {pope!r}, 'plain', "
        f"0, 1, {str(eval_dir)!r}, batch_size=1, model_kwargs={{'local_files_only': True}})"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    log = tmp_path / "task.log"
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-c", call], env=env, cwd=REPO, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 120
        while len(shard_lines(eval_dir)) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    before = shard_lines(eval_dir)
    assert 2 <= len(before) < 12, f"kill came too late ({len(before)} answers): {log.read_text()[-2000:]}"
    counts = answer_shard(
        tiny_model, "pope", pope, "plain", 0, 1, str(eval_dir), batch_size=4, model_kwargs={"local_files_only": True}
    )
    assert (counts["answered"], counts["skipped"]) == (12 - len(before), len(before))
    after = shard_lines(eval_dir)
    assert after[: len(before)] == before
    assert len({r["id"] for r in after}) == len(after) == 12


def test_stale_prompts_are_asked_again_and_other_models_refused(tiny_model: str, pope: str, tmp_path: Path) -> None:
    eval_dir = tmp_path / "eval"
    answer_shard(tiny_model, "pope", pope, "plain", 0, 1, str(eval_dir), limit=3, model_kwargs=FAST)
    path = Path(responses.shard_url(str(eval_dir / "pope" / "plain"), 0))
    lines = shard_lines(eval_dir)
    lines[1]["prompt_hash"] = "from-an-older-prompt"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(ValueError, match="1 of 3 items have no current answer"):
        score_variant("pope", pope, "plain", str(eval_dir), limit=3)
    counts = answer_shard(tiny_model, "pope", pope, "plain", 0, 1, str(eval_dir), limit=3, model_kwargs=FAST)
    assert (counts["answered"], counts["skipped"]) == (1, 2)
    after = shard_lines(eval_dir)
    assert len(after) == 3 and after[1]["prompt_hash"] != "from-an-older-prompt"
    assert score_variant("pope", pope, "plain", str(eval_dir), limit=3)["splits"]["adversarial"]["n"] == 3
    with pytest.raises(responses.ResponsesError, match="already holds answers of"):
        answer_shard("another/model", "pope", pope, "plain", 0, 1, str(eval_dir), limit=3)


def test_other_generation_settings_or_unrecorded_ones_are_asked_again(
    tiny_model: str, pope: str, tmp_path: Path
) -> None:
    """Answers remember the profile, token limit and input format; a rerun that changes any of
    them (or finds an answer from before they were recorded) asks again, and scoring refuses a
    variant whose answers mix settings."""
    eval_dir = tmp_path / "eval"
    answer_shard(tiny_model, "pope", pope, "plain", 0, 1, str(eval_dir), limit=3, model_kwargs=FAST)
    assert [r["generation"] for r in shard_lines(eval_dir)] == [
        {"input_format": 2, "max_new_tokens": 4, "prompt_profile": "auto"}
    ] * 3
    counts = answer_shard(
        tiny_model,
        "pope",
        pope,
        "plain",
        0,
        1,
        str(eval_dir),
        limit=3,
        model_kwargs={**FAST, "prompt_profile": "llava-1.5"},
    )
    assert (counts["answered"], counts["skipped"]) == (3, 0)

    path = Path(responses.shard_url(str(eval_dir / "pope" / "plain"), 0))
    lines = shard_lines(eval_dir)
    del lines[0]["generation"]  # written before settings were recorded
    lines[2]["generation"]["max_new_tokens"] = 128
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(ValueError, match="different generation settings"):
        score_variant("pope", pope, "plain", str(eval_dir), limit=3)
    counts = answer_shard(
        tiny_model,
        "pope",
        pope,
        "plain",
        0,
        1,
        str(eval_dir),
        limit=3,
        model_kwargs={**FAST, "prompt_profile": "llava-1.5"},
    )
    assert (counts["answered"], counts["skipped"]) == (2, 1)
    assert score_variant("pope", pope, "plain", str(eval_dir), limit=3)["splits"]["adversarial"]["n"] == 3


def test_tags_variant_answers_about_marked_images(tiny_model: str, pope: str, tmp_path: Path) -> None:
    eval_dir = tmp_path / "eval"
    tags = {"segmenter": "slic", "params": {"n_segments": 6}, "mark_options": {"short_side": 0, "min_tag_area": 10}}
    counts = answer_shard(
        tiny_model, "pope", pope, "tags", 0, 1, str(eval_dir), limit=2, model_kwargs=FAST, tag_options=tags
    )
    assert counts["answered"] == 2
    assert list((eval_dir / "_cache" / "tags").rglob("*.jpg"))  # the marked image, cached for every model
    assert {r["variant"] for r in shard_lines(eval_dir, "tags")} == {"tags"}
    # other tagging settings are another prompt: asked again
    tags["params"] = {"n_segments": 4}
    again = answer_shard(
        tiny_model, "pope", pope, "tags", 0, 1, str(eval_dir), limit=2, model_kwargs=FAST, tag_options=tags
    )
    assert again["answered"] == 2


def test_bad_input_names_the_problem(tiny_model: str, pope: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown variant 'marked'"):
        answer_shard(tiny_model, "pope", pope, "marked", 0, 1, str(tmp_path))
    with pytest.raises(ValueError, match="unknown benchmark 'popee'"):
        answer_shard(tiny_model, "popee", pope, "plain", 0, 1, str(tmp_path))
    with pytest.raises(ValueError, match=r"shard must be in \[0, 2\)"):
        answer_shard(tiny_model, "pope", pope, "plain", 2, 2, str(tmp_path))
    broken = tmp_path / "pope-broken"
    pope_source(broken, per_split=1)
    image = next((broken / "val2014").iterdir())
    image.unlink()
    with pytest.raises(ItemImageError, match=rf"item \d+: cannot read image .*{image.name}"):
        answer_shard(tiny_model, "pope", str(broken), "plain", 0, 1, str(tmp_path / "eval"), model_kwargs=FAST)


def test_judged_benchmark_scores_once_then_from_the_cache(tiny_model: str, tmp_path: Path) -> None:
    """LLaVA-Bench through a judge behind the local chat server: a second scoring of the same
    answers sends no request (cached under <eval_dir>/_cache/judge)."""
    from som.eval.judge import Judge
    from tests.helpers.chat_server import ChatServer, Reply
    from tests.helpers.eval_sources import llava_bench_source

    source = str(llava_bench_source(tmp_path / "llava-bench", questions=3))
    eval_dir = str(tmp_path / "eval")
    answer_shard(tiny_model, "llava_bench", source, "plain", 0, 1, eval_dir, model_kwargs=FAST)
    server = ChatServer().start()
    try:
        server.script = [Reply("8 6\nAssistant 2 is less detailed.")]
        judge = Judge(server.url, "judge-model", api_key="test-key")
        with pytest.raises(ValueError, match="scored by a judge"):
            score_variant("llava_bench", source, "plain", eval_dir)
        first = score_variant("llava_bench", source, "plain", eval_dir, judge=judge)
        assert len(server.requests) == 3 and first["headline"] == pytest.approx(75.0)
        again = score_variant(
            "llava_bench", source, "plain", eval_dir, judge=Judge(server.url, "judge-model", api_key="test-key")
        )
        assert len(server.requests) == 3 and again["judge"]["cache_hits"] == 3
        assert {k: v for k, v in again.items() if k != "judge"} == {k: v for k, v in first.items() if k != "judge"}
    finally:
        server.stop()
    assert list((tmp_path / "eval" / "_cache" / "judge").rglob("*"))


def test_answers_and_tag_cache_in_object_storage(
    tiny_model: str, pope: str, s3_server, s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from som import storage
    from tests.helpers.s3 import use_s3

    use_s3(monkeypatch, s3_server)
    eval_dir = storage.join(s3_prefix, "eval")
    tags = {"segmenter": "slic", "params": {"n_segments": 6}, "mark_options": {"short_side": 0, "min_tag_area": 10}}
    for shard in (0, 1):
        counts = answer_shard(
            tiny_model, "pope", pope, "tags", shard, 2, eval_dir, limit=4, model_kwargs=FAST, tag_options=tags
        )
        assert counts["answered"] == 2
    folder = responses.variant_dir(eval_dir, "pope", "tags")
    assert [u.rsplit("/", 1)[-1] for u in responses.shard_files(folder)] == [
        "responses-00000.jsonl",
        "responses-00001.jsonl",
    ]
    assert storage.list_images(storage.join(eval_dir, "_cache", "tags"))  # marked images cached in S3
    again = answer_shard(tiny_model, "pope", pope, "tags", 0, 1, eval_dir, limit=4, model_kwargs=FAST, tag_options=tags)
    assert (again["answered"], again["skipped"]) == (0, 4)
    assert score_variant("pope", pope, "tags", eval_dir, limit=4, tag_options=tags)["headline"] >= 0


@pytest.mark.gpu
def test_shard_answered_on_cuda_in_bf16(tmp_path: Path) -> None:
    """The same code path on a GPU node: auto device and dtype, batched, resumable."""
    from tests.helpers.tiny_llava import build_tiny_llava

    model = build_tiny_llava(tmp_path / "model")
    pope = str(pope_source(tmp_path / "pope", per_split=4))
    eval_dir = str(tmp_path / "eval")
    counts = answer_shard(model, "pope", pope, "plain", 0, 1, eval_dir, batch_size=4, model_kwargs=FAST)
    assert (counts["answered"], counts["total"]) == (12, 12)
    assert answer_shard(model, "pope", pope, "plain", 0, 1, eval_dir, model_kwargs=FAST)["answered"] == 0
