"""SoM listing probe: answer parsing, name normalisation, scores on hand-built answers, and items
from real `som mark --masks` output and a SoM dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from som.eval.benchmarks import FormatError
from som.eval.benchmarks.listing import (
    LISTING_PROMPT,
    ListingBenchmark,
    normalize_name,
    parse_listing,
    score_answer,
    score_listing,
)
from som.eval.cli import eval_group
from som.eval.tagging import read_image_bytes
from tests.helpers.som_datasets import som_dataset


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Dog", "dog"),
        ("the dogs", "dog"),
        ("A red car.", "red car"),
        ("an apple", "apple"),
        ("people", "person"),
        ("benches", "bench"),
        ("teddy_bears", "teddy bear"),
        ("Hot-dogs", "hot dog"),
        ("skies", "sky"),
        ("glass", "glass"),
        ("bus", "bus"),
        ("**person**", "person"),
    ],
)
def test_normalize_name(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


def test_parse_listing_reads_numbered_lines_only() -> None:
    answer = (
        "Here are the tagged objects:\n"
        "1. Dog\n"
        "2) a red car: parked by the road\n"
        "  3: People\n"
        "**4.** bench\n"
        "[5] tree.\n"
        "There are 3 people in total.\n"
        "- 6. cup"
    )
    assert parse_listing(answer) == [(1, "dog"), (2, "red car"), (3, "person"), (4, "bench"), (5, "tree"), (6, "cup")]
    assert parse_listing("I see a dog and a cat.") == []


def test_scores_on_hand_built_answers() -> None:
    tags = [[(1, "person"), (2, "dog"), (3, "car")], [(1, "cup"), (2, None), (3, "chair")]]
    answers = [
        "1. person\n2. dogs\n3. car",  # exact (plural-insensitive)
        "1. cup\n2. table\n3. sofa\n4. lamp",  # tag 2 unnamed: ignored; 3 wrong; 4 extra
    ]
    result = score_listing(tags, answers)
    # predicted pairs: 3 + (cup, sofa, lamp) = 6; right: 3 + 1 = 4; tags: 3 + 2 = 5
    assert (result["true_positives"], result["predicted"], result["tags"]) == (4, 6, 5)
    assert result["precision"] == pytest.approx(4 / 6)
    assert result["recall"] == pytest.approx(4 / 5)
    assert result["f1"] == pytest.approx(2 * (4 / 6) * (4 / 5) / (4 / 6 + 4 / 5))
    assert result["exact_order_accuracy"] == 0.5


def test_exact_order_needs_every_tag_in_order_and_nothing_else() -> None:
    tags = [(1, "person"), (2, "dog")]
    assert score_answer(tags, "1. person\n2. dog").exact == 1
    assert score_answer(tags, "2. dog\n1. person").exact == 0  # all right, wrong order
    assert score_answer(tags, "2. dog\n1. person").true_positives == 2
    assert score_answer(tags, "1. person\n2. dog\n2. dog").exact == 0  # a repeat is not exact
    assert score_answer(tags, "1. person\n2. dog\n2. dog").predicted == 2  # but counts once
    assert score_answer(tags, "1. person").exact == 0
    assert score_answer(tags, "1. dog\n2. person").true_positives == 0  # names on the wrong numbers


def test_items_from_a_som_dataset_and_its_scores(tmp_path: Path) -> None:
    dest, rows = som_dataset(tmp_path)
    bench = ListingBenchmark()
    items = bench.load_items(dest)
    assert len(items) == 2
    for item in items:
        assert item.prompt == LISTING_PROMPT
        assert item.meta["premarked"] is True
        assert item.image is not None and item.image.endswith(".jpg")
        assert read_image_bytes(item)[:3] == b"\xff\xd8\xff"
        assert all(name in ("person", "car") for _, name in item.meta["tags"])
    perfect = {item.id: "\n".join(f"{n}. {name}" for n, name in item.meta["tags"]) for item in items}
    scores = bench.score(items, perfect)
    assert scores["headline"] == 100.0 and scores["exact_order_accuracy"] == 1.0
    first = items[0]
    half = dict(perfect, **{first.id: "nothing to list"})
    scores = bench.score(items, half)
    assert scores["exact_order_accuracy"] == 0.5 and scores["unparsed_answers"] == 1
    with pytest.raises(ValueError, match="1 of 2 items have no answer"):
        bench.score(items, {first.id: perfect[first.id]})
    assert bench.score(items, {first.id: perfect[first.id]}, allow_partial=True)["images"] == 1


def test_cli_on_som_mark_output(tmp_path: Path) -> None:
    from som.cli import cli

    dest, _ = som_dataset(tmp_path)  # writes tmp_path/raw and tmp_path/instances.json
    marked = tmp_path / "marked"
    result = CliRunner().invoke(
        cli,
        [
            "mark",
            str(tmp_path / "raw"),
            "--out",
            str(marked),
            "--masks",
            str(tmp_path / "instances.json"),
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    items = ListingBenchmark().load_items(str(marked))
    assert sorted(item.id for item in items) == sorted(p.stem for p in (tmp_path / "raw").iterdir())
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(
            json.dumps({"question_id": item.id, "text": "\n".join(f"{n}. {c}s" for n, c in item.meta["tags"])}) + "\n"
            for item in items
        )
    )
    result = CliRunner().invoke(eval_group, ["score", "listing", "--source", str(marked), "--answers", str(answers)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["f1"] == 1.0


def test_folder_without_named_marks_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"marks": [{"id": 1, "label": "1", "category": None}]}))
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(FormatError, match="no marked image with named tags"):
        ListingBenchmark().load_items(str(tmp_path))
    (tmp_path / "a.json").write_text(json.dumps({"marks": [{"id": 1, "label": "a", "category": "dog"}]}))
    with pytest.raises(FormatError, match=r"a.json: tag label 'a' is not a number"):
        ListingBenchmark().load_items(str(tmp_path))


@pytest.mark.parametrize("command", ["listing", "llava-bench"])
def test_new_score_commands_show_examples(command: str) -> None:
    result = CliRunner().invoke(eval_group, ["score", command, "--help"])
    assert result.exit_code == 0 and "Example" in result.output
