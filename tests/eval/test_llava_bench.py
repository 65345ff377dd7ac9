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
    load_reviews,
    load_rules,
    parse_score_pair,
    review_prompt,
    summarize,
)
from som.eval.cli import eval_group
from som.eval.judge import Judge
from tests.eval.reference import reference
from tests.helpers.chat_server import ChatServer, Reply


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
        Review("3", "complex", None, "???", 1),
    ]
    # LLaVA's rule: the unparsable review counts as (-1, -1) in its category and in "all".
    summary = summarize(reviews)
    assert list(summary) == ["conv", "detail", "complex", "all"]
    assert summary["conv"]["relative"] == pytest.approx(14 / 18 * 100)  # 77.78
    assert summary["conv"]["official_rounding"] == {"relative": 77.8, "reference": 90.0, "model": 70.0}
    assert summary["conv"]["reference"] == pytest.approx(90.0) and summary["conv"]["model"] == pytest.approx(70.0)
    assert summary["complex"]["relative"] == pytest.approx(100.0) and summary["complex"]["n"] == 1
    assert summary["all"]["relative"] == pytest.approx((19 - 1) / (23 - 1) * 100) and summary["all"]["n"] == 4
    dropped = summarize(reviews, drop_unparsed=True)
    assert list(dropped) == ["conv", "detail", "all"]
    assert dropped["all"]["relative"] == pytest.approx(19 / 23 * 100) and dropped["all"]["n"] == 3


