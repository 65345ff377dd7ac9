"""SEED-Bench image scoring: LLaVA's exact-letter rule and the separate lenient extractor.

../shared/reference/seed/ holds only LLaVA-1.5-13B's upload file (predictions, no answer key),
so the published SEED numbers cannot be checked here; the file is used to test loading and to
rebuild LLaVA answer files whose question_ids are JSON numbers (as LLaVA writes them) or strings.
The converter (convert_seed_for_submission.py) looks numeric annotation ids up as integers, so
string ids score every image question wrong; somflow reproduces that and reports why.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from som.eval.benchmarks import FormatError
from som.eval.benchmarks.seed import (
    SeedQuestion,
    lenient_letter,
    load_predictions,
    load_questions,
    score_seed,
    score_seed_files,
)
from tests.eval.reference import reference

CHOICES = {"A": "a dog", "B": "a cat", "C": "two birds", "D": "nothing"}


def _q(qid: str, answer: str, type_id: int = 1, data_type: str = "image") -> SeedQuestion:
    return SeedQuestion(qid, answer, type_id, data_type, CHOICES)


def test_exact_letter_is_the_official_rule() -> None:
    questions = [_q("1", "B"), _q("2", "B"), _q("3", "B"), _q("4", "B"), _q("5", "B")]
    predictions = {"1": "B", "2": "B.", "3": " B", "4": "b"}  # "5" unanswered
    scores = score_seed(questions, predictions)
    assert scores.exact.correct == 1 and scores.exact.total == 5
    assert scores.exact.overall == pytest.approx(20.0)
    assert scores.unanswered == 1
    assert scores.lenient is None


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("B", "B"),
        ("B.", "B"),
        ("(C)", "C"),
        ("D) nothing", "D"),
        ("A: a dog", "A"),
        (" B ", "B"),
        ("The answer is C.", "C"),
        ("Answer: (D)", "D"),
        ("option B", "B"),
        ("a cat", "B"),  # the option's own text
        ("Two birds.", "C"),
        ("A dog is sitting on the sofa.", None),  # "A" is the article here
        ("I am not sure", None),
        ("b", None),
        ("", None),
    ],
)
def test_lenient_letter(response: str, expected: str | None) -> None:
    assert lenient_letter(response, CHOICES) == expected


def test_lenient_is_reported_separately_and_per_type() -> None:
    questions = [_q("1", "A", 1), _q("2", "B", 1), _q("3", "C", 2), _q("4", "D", 10, "video")]
    predictions = {"1": "A", "2": "(B) a cat", "3": "The answer is C", "4": "D"}
    scores = score_seed(questions, predictions, lenient=True)
    assert scores.exact.total == 3  # the video question is not scored
    assert scores.exact.per_type == {"Scene Understanding": 50.0, "Instance Identity": 0.0}
    assert scores.lenient is not None
    assert scores.lenient.per_type == {"Scene Understanding": 100.0, "Instance Identity": 100.0}
    assert scores.to_dict()["accuracy"] == pytest.approx(100 / 3)
    everything = score_seed(questions, predictions, data_type="all")
    assert everything.exact.total == 4 and everything.exact.per_type["Action Recognition"] == 100.0


def _annotation(tmp_path: Path, questions: list[dict]) -> Path:
    path = tmp_path / "SEED-Bench.json"
    path.write_text(json.dumps({"question_type": {"Scene Understanding": 1, "Instance Identity": 2}, "questions": questions}))
    return path


def test_annotation_and_answer_formats(tmp_path: Path) -> None:
    annotation = _annotation(tmp_path, [
        {"question_id": "101669", "answer": "B", "question_type_id": 1, "data_type": "image",
         "choice_a": "x", "choice_b": "y", "choice_c": "z", "choice_d": "w"},
        {"question_id": "89257", "answer": "A", "question_type_id": 2, "data_type": "image"},
    ])
    upload = tmp_path / "upload.jsonl"
    upload.write_text('{"question_id": "101669", "prediction": "B"}\n{"question_id": "89257", "prediction": "C"}\n')
    raw = tmp_path / "llava.jsonl"
    raw.write_text('{"question_id": 101669, "prompt": "...", "text": "B"}\n{"question_id": 89257, "text": "A"}\n')
    assert score_seed_files(annotation, upload).exact.overall == 50.0
    assert score_seed_files(annotation, raw).exact.overall == 100.0
    questions, names = load_questions(annotation)
    assert questions[0].choices == {"A": "x", "B": "y", "C": "z", "D": "w"}
    assert names[2] == "Instance Identity"


def test_malformed_seed_files(tmp_path: Path) -> None:
    bad = tmp_path / "answers.jsonl"
    bad.write_text('{"question_id": "1", "prediction": "A"}\n{"question_id": "2"}\n')
    with pytest.raises(FormatError, match=r"answers.jsonl:2: expected a string 'prediction'"):
        load_predictions(bad)
    annotation = _annotation(tmp_path, [{"question_id": "1", "question_type_id": 1}])
    with pytest.raises(FormatError, match=r"SEED-Bench.json: question 1: missing field 'answer'"):
        load_questions(annotation)
    video_only = _annotation(tmp_path, [{"question_id": "1", "answer": "A", "question_type_id": 10, "data_type": "video"}])
    good = tmp_path / "good.jsonl"
    good.write_text('{"question_id": "1", "prediction": "A"}\n')
    with pytest.raises(FormatError, match="no image questions"):
        score_seed_files(video_only, good)


def test_reference_upload_file_loads() -> None:
    read = load_predictions(reference("seed", "answers_upload_llava-v1.5-13b.jsonl"))
    assert read.format == "upload"
    predictions = read.by_id
    # 19242 lines = SEED-Bench v1's 14233 image + 5009 video ("v0"...) questions; the annotation
    # lists question_id 49914 twice, so there are 19241 distinct ids.
    assert len(predictions) == 19241
    assert sum(not qid.isdigit() for qid in predictions) == 5009
    assert set(predictions.values()) == {"A", "B", "C", "D"}
    questions = [_q(qid, "A", 1, "all") for qid in predictions]
    scores = score_seed(questions, predictions, data_type="all")
    assert scores.exact.correct == sum(p == "A" for p in predictions.values())
    assert scores.unanswered == 0


def test_repeated_answers_must_agree(tmp_path: Path) -> None:
    path = tmp_path / "upload.jsonl"
    path.write_text('{"question_id": "7", "prediction": "B"}\n{"question_id": "7", "prediction": "B"}\n')
    assert load_predictions(path).by_id == {"7": "B"}
    path.write_text('{"question_id": "7", "prediction": "B"}\n{"question_id": "7", "prediction": "C"}\n')
    with pytest.raises(FormatError, match=r"upload.jsonl:2: second, different answer to question_id 7"):
        load_predictions(path)


def test_mixed_answer_formats_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": "7", "prediction": "B"}\n{"question_id": 8, "text": "C"}\n')
    with pytest.raises(FormatError, match=r"answers.jsonl:2: mixes 'prediction' \(upload format\) and 'text'"):
        load_predictions(path)


def _reference_as_annotation_and_llava_answers(tmp_path: Path, *, numeric_ids: bool) -> tuple[Path, Path]:
    """SEED-Bench.json-like annotation (answer = the 13B prediction) and LLaVA answers from the upload file.

    The annotation's ids are strings, as in SEED-Bench.json; the answers' ids are JSON numbers
    (what LLaVA writes) when numeric_ids, else strings.
    """
    lines = reference("seed", "answers_upload_llava-v1.5-13b.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    annotation = _annotation(tmp_path, [
        {"question_id": r["question_id"], "answer": r["prediction"], "question_type_id": 1,
         "data_type": "image" if r["question_id"].isdigit() else "video"}
        for r in records
    ])
    answers = tmp_path / "llava_answers.jsonl"
    with answers.open("w") as handle:
        for r in records:
            qid = int(r["question_id"]) if numeric_ids and r["question_id"].isdigit() else r["question_id"]
            handle.write(json.dumps({"question_id": qid, "prompt": "...", "text": r["prediction"]}) + "\n")
    return annotation, answers


def test_llava_answers_with_numeric_ids_match_like_the_converter(tmp_path: Path) -> None:
    annotation, answers = _reference_as_annotation_and_llava_answers(tmp_path, numeric_ids=True)
    scores = score_seed_files(annotation, answers)
    assert scores.answer_format == "llava"
    assert (scores.exact.correct, scores.exact.total, scores.exact.overall) == (14233, 14233, 100.0)
    assert (scores.unmatched_answers, scores.id_type_mismatches, scores.unanswered) == (0, 0, 0)


def test_llava_answers_with_string_ids_score_zero_like_the_converter(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """convert_seed_for_submission.py: int("101669") is not in a dict keyed by "101669"."""
    annotation, answers = _reference_as_annotation_and_llava_answers(tmp_path, numeric_ids=False)
    scores = score_seed_files(annotation, answers)
    assert (scores.exact.correct, scores.exact.total, scores.exact.overall) == (0, 14233, 0.0)
    assert scores.unanswered == 14233
    # 14232 distinct numeric ids (49914 is listed twice) miss only because of their type.
    assert (scores.unmatched_answers, scores.id_type_mismatches) == (14232, 14232)
    assert scores.to_dict()["id_type_mismatches"] == 14232
    assert "14232 answers" in caplog.text and "looks up as an integer" in caplog.text
    video = score_seed_files(annotation, answers, data_type="video")  # "v0"... stay strings and match
    assert (video.exact.correct, video.exact.total) == (5009, 5009)
