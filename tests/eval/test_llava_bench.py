"""LLaVA-Bench: LLaVA's score-pair parsing, the review prompt, relative scores on hand-computed
numbers, failure handling, and items from the real COCO files plus an In-the-Wild folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from som.eval.benchmarks import FormatError
from som.eval.benchmarks.llava_bench import (
    RETRY_TEMPERATURES,
    SYSTEM_PROMPT,
    LlavaBenchBenchmark,
    Review,
    load_rules,
    parse_score_pair,
    review_prompt,
    summarize,
)
from som.eval.cli import eval_group
from som.eval.judge import Judge
from tests.api.chat_server import ChatServer, Reply
from tests.eval.reference import reference


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("8 9\nAssistant 1 was good", (8.0, 9.0)),
        ("8,9", (8.0, 9.0)),
        ("7.5 6", (7.5, 6.0)),
        ("8, 9", None),  # ", " becomes two spaces: three fields in LLaVA's split
        ("8  9", None),
        ("Assistant 1: 8\nAssistant 2: 9", None),
        ("8 9 10", None),
        ("eight nine", None),
        ("", None),
    ],
)
def test_parse_score_pair_follows_llava(reply: str, expected: tuple[float, float] | None) -> None:
    assert parse_score_pair(reply) == expected


def test_packaged_rules_equal_llavas_rule_json() -> None:
    ours = load_rules()
    official = json.loads(reference("llava", "rule.json").read_text())
    assert set(ours) == {"conv", "detail", "complex", "llava_bench_conv", "llava_bench_detail", "llava_bench_complex"}
    assert all(ours[key] == official[key] for key in ours)


def test_review_prompt_layout() -> None:
    rule = {"role": "Assistant", "prompt": "Rate them."}
    assert review_prompt("a cat", "What is it?", "A cat.", "A dog.", rule) == (
        "[Context]\na cat\n\n[Question]\nWhat is it?\n\n"
        "[Assistant 1]\nA cat.\n\n[End of Assistant 1]\n\n"
        "[Assistant 2]\nA dog.\n\n[End of Assistant 2]\n\n[System]\nRate them.\n\n"
    )


def test_relative_scores_on_hand_computed_numbers() -> None:
    reviews = [
        Review("0", "conv", (8.0, 6.0), "", 1),
        Review("1", "conv", (10.0, 8.0), "", 1),
        Review("2", "detail", (5.0, 5.0), "", 1),
        Review("3", "complex", None, "???", 3),
    ]
    summary = summarize(reviews)
    assert list(summary) == ["conv", "detail", "all"]
    assert summary["conv"]["relative"] == pytest.approx(14 / 18 * 100)  # 77.78
    assert summary["conv"]["official_rounding"] == 77.8
    assert summary["conv"]["reference"] == pytest.approx(90.0) and summary["conv"]["model"] == pytest.approx(70.0)
    assert summary["all"]["relative"] == pytest.approx(19 / 23 * 100) and summary["all"]["n"] == 3
    # LLaVA's rule: the unparsable review counts as (-1, -1) in its category and in "all".
    compat = summarize(reviews, llava_failures=True)
    assert compat["complex"]["relative"] == pytest.approx(100.0) and compat["complex"]["n"] == 1
    assert compat["all"]["relative"] == pytest.approx((19 - 1) / (23 - 1) * 100)


def test_items_from_the_coco_files() -> None:
    folder = reference("llava", "llava_bench_coco")
    items = LlavaBenchBenchmark(images="s3://coco/val2014").load_items(str(folder))
    assert len(items) == 90
    assert {item.meta["category"] for item in items} == {"conv", "detail", "complex"}
    first = items[0]
    assert (first.id, first.prompt) == ("0", "What is the color of the two suitcases in the image?")
    assert first.image == "s3://coco/val2014/000000441147.jpg"
    assert first.meta["rule"] == "conv"
    assert first.meta["reference"].startswith("The colors of the two suitcases")
    captions, boxes = first.meta["context"].split("\n\n")
    assert len(captions.split("\n")) == 5 and boxes.split("\n")[0] == "suitcase: [0.167, 0.025, 0.989, 0.445]"


def write_wild(folder: Path) -> None:
    """A two-question In-the-Wild folder in the published format."""
    questions = [
        {"question_id": 0, "image": "001.jpg", "text": "What is the name of this famous sight?", "category": "conv"},
        {"question_id": 1, "image": "001.jpg", "text": "Describe this photo in detail.", "category": "detail"},
    ]
    folder.mkdir(parents=True)
    (folder / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (folder / "context.jsonl").write_text(json.dumps({"id": "001", "image": "001.jpg", "caption": "The Diamond Head crater."}) + "\n")
    (folder / "answers_gpt4.jsonl").write_text(
        json.dumps({"question_id": 1, "text": "A crater by the sea."}) + "\n"
        + json.dumps({"question_id": 0, "text": "Diamond Head."}) + "\n")


def test_wild_scores_through_the_judge(chat_server: ChatServer, tmp_path: Path) -> None:
    write_wild(tmp_path / "wild")
    bench = LlavaBenchBenchmark()
    items = bench.load_items(str(tmp_path / "wild"))
    assert [(i.id, i.meta["rule"], i.meta["reference"]) for i in items] == [
        ("0", "llava_bench_conv", "Diamond Head."), ("1", "llava_bench_detail", "A crater by the sea.")]
    assert items[0].image == str(tmp_path / "wild" / "images" / "001.jpg")

    def reply(body: dict[str, Any], index: int) -> Reply:
        content = body["messages"][-1]["content"]
        if "[Question]\nWhat is the name" in content:
            return Reply("8 6\nAssistant 2 names the wrong crater.")
        return Reply("I think both are fine.")  # never a score pair

    chat_server.script = reply
    with Judge(chat_server.url, "gpt-4-0314", "sk-test", cache_url=str(tmp_path / "cache")) as judge:
        scores = bench.score(items, {"0": "Koko Head.", "1": "A mountain."}, judge=judge)
    conv = [r.body for r in chat_server.requests if "What is the name" in r.body["messages"][-1]["content"]]
    assert len(conv) == 1
    assert conv[0]["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert conv[0]["messages"][1]["content"].startswith("[Context]\nThe Diamond Head crater.\n\n[Question]")
    assert "[Assistant 1]\nDiamond Head.\n" in conv[0]["messages"][1]["content"]
    assert "[Assistant 2]\nKoko Head.\n" in conv[0]["messages"][1]["content"]
    detail = [r.body["temperature"] for r in chat_server.requests if "Describe this" in r.body["messages"][-1]["content"]]
    assert detail == [0.0, *RETRY_TEMPERATURES]
    assert scores["unparsed"] == 1
    assert scores["headline"] == pytest.approx(75.0)  # only the parsable review counts
    assert scores["categories"]["conv"]["relative"] == pytest.approx(75.0)
    assert scores["llava_compat"]["all"]["relative"] == pytest.approx((6 - 1) / (8 - 1) * 100)
    assert scores["judge"]["model"] == "gpt-4-0314"
    with pytest.raises(ValueError, match="llava_bench: scoring needs a judge"):
        bench.score(items, {"0": "x", "1": "y"})


def test_cli_summarises_llava_review_files(tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.jsonl"
    rows = [("llava_bench_conv", [8, 6]), ("llava_bench_conv", [10, 8]), ("llava_bench_detail", [-1, -1])]
    reviews.write_text("".join(json.dumps({"question_id": i, "category": c, "content": "", "tuple": t}) + "\n"
                               for i, (c, t) in enumerate(rows)))
    result = CliRunner().invoke(eval_group, ["score", "llava-bench", "--reviews", str(reviews)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["headline"] == pytest.approx(14 / 18 * 100) and out["unparsed"] == 1
    # summarize_gpt_review.py on this file prints: all 76.5 (= 4.333 / 5.667), conv 77.8.
    assert out["llava_compat"]["all"]["official_rounding"] == 76.5
    assert out["llava_compat"]["conv"]["official_rounding"] == 77.8


def test_missing_reference_answer_names_the_question(tmp_path: Path) -> None:
    write_wild(tmp_path / "wild")
    (tmp_path / "wild" / "answers_gpt4.jsonl").write_text(json.dumps({"question_id": 0, "text": "x"}) + "\n")
    with pytest.raises(FormatError, match="no reference answer for question_id 1"):
        LlavaBenchBenchmark().load_items(str(tmp_path / "wild"))