def test_reviews_without_category_count_once_in_all(tmp_path: Path) -> None:
    """summarize_gpt_review.py: with a category, a review goes to it and to "all"; without one,
    to "all" only, read from `tuple` or else from `score`."""
    path = tmp_path / "reviews.jsonl"
    rows = [
        {"question_id": 0, "category": "llava_bench_conv", "tuple": [8, 6]},
        {"question_id": 1, "tuple": [10, 4]},
        {"question_id": 2, "score": [5, 5]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reviews = load_reviews(path)
    assert [(r.category, r.scores) for r in reviews] == [("conv", (8.0, 6.0)), (None, (10.0, 4.0)), (None, (5.0, 5.0))]
    summary = summarize(reviews)
    assert list(summary) == ["conv", "all"]
    assert summary["all"]["n"] == 3
    assert summary["all"]["relative"] == pytest.approx(15 / 23 * 100)
    # all: means (7.667, 5.0) -> 65.2, 76.7, 50.0 as it prints them.
    assert summary["all"]["official_rounding"] == {"relative": 65.2, "reference": 76.7, "model": 50.0}


def test_review_with_category_must_have_a_tuple(tmp_path: Path) -> None:
    path = tmp_path / "reviews.jsonl"
    path.write_text(json.dumps({"question_id": 0, "category": "llava_bench_conv", "score": [8, 6]}) + "\n")
    with pytest.raises(FormatError, match="tuple"):
        load_reviews(path)


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
    (folder / "context.jsonl").write_text(
        json.dumps({"id": "001", "image": "001.jpg", "caption": "The Diamond Head crater."}) + "\n"
    )
    (folder / "answers_gpt4.jsonl").write_text(
        json.dumps({"question_id": 1, "text": "A crater by the sea."})
        + "\n"
        + json.dumps({"question_id": 0, "text": "Diamond Head."})
        + "\n"
    )


def _crater_reply(body: dict[str, Any], index: int) -> Reply:
    content = body["messages"][-1]["content"]
    if "[Question]\nWhat is the name" in content:
        return Reply("8 6\nAssistant 2 names the wrong crater.")
    return Reply("I think both are fine.")  # never a score pair


def test_wild_scores_through_the_judge(chat_server: ChatServer, tmp_path: Path) -> None:
    """Defaults are eval_gpt_review_bench.py's: one request per answer at temperature 0.2,
    max_tokens 1024, system message; an unparsable reply counts as (-1, -1)."""
    write_wild(tmp_path / "wild")
    bench = LlavaBenchBenchmark()
    items = bench.load_items(str(tmp_path / "wild"))
    assert [(i.id, i.meta["rule"], i.meta["reference"]) for i in items] == [
        ("0", "llava_bench_conv", "Diamond Head."),
        ("1", "llava_bench_detail", "A crater by the sea."),
    ]
    assert items[0].image == str(tmp_path / "wild" / "images" / "001.jpg")

    chat_server.script = _crater_reply
    with Judge(chat_server.url, "gpt-4-0314", "sk-test", cache_url=str(tmp_path / "cache")) as judge:
        scores = bench.score(items, {"0": "Koko Head.", "1": "A mountain."}, judge=judge)
    bodies = [r.body for r in chat_server.requests]
    assert len(bodies) == 2
    assert all(b["model"] == "gpt-4-0314" and b["temperature"] == 0.2 and b["max_tokens"] == 1024 for b in bodies)
    conv = [b for b in bodies if "What is the name" in b["messages"][-1]["content"]]
    assert conv[0]["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert conv[0]["messages"][1]["content"].startswith("[Context]\nThe Diamond Head crater.\n\n[Question]")
    assert "[Assistant 1]\nDiamond Head.\n" in conv[0]["messages"][1]["content"]
    assert "[Assistant 2]\nKoko Head.\n" in conv[0]["messages"][1]["content"]
    assert scores["unparsed"] == 1
    assert scores["headline"] == pytest.approx((6 - 1) / (8 - 1) * 100)  # LLaVA's (-1, -1) rule
    assert scores["excluding_unparsed"]["all"]["relative"] == pytest.approx(75.0)
    assert scores["categories"]["conv"]["relative"] == pytest.approx(75.0)
    assert scores["judge"]["model"] == "gpt-4-0314" and scores["judge"]["temperature"] == 0.2
    with pytest.raises(ValueError, match="llava_bench: scoring needs a judge"):
        bench.score(items, {"0": "x", "1": "y"})


def test_retry_unparsable_is_an_option(chat_server: ChatServer, tmp_path: Path) -> None:
    write_wild(tmp_path / "wild")
    bench = LlavaBenchBenchmark(temperature=0.0, retry_unparsable=True)
    chat_server.script = _crater_reply
    with Judge(chat_server.url, "gpt-4-0314", "sk-test") as judge:
        scores = bench.score(
            bench.load_items(str(tmp_path / "wild")), {"0": "Koko Head.", "1": "A mountain."}, judge=judge
        )
    detail = [
        r.body["temperature"] for r in chat_server.requests if "Describe this" in r.body["messages"][-1]["content"]
    ]
    assert detail == [0.0, *RETRY_TEMPERATURES]
    assert scores["unparsed"] == 1 and scores["reviews"][1]["requests"] == 3


def test_runs_are_fresh_reviews_averaged(chat_server: ChatServer, tmp_path: Path) -> None:
    write_wild(tmp_path / "wild")
    bench = LlavaBenchBenchmark(runs=2)
    replies = iter(["8 6", "8 4", "10 5", "10 10"])  # run 0 (conv, detail), run 1 (conv, detail)
    chat_server.script = lambda body, index: Reply(next(replies))
    with Judge(chat_server.url, "gpt-4-0314", "sk-test", cache_url=str(tmp_path / "cache"), max_concurrency=1) as judge:
        scores = bench.score(
            bench.load_items(str(tmp_path / "wild")), {"0": "Koko Head.", "1": "A mountain."}, judge=judge
        )
    assert len(chat_server.requests) == 4
    assert [r["headline"] for r in scores["runs"]] == pytest.approx([10 / 16 * 100, 15 / 20 * 100])
    assert scores["headline"] == pytest.approx((62.5 + 75.0) / 2) and scores["std"] == pytest.approx(6.25)
    assert scores["categories"]["detail"]["relative"] == pytest.approx((50.0 + 100.0) / 2)


def test_cli_summarises_llava_review_files(tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.jsonl"
    rows = [("llava_bench_conv", [8, 6]), ("llava_bench_conv", [10, 8]), ("llava_bench_detail", [-1, -1])]
    reviews.write_text(
        "".join(
            json.dumps({"question_id": i, "category": c, "content": "", "tuple": t}) + "\n"
            for i, (c, t) in enumerate(rows)
        )
    )
    result = CliRunner().invoke(eval_group, ["score", "llava-bench", "--reviews", str(reviews)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["headline"] == pytest.approx(13 / 17 * 100) and out["unparsed"] == 1
    # summarize_gpt_review.py on this file prints: all 76.5 56.7 43.3, conv 77.8 90.0 70.0.
    assert out["categories"]["all"]["official_rounding"] == {"relative": 76.5, "reference": 56.7, "model": 43.3}
    assert out["categories"]["conv"]["official_rounding"]["relative"] == 77.8
    assert out["excluding_unparsed"]["all"]["relative"] == pytest.approx(14 / 18 * 100)


# --- LLaVA-1.5-7B's three real GPT-4 review runs ---------------------------------------------

WILD_7B_REVIEWS = [("llava_bench_wild", f"reviews_llava-v1.5-7b-eval{i}.jsonl") for i in (1, 2, 3)]
# What summarize_gpt_review.py prints for each file: category, relative, reference x10, model x10.
SUMMARIZE_7B = [
    {
        "all": (64.7, 87.0, 56.3),
        "complex": (77.6, 85.4, 66.2),
        "conv": (59.3, 88.8, 52.6),
        "detail": (47.7, 88.0, 42.0),
    },
    {
        "all": (65.3, 87.0, 56.8),
        "complex": (78.8, 85.0, 67.0),
        "conv": (59.0, 88.2, 52.1),
        "detail": (48.5, 89.3, 43.3),
    },
    {
        "all": (66.3, 86.7, 57.5),
        "complex": (79.6, 85.0, 67.7),
        "conv": (59.0, 88.2, 52.1),
        "detail": (50.8, 88.0, 44.7),
    },
]


def test_real_review_runs_reproduce_summarize_and_the_published_mean() -> None:
    """LLaVA-1.5-7B on LLaVA-Bench (In-the-Wild): 64.7 / 65.3 / 66.3, published 65.4 (the mean of
    the printed numbers; the mean of the unrounded ratios is 65.47, 65.5 rounded)."""
    paths = [str(reference(*parts)) for parts in WILD_7B_REVIEWS]
    result = CliRunner().invoke(eval_group, ["score", "llava-bench", *(a for p in paths for a in ("--reviews", p))])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [run["source"] for run in out["runs"]] == paths
    for run, printed in zip(out["runs"], SUMMARIZE_7B, strict=True):
        assert run["unparsed"] == 0 and run["categories"]["all"]["n"] == 60
        ours = {k: tuple(v["official_rounding"].values()) for k, v in run["categories"].items()}
        assert ours == printed
    mean = out["categories"]
    assert mean["all"]["official_rounding"] == {"relative": 65.4, "reference": 86.9, "model": 56.9}
    assert {k: v["official_rounding"]["relative"] for k, v in mean.items()} == {
        "conv": 59.1,
        "detail": 49.0,
        "complex": 78.7,
        "all": 65.4,
    }
    assert round(out["headline"], 2) == 65.43 and round(out["headline"], 1) == 65.4
    assert round(out["mean_relative"], 2) == 65.47 and round(out["std"], 2) == 0.66
    assert round(mean["detail"]["relative_std"], 2) == 1.28


def test_review_request_for_a_real_question_is_eval_gpt_review_benchs() -> None:
    """The user message for the first real question, against the script's own construction."""
    folder = reference("llava_bench_wild")
    rule_dict = json.loads(reference("llava", "rule.json").read_text())
    ques = json.loads((folder / "questions.jsonl").read_text().splitlines()[0])
    ans1 = json.loads((folder / "answers_gpt4.jsonl").read_text().splitlines()[0])
    ans2 = json.loads((folder / "answers_llava-v1.5-7b.jsonl").read_text().splitlines()[0])
    contexts = {c["image"]: c for c in map(json.loads, (folder / "context.jsonl").read_text().splitlines())}
    inst = contexts[ques["image"]]
    cap_str = "\n".join(inst["caption"]) if isinstance(inst["caption"], list) else inst["caption"]
    rule = rule_dict["llava_bench_" + ques["category"]]
    prompt, role = rule["prompt"], rule["role"]
    expected = (
        f"[Context]\n{cap_str}\n\n"
        f"[Question]\n{ques['text']}\n\n"
        f"[{role} 1]\n{ans1['text']}\n\n[End of {role} 1]\n\n"
        f"[{role} 2]\n{ans2['text']}\n\n[End of {role} 2]\n\n"
        f"[System]\n{prompt}\n\n"
    )
    item = next(i for i in LlavaBenchBenchmark().load_items(str(folder)) if i.id == str(ques["question_id"]))
    assert ans1["question_id"] == ans2["question_id"] == ques["question_id"]
    ours = review_prompt(
        item.meta["context"], item.prompt, item.meta["reference"], ans2["text"], load_rules()[item.meta["rule"]]
    )
    assert ours == expected


def test_missing_reference_answer_names_the_question(tmp_path: Path) -> None:
    write_wild(tmp_path / "wild")
    (tmp_path / "wild" / "answers_gpt4.jsonl").write_text(json.dumps({"question_id": 0, "text": "x"}) + "\n")
    with pytest.raises(FormatError, match="no reference answer for question_id 1"):
        LlavaBenchBenchmark().load_items(str(tmp_path / "wild"))
