"""SEED-Bench: LLaVA's exact-letter rule, the converter's all / image / video summary, its upload
file, the video frame LLaVA extracts, and the separate lenient extractor.

../shared/reference/seed/ holds only LLaVA-1.5-13B's upload file (predictions, no answer key),
so the published SEED numbers cannot be checked here; the file is used to test loading and to
rebuild LLaVA answer files whose question_ids are JSON numbers (as LLaVA writes them) or strings.
The converter (convert_seed_for_submission.py) looks numeric annotation ids up as integers, so
string ids score every image question wrong; somflow reproduces that and reports why. Rebuilt
from those answers, somflow's upload file must equal the reference byte for byte.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from som.eval.benchmarks import FormatError
from som.eval.benchmarks.seed import (
    SeedQuestion,
    lenient_letter,
    load_predictions,
    load_questions,
    score_seed,
    score_seed_files,
    write_upload,
)
from som.eval.benchmarks.seed_video import VideoFrameError, extract_frame, frame_index, middle
from som.eval.cli import eval_group
from som.eval.registry import get_benchmark
from tests.eval.reference import reference
from tests.helpers.suite_sources_gqa_seed import frame_number, seed_source, tiny_video

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
    path.write_text(
        json.dumps({"question_type": {"Scene Understanding": 1, "Instance Identity": 2}, "questions": questions})
    )
    return path


def test_annotation_and_answer_formats(tmp_path: Path) -> None:
    annotation = _annotation(
        tmp_path,
        [
            {
                "question_id": "101669",
                "answer": "B",
                "question_type_id": 1,
                "data_type": "image",
                "choice_a": "x",
                "choice_b": "y",
                "choice_c": "z",
                "choice_d": "w",
            },
            {"question_id": "89257", "answer": "A", "question_type_id": 2, "data_type": "image"},
        ],
    )
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
    video_only = _annotation(
        tmp_path, [{"question_id": "1", "answer": "A", "question_type_id": 10, "data_type": "video"}]
    )
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
    annotation = _annotation(
        tmp_path,
        [
            {
                "question_id": r["question_id"],
                "answer": r["prediction"],
                "question_type_id": 1,
                "data_type": "image" if r["question_id"].isdigit() else "video",
            }
            for r in records
        ],
    )
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


def test_llava_answers_with_string_ids_score_zero_like_the_converter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
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


# --- the converter's all / image / video summary ------------------------------------------------


def _mixed(tmp_path: Path) -> Path:
    """Four image questions (one id listed twice, as 49914 is) and three video questions."""
    return _annotation(
        tmp_path,
        [
            {"question_id": "1", "answer": "A", "question_type_id": 1, "data_type": "image"},
            {"question_id": "2", "answer": "B", "question_type_id": 2, "data_type": "image"},
            {"question_id": "2", "answer": "B", "question_type_id": 2, "data_type": "image"},
            {"question_id": "3", "answer": "C", "question_type_id": 2, "data_type": "image"},
            {"question_id": "v0", "answer": "A", "question_type_id": 10, "data_type": "video"},
            {"question_id": "v1", "answer": "B", "question_type_id": 11, "data_type": "video"},
            {"question_id": "v2", "answer": "C", "question_type_id": 12, "data_type": "video"},
        ],
    )


def test_all_image_and_video_accuracy_as_the_converter_prints_them(tmp_path: Path) -> None:
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(
            json.dumps(line) + "\n"
            for line in [
                {"question_id": 1, "text": "A"},
                {"question_id": 2, "text": "B"},
                {"question_id": 3, "text": "D"},
                {"question_id": "v0", "text": "A"},
                {"question_id": "v1", "text": "B."},
            ]
        )
    )  # v2 unanswered
    scores = score_seed_files(_mixed(tmp_path), answers)
    assert scores.exact.total == 4 and scores.exact.overall == 75.0  # 2 counted twice, like the converter
    out = scores.to_dict()
    assert (out["all_accuracy"], out["image_accuracy"]) == (pytest.approx(400 / 7), 75.0)
    assert out["video_accuracy"] == pytest.approx(100 / 3)
    assert out["official"]["per_dimension"] == {
        "Scene Understanding": 100.0,
        "Instance Identity": pytest.approx(200 / 3),
        "Action Recognition": 100.0,
        "Action Prediction": 0.0,
        "Procedure Understanding": 0.0,
    }
    assert out["official"]["report"] == [
        "Scene Understanding: 100.00%",
        "Instance Identity: 66.67%",
        "Action Recognition: 100.00%",
        "Action Prediction: 0.00%",
        "Procedure Understanding: 0.00%",
        "Total accuracy: 57.14%",
        "image accuracy: 75.00%",
        "video accuracy: 33.33%",
    ]
    assert out["official"]["counts"]["video"] == {"correct": 1, "total": 3}
    assert score_seed_files(_mixed(tmp_path), answers, data_type="all").exact.overall == pytest.approx(400 / 7)


# --- upload file ---------------------------------------------------------------------------------


def test_upload_file_line_for_line(tmp_path: Path) -> None:
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(
            json.dumps(line) + "\n"
            for line in [
                {"question_id": 1, "text": "A"},
                {"question_id": "2", "text": "B"},
                {"question_id": 3, "text": "The answer is C"},
                {"question_id": "v0", "text": "A"},
                {"question_id": "v1", "text": "B"},
                {"question_id": "v2", "text": "C"},
            ]
        )
    )
    out = tmp_path / "upload" / "model.jsonl"
    summary = write_upload(_mixed(tmp_path), answers, str(out))
    # the annotation's (string) ids in its order, 2 twice, found by "2" first, 1 and 3 by int()
    assert out.read_text() == (
        '{"question_id": "1", "prediction": "A"}\n{"question_id": "2", "prediction": "B"}\n'
        '{"question_id": "2", "prediction": "B"}\n{"question_id": "3", "prediction": "The answer is C"}\n'
        '{"question_id": "v0", "prediction": "A"}\n{"question_id": "v1", "prediction": "B"}\n'
        '{"question_id": "v2", "prediction": "C"}\n'
    )
    assert (summary["lines"], summary["missing"]) == (7, 0)
    # scoring looks "2" up as int 2 first and misses it: the converter's asymmetry, kept
    assert summary["image_accuracy"] == 25.0 and summary["report"][-1] == "video accuracy: 100.00%"


def test_upload_needs_every_answer_unless_allow_partial(tmp_path: Path) -> None:
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"question_id": 1, "text": "A"}\n{"question_id": "v0", "text": "A"}\n')
    out = tmp_path / "upload.jsonl"
    with pytest.raises(FormatError, match=r"answers.jsonl: no answer to 5 of 7 questions"):
        write_upload(_mixed(tmp_path), answers, str(out))
    assert not out.exists()
    summary = write_upload(_mixed(tmp_path), answers, str(out), allow_partial=True)
    assert summary["missing_ids"] == ["2", "2", "3", "v1", "v2"] and len(out.read_text().splitlines()) == 2
    upload = tmp_path / "already.jsonl"
    upload.write_text('{"question_id": "1", "prediction": "A"}\n')
    with pytest.raises(FormatError, match="already an upload file"):
        write_upload(_mixed(tmp_path), upload, str(out))


def test_upload_file_equals_the_reference_byte_for_byte(tmp_path: Path) -> None:
    annotation, answers = _reference_as_annotation_and_llava_answers(tmp_path, numeric_ids=True)
    out = tmp_path / "upload.jsonl"
    summary = write_upload(annotation, answers, str(out))
    assert summary["lines"] == 19242
    assert out.read_bytes() == reference("seed", "answers_upload_llava-v1.5-13b.jsonl").read_bytes()


def test_submission_command(tmp_path: Path) -> None:
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"question_id": 1, "text": "A"}\n')
    out = tmp_path / "upload.jsonl"
    args = ["submission", "seed", "--questions", str(_mixed(tmp_path)), "--answers", str(answers), "--out", str(out)]
    result = CliRunner().invoke(eval_group, args)
    assert result.exit_code == 1 and "pass --allow-partial" in result.output
    result = CliRunner().invoke(eval_group, [*args, "--allow-partial"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["lines"] == 1 and out.read_text() == '{"question_id": "1", "prediction": "A"}\n'


# --- the video frame LLaVA extracts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_id", "count", "fps", "segment", "expected"),
    [
        (10, 31, None, None, 14),  # the script's own example: 31 frames -> frame 14
        (10, 30, None, None, 14),  # int(28 / 2)
        (10, 2, None, None, 0),
        (11, 30, 10.0, [1.0, 2.5], 17),  # frames 10..25: 10 + int(14 / 2)
        (11, 30, 10.0, [0.0, 100.0], 14),  # end clamped to the last frame (29)
        (11, 300, 29.97, [3.3, 4.1], 109),  # int(98.901) = 98, int(122.877) = 122: 98 + int(23 / 2)
        (12, 30, None, [3, 100], 16),  # end clamped to the frame count (30): 3 + int(26 / 2)
        (12, 300, None, [18, 166], 91),  # 18 + int(147 / 2)
    ],
)
def test_frame_index_is_llavas_rule(
    type_id: int, count: int, fps: float | None, segment: list | None, expected: int
) -> None:
    assert frame_index(type_id, count, fps=fps, segment=segment) == expected


def test_segments_without_frames_have_no_middle() -> None:
    assert middle(1) == 0 and middle(2) == 0 and middle(3) == 1
    with pytest.raises(ValueError, match="no middle frame"):
        frame_index(10, 1)
    with pytest.raises(ValueError, match="no middle frame"):
        frame_index(12, 30, segment=[40, 50])
    with pytest.raises(ValueError, match="needs a \\[start, end\\] segment"):
        frame_index(11, 30, fps=10.0)
    with pytest.raises(ValueError, match="not a SEED-Bench-1 video dimension"):
        frame_index(3, 30, segment=[0, 1])


@pytest.mark.parametrize(
    ("type_id", "frames", "fps", "segment", "expected"),
    [(10, 31, 10.0, None, 14), (11, 30, 10.0, [1.0, 2.5], 17), (12, 30, 15.0, [3, 100], 16)],
)
def test_extracted_frame_is_the_chosen_one(
    tmp_path: Path, type_id: int, frames: int, fps: float, segment: list | None, expected: int
) -> None:
    video = tiny_video(tmp_path / "clip.avi", frames, fps=fps)
    record = {"question_id": "v1", "question_type_id": type_id, "data_id": "clip.avi", "segment": segment}
    index, png = extract_frame(video, record)
    assert index == expected and frame_number(png) == expected


def test_seed_items_with_videos_extract_llavas_frames(tmp_path: Path) -> None:
    source = seed_source(tmp_path / "seed_bench", n=4)
    bench = get_benchmark("seed")
    items = bench.load_items(str(source))
    assert [i.id for i in items] == ["1000", "1001", "1002", "1003", "v1738", "v1962", "v4397"]
    frames = source / "SEED-Bench-video-image"
    assert [i.image for i in items[4:]] == [str(frames / n) for n in ("10_v1738.png", "11_v1962.png", "12_v4397.png")]
    assert [frame_number(Path(i.image).read_bytes()) for i in items[4:]] == [14, 17, 16]
    assert items[4].prompt == (
        "What is shown in v1738?\nA. a dog\nB. a cat\nC. two birds\nD. nothing\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert items[4].meta["data_type"] == "video" and items[4].meta["question_type"] == "Action Recognition"
    scores = bench.score(
        items, {"1000": "A", "1001": "B", "1002": "A", "1003": "D", "v1738": "B", "v1962": "A", "v4397": "D"}
    )
    assert scores["headline"] == 75.0 and scores["image_accuracy"] == 75.0
    assert scores["video_accuracy"] == pytest.approx(200 / 3) and scores["all_accuracy"] == pytest.approx(500 / 7)
    assert scores["video_skipped"] == 0
    shutil.rmtree(source / "videos")  # frames already there are used as they are (LLaVA's layout)
    assert [i.image for i in bench.load_items(str(source))] == [i.image for i in items]


def test_limit_extracts_only_the_frames_it_keeps(tmp_path: Path) -> None:
    source = seed_source(tmp_path / "seed_bench", n=2)
    items = get_benchmark("seed").load_items(str(source), limit=3)
    assert [i.id for i in items] == ["1000", "1001", "v1738"]
    assert sorted(p.name for p in (source / "SEED-Bench-video-image").iterdir()) == ["10_v1738.png"]


def test_without_videos_the_video_questions_are_skipped_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = seed_source(tmp_path / "seed_bench", n=4)
    shutil.rmtree(source / "videos")
    bench = get_benchmark("seed")
    with caplog.at_level(logging.WARNING):
        items = bench.load_items(str(source))
    assert len(items) == 4 and "skipping 3 video questions" in caplog.text
    scores = bench.score(items, {"1000": "A", "1001": "B", "1002": "C", "1003": "A"})
    assert scores["video_skipped"] == 3 and scores["headline"] == 75.0
    assert (scores["all_accuracy"], scores["video_accuracy"], scores["image_accuracy"]) == (None, None, 75.0)


def test_a_missing_video_is_an_error_naming_it(tmp_path: Path) -> None:
    source = seed_source(tmp_path / "seed_bench", n=1)
    (source / "videos" / "EPIC-KITCHENS" / "P03_24.avi").unlink()
    with pytest.raises(VideoFrameError, match="question v1962: video not found"):
        get_benchmark("seed").load_items(str(source))


def test_seed_score_allow_partial(tmp_path: Path) -> None:
    source = seed_source(tmp_path / "seed_bench", n=2, with_video=False)
    bench = get_benchmark("seed")
    items = bench.load_items(str(source))
    with pytest.raises(ValueError, match="1 of 2 items have no answer"):
        bench.score(items, {"1000": "A"})
    scores = bench.score(items, {"1000": "A"}, allow_partial=True)
    assert scores["headline"] == 100.0 and scores["exact"]["total"] == 1


def test_malformed_seed_items(tmp_path: Path) -> None:
    source = seed_source(tmp_path / "seed_bench", n=2, with_video=False)
    annotation = json.loads((source / "SEED-Bench.json").read_text())
    annotation["questions"].append({**annotation["questions"][0], "answer": "D"})
    (source / "SEED-Bench.json").write_text(json.dumps(annotation))
    with pytest.raises(FormatError, match="question_id 1000 is listed twice with different answers"):
        get_benchmark("seed").load_items(str(source))
    annotation["questions"][-1] = {**annotation["questions"][0], "question_id": "7", "data_type": "audio"}
    (source / "SEED-Bench.json").write_text(json.dumps(annotation))
    with pytest.raises(FormatError, match="question 7: data_type must be 'image' or 'video'"):
        get_benchmark("seed").load_items(str(source))
