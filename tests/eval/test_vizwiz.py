"""VizWiz: the test upload as convert_vizwiz_for_submission.py writes it (byte for byte LLaVA's
committed upload on its answers, ../shared/reference/vizwiz), and VQA accuracy on val."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from som.eval.benchmarks import FormatError
from som.eval.benchmarks.vizwiz import VizWizBenchmark, score_vizwiz_files, write_submission
from som.eval.cli import eval_group
from tests.eval.reference import reference
from tests.helpers.suite_sources_vqa import vizwiz_source

UPLOAD_SHA256 = "671422ba1f9ee08a4b0e203d3929a2b4c6a6289e268b35b59cdd7f0b8c5a9500"


def _jsonl(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_reference_upload_is_byte_for_byte_llavas(tmp_path: Path) -> None:
    questions = reference("vizwiz", "llava_test.jsonl")
    answers = reference("vizwiz", "answers_llava-v1.5-13b.jsonl")
    out = tmp_path / "answers_upload" / "llava-v1.5-13b.json"
    result = CliRunner().invoke(
        eval_group,
        ["submission", "vizwiz", "--questions", str(questions), "--answers", str(answers), "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["answered"] == summary["questions"] == 8000 and summary["complete"] is True
    assert summary["upload_url"] == "https://eval.ai/web/challenges/challenge-page/2185/my-submission"
    assert out.read_bytes() == reference("vizwiz", "upload_llava-v1.5-13b.json").read_bytes()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == UPLOAD_SHA256
    assert sum(r["answer"] == "unanswerable" for r in json.loads(out.read_text())) > 0


def test_every_question_needs_an_answer(tmp_path: Path) -> None:
    source = vizwiz_source(tmp_path / "vizwiz", n=3)
    answers = _jsonl(
        tmp_path / "a.jsonl", [{"question_id": 0, "text": "Unanswerable"}, {"question_id": 2, "text": "A Dog."}]
    )
    with pytest.raises(FormatError, match="1 of 3 questions have no answer .*question_id 1"):
        write_submission(source / "llava_test.jsonl", answers, tmp_path / "u.json")
    assert not (tmp_path / "u.json").exists()
    summary = write_submission(source / "llava_test.jsonl", answers, tmp_path / "u.json", allow_partial=True)
    assert summary["missing_ids"] == [1] and summary["complete"] is False
    assert json.loads((tmp_path / "u.json").read_text()) == [
        {"image": "VizWiz_test_00000000.jpg", "answer": "unanswerable"},
        {"image": "VizWiz_test_00000002.jpg", "answer": "dog"},
    ]


def _val(path: Path) -> Path:
    def record(i: int, answers: list[str], answer_type: str) -> dict:
        return {
            "image": f"VizWiz_val_{i:08d}.jpg",
            "question": "What is it?",
            "answer_type": answer_type,
            "answerable": int(answer_type != "unanswerable"),
            "answers": [{"answer": a, "answer_confidence": "yes"} for a in answers],
        }

    path.write_text(
        json.dumps(
            [
                record(0, ["unanswerable"] * 10, "unanswerable"),
                record(1, ["red"] * 5 + ["blue"] * 5, "other"),  # equal records: left out one at a time
                record(2, ["2"] * 10, "number"),
                record(3, ["yes"] * 10, "yes/no"),
            ]
        )
    )
    return path


def test_val_accuracy_as_vizwiz_evaluator(tmp_path: Path) -> None:
    annotations = _val(tmp_path / "val.json")
    # question_id = position in val.json, as LLaVA numbers llava_test.jsonl
    answers = _jsonl(
        tmp_path / "a.jsonl",
        [
            {"question_id": 0, "text": "Unanswerable"},
            {"question_id": 1, "text": "Red."},
            {"question_id": 2, "text": "two"},
            {"question_id": 3, "text": "No"},
        ],
    )
    out = score_vizwiz_files(annotations, answers)
    assert out["accuracy"] == 75.0
    assert out["per_answer_type"] == {"unanswerable": 100.0, "other": 100.0, "number": 100.0, "yes/no": 0.0}
    upload = tmp_path / "upload.json"
    upload.write_text(json.dumps([{"image": "VizWiz_val_00000003.jpg", "answer": "yes"}]))
    partial = score_vizwiz_files(annotations, upload, allow_partial=True)
    assert partial["accuracy"] == 100.0 and partial["unanswered"] == 3
    with pytest.raises(FormatError, match="3 of 4 annotated questions have no answer"):
        score_vizwiz_files(annotations, upload)


def test_val_question_file_maps_ids_to_images(tmp_path: Path) -> None:
    annotations = _val(tmp_path / "val.json")
    questions = _jsonl(tmp_path / "q.jsonl", [{"question_id": 7, "image": "VizWiz_val_00000003.jpg", "text": "?"}])
    answers = _jsonl(tmp_path / "a.jsonl", [{"question_id": 7, "text": "yes"}])
    assert score_vizwiz_files(annotations, answers, questions=questions, allow_partial=True)["accuracy"] == 100.0
    with pytest.raises(FormatError, match="question_ids have no image"):
        score_vizwiz_files(annotations, answers, allow_partial=True)


def test_val_command(tmp_path: Path) -> None:
    annotations = _val(tmp_path / "val.json")
    answers = _jsonl(
        tmp_path / "a.jsonl", [{"question_id": i, "text": t} for i, t in enumerate(["x", "blue", "2", "yes"])]
    )
    result = CliRunner().invoke(
        eval_group,
        ["score", "vizwiz", "--annotations", str(annotations), "--answers", str(answers)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == 75.0


def test_test_items_are_submission_only(tmp_path: Path) -> None:
    source = vizwiz_source(tmp_path / "vizwiz", n=3)
    bench = VizWizBenchmark()
    items = bench.load_items(str(source))
    assert [item.id for item in items] == ["0", "1", "2"] and items[2].image.endswith("test/VizWiz_test_00000002.jpg")
    assert items[0].prompt.endswith("respond with 'Unanswerable'.\nAnswer the question using a single word or phrase.")
    scores = bench.score(items, {"0": "Unanswerable", "1": "Blue", "2": "a cup"}, output_url=str(tmp_path / "run"))
    assert scores["headline"] is None and scores["submission_only"] is True and scores["complete"] is True
    assert Path(scores["upload_file"]).read_bytes() == (
        b'[{"image": "VizWiz_test_00000000.jpg", "answer": "unanswerable"}, '
        b'{"image": "VizWiz_test_00000001.jpg", "answer": "blue"}, {"image": "VizWiz_test_00000002.jpg", "answer": '
        b'"cup"}]'
    )


def test_val_items_score_accuracy(tmp_path: Path) -> None:
    source = vizwiz_source(tmp_path / "vizwiz", n=3, split="val")
    bench = VizWizBenchmark()
    items = bench.load_items(str(source))
    assert items[1].prompt == (
        "What color is shirt 1?\nWhen the provided information is insufficient, respond with "
        "'Unanswerable'.\nAnswer the question using a single word or phrase."
    )
    assert items[1].image.endswith("val/VizWiz_val_00000001.jpg")
    scores = bench.score(items, {"0": "Unanswerable", "1": "Red", "2": "blue"})
    assert scores["headline"] == scores["accuracy"] == 66.67
    assert scores["per_answer_type"] == {"unanswerable": 100.0, "other": 50.0}
    forced = VizWizBenchmark(split="test")
    with pytest.raises(FormatError, match="llava_test.jsonl"):
        forced.load_items(str(source))
