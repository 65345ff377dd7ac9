"""The GPT judge over a local chat-completions server: MM-Vet's retry rule, the reply cache, and
MM-Vet scored end to end from judge replies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from som.eval.benchmarks.mmvet import (
    JUDGE_MAX_TOKENS,
    RETRY_SUFFIX,
    MMVetBenchmark,
    grading_prompt,
    load_grades,
)
from som.eval.items import EvalItem
from som.eval.judge import Judge
from tests.eval.reference import reference
from tests.helpers.chat_server import ChatServer, Reply


def judge_for(server: ChatServer, **kwargs: Any) -> Judge:
    kwargs.setdefault("backoff_base", 0.01)
    return Judge(server.url, "gpt-4-0613", "sk-test", **kwargs)


def mmvet_items() -> list[EvalItem]:
    return [
        EvalItem("v1_0", "What is x in the equation?", None, {"answer": "-1<AND>-5", "capabilities": ["math", "ocr"]}),
        EvalItem("v1_1", "What is d?", None, {"answer": "1.25<OR>5/4", "capabilities": ["ocr"]}),
    ]


def _row_prediction(body: dict[str, Any]) -> str:
    """The prediction cell of the open row the judge must complete."""
    prompt = body["messages"][-1]["content"].removesuffix(RETRY_SUFFIX)
    return prompt.rsplit("\n", 1)[-1].split(" | ")[2]


def test_unparsable_grade_retries_with_rising_temperature_then_zero(chat_server: ChatServer) -> None:
    chat_server.script = [Reply("Correct!")]
    with judge_for(chat_server) as judge:
        scores = MMVetBenchmark().score(mmvet_items()[:1], {"v1_0": "x = 3"}, judge=judge)
    bodies = [r.body for r in chat_server.requests]
    assert [b["temperature"] for b in bodies] == [0.0, 0.0, 0.5, 1.0, 1.5]
    assert all(b["model"] == "gpt-4-0613" and b["max_tokens"] == JUDGE_MAX_TOKENS for b in bodies)
    assert not bodies[0]["messages"][-1]["content"].endswith(RETRY_SUFFIX)
    assert all(b["messages"][-1]["content"].endswith(RETRY_SUFFIX) for b in bodies[1:])
    assert scores["grades"]["v1_0"]["score"] == [0.0] and scores["unparsed_grades"] == 1
    assert scores["total"] == 0.0


def test_late_parsable_grade_is_used(chat_server: ChatServer) -> None:
    chat_server.script = [Reply("hmm"), Reply("0.5 because")]
    with judge_for(chat_server) as judge:
        scores = MMVetBenchmark().score(mmvet_items()[:1], {"v1_0": "x = -1"}, judge=judge)
    assert len(chat_server.requests) == 2
    assert scores["grades"]["v1_0"] == {"model": ["gpt-4-0613"], "content": ["0.5"], "score": [0.5]}
    assert scores["headline"] == pytest.approx(50.0)


def test_mmvet_scores_from_judge_grades_and_cache(chat_server: ChatServer, tmp_path: Path) -> None:
    grades = {"x = -1 or x = -5": "1.0", "5/4": "0.4"}
    chat_server.script = lambda body, index: Reply(grades[_row_prediction(body)])
    answers = {"v1_0": "x = -1 or x = -5", "v1_1": "5/4"}
    cache = str(tmp_path / "judge-cache")
    with judge_for(chat_server) as judge:
        scores = MMVetBenchmark().score(mmvet_items(), answers, judge=judge, cache_url=cache)
    assert len(chat_server.requests) == 2
    asked = {r.body["messages"][-1]["content"] for r in chat_server.requests}
    assert asked == {grading_prompt(i.prompt, i.meta["answer"], answers[i.id]) for i in mmvet_items()}
    assert scores["total"] == pytest.approx(70.0)
    assert scores["capabilities"] == {"ocr": pytest.approx(70.0), "math": pytest.approx(100.0)}
    assert scores["judge"]["model"] == "gpt-4-0613" and scores["judge_models"] == ["gpt-4-0613"]
    out = tmp_path / "grades.json"
    out.write_text(json.dumps(scores["grades"]))
    assert load_grades(out) == {"v1_0": [1.0], "v1_1": [0.4]}
    # Same answers, same judge: every reply comes from the cache, the server sees nothing new.
    with judge_for(chat_server, cache_url=cache) as judge:
        again = MMVetBenchmark().score(mmvet_items(), answers, judge=judge)
        assert judge.record()["cache_hits"] == 2 and judge.record()["requests"] == 0
    assert len(chat_server.requests) == 2
    assert again["total"] == scores["total"]
    # A changed answer is a new key: only it is asked.
    with judge_for(chat_server, cache_url=cache) as judge:
        MMVetBenchmark().score(mmvet_items(), {**answers, "v1_1": "x = -1 or x = -5"}, judge=judge)
    assert len(chat_server.requests) == 3


def test_judge_asks_with_system_message_and_limits_concurrency(chat_server: ChatServer) -> None:
    chat_server.script = [Reply("ok", delay=0.1)]
    with judge_for(chat_server, max_concurrency=2) as judge:
        replies = judge.map(lambda n: judge.ask(f"q{n}", system="be strict"), range(6))
    assert replies == ["ok"] * 6 and chat_server.max_in_flight == 2
    body = chat_server.requests[0].body
    assert body["temperature"] == 0.0 and body["messages"][0] == {"role": "system", "content": "be strict"}


def test_judge_needs_a_model_and_mmvet_needs_a_judge() -> None:
    with pytest.raises(ValueError, match="pinned model"):
        Judge("http://127.0.0.1:9/v1", "")
    with pytest.raises(ValueError, match="mmvet: scoring needs a judge"):
        MMVetBenchmark().score(mmvet_items(), {"v1_0": "a", "v1_1": "b"})


def test_mmvet_items_from_the_official_file() -> None:
    folder = reference("mmvet")
    items = MMVetBenchmark().load_items(str(folder))
    assert len(items) == 218
    first = items[0]
    assert (first.id, first.prompt, first.meta["answer"]) == ("v1_0", "What is x in the equation?", "-1<AND>-5")
    assert first.image == str(folder / "images" / "v1_0.png")
    assert sorted(first.meta["capabilities"]) == ["math", "ocr"]
    assert len(MMVetBenchmark().load_items(str(folder), limit=5)) == 5


def test_replaying_the_official_grades_reproduces_llava_13b(chat_server: ChatServer) -> None:
    """A judge that answers each sample's prompt with the official run's grade gives 36.1 (published)."""
    results = json.loads(reference("mmvet", "results", "llava-v1.5-13b.json").read_text())
    official = json.loads(reference("mmvet", "results", "llava-v1.5-13b_gpt-4-grade-1runs.json").read_text())
    items = MMVetBenchmark().load_items(str(reference("mmvet")))
    replies = {grading_prompt(i.prompt, i.meta["answer"], results[i.id]): official[i.id]["content"][0] for i in items}
    chat_server.script = lambda body, index: Reply(replies[body["messages"][-1]["content"]])
    with judge_for(chat_server, max_concurrency=4) as judge:
        scores = MMVetBenchmark().score(items, results, judge=judge)
    assert len(chat_server.requests) == 218
    assert round(scores["total"], 1) == 36.1
    assert scores["official_rounding"]["total"] == 36.1
    assert {k: v["score"] for k, v in scores["grades"].items()} == {k: v["score"] for k, v in official.items()}


def test_mmvet_runs_are_separate_requests_averaged_and_cached(chat_server: ChatServer, tmp_path: Path) -> None:
    """runs=3 (the paper's 5, smaller): each run is a fresh request at temperature 0, not a
    cache hit of the first; the scores are the mean over runs and the population std."""
    chat_server.script = [Reply("1.0"), Reply("0.5"), Reply("0.0")]
    cache = str(tmp_path / "judge-cache")
    bench = MMVetBenchmark(runs=3)
    with judge_for(chat_server, max_concurrency=1, cache_url=cache) as judge:
        scores = bench.score(mmvet_items()[:1], {"v1_0": "x = -1"}, judge=judge)
    bodies = [r.body for r in chat_server.requests]
    assert len(bodies) == 3 and len({json.dumps(b, sort_keys=True) for b in bodies}) == 1
    assert bodies[0]["temperature"] == 0.0 and [m["role"] for m in bodies[0]["messages"]] == ["user"]
    assert scores["grades"]["v1_0"] == {
        "model": ["gpt-4-0613"] * 3,
        "content": ["1.0", "0.5", "0.0"],
        "score": [1.0, 0.5, 0.0],
    }
    assert scores["run_totals"] == pytest.approx([100.0, 50.0, 0.0])
    assert scores["total"] == pytest.approx(50.0) and scores["std"] == pytest.approx((5000 / 3) ** 0.5)
    with judge_for(chat_server, cache_url=cache) as judge:
        again = bench.score(mmvet_items()[:1], {"v1_0": "x = -1"}, judge=judge)
        assert judge.record()["cache_hits"] == 3
    assert len(chat_server.requests) == 3 and again["grades"] == scores["grades"]
