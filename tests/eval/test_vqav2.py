"""VQAv2: the test-dev upload as convert_vqav2_for_submission.py writes it, and vqaEval's val accuracy.

No VQAv2 files are shipped, so the question files are constructed in LLaVA's layout
(llava_vqav2_mscoco_test-dev2015.jsonl within llava_vqav2_mscoco_test2015.jsonl) and the val
annotations in the official one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from som.eval.benchmarks import FormatError
from som.eval.benchmarks.vqav2 import VQAv2Benchmark, score_vqav2_files, write_submission
from som.eval.cli import eval_group
from som.eval.registry import BENCHMARKS, Benchmark, get_benchmark
from tests.helpers.suite_sources_vqa import vqav2_source

SHORT = "Answer the question using a single word or phrase."


def _jsonl(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _answers(path: Path, answers: dict[int | str, str]) -> Path:
    return _jsonl(
        path,
        [
            {"question_id": qid, "prompt": "p", "text": text, "answer_id": "x", "model_id": "m", "metadata": {}}
            for qid, text in answers.items()
        ],
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return vqav2_source(tmp_path / "vqav2", n=4)


TEST_DEV = [262144000, 262145000, 262146000, 262147000]


def test_upload_lists_every_test_question_in_file_order(source: Path, tmp_path: Path) -> None:
    answers = _answers(tmp_path / "merge.jsonl", {262145000: "Two.", 262144000: "The Red one", 262147000: "yes"})
    out = tmp_path / "upload" / "llava.json"
    summary = write_submission(source / "llava_vqav2_mscoco_test2015.jsonl", answers, out)
    assert out.read_bytes() == (
        b'[{"question_id": 1000, "answer": ""}, {"question_id": 262144000, "answer": "red 1"}, '
        b'{"question_id": 262145000, "answer": "2"}, {"question_id": 262146000, "answer": ""}, '
        b'{"question_id": 262147000, "answer": "yes"}, {"question_id": 1001, "answer": ""}]'
    )
    assert summary["questions"] == 6 and summary["answered"] == 3 and summary["filled_empty"] == 3
    assert summary["upload_url"].startswith("https://eval.ai/") and summary["complete"] is None  # not checked


def test_split_questions_must_all_be_answered(source: Path, tmp_path: Path) -> None:
    answers = _answers(tmp_path / "merge.jsonl", {"262144000": "a", 262145000: "b", 262146000: "c"})
    test, dev = source / "llava_vqav2_mscoco_test2015.jsonl", source / "llava_vqav2_mscoco_test-dev2015.jsonl"
    with pytest.raises(FormatError, match="1 questions of .* have no answer .*262147000"):
        write_submission(test, answers, tmp_path / "u.json", split_questions=dev)
    summary = write_submission(test, answers, tmp_path / "u.json", split_questions=dev, allow_partial=True)
    assert summary["split_missing_ids"] == [262147000] and summary["answered"] == 3  # "262144000" taken as a number
    full = _answers(tmp_path / "full.jsonl", dict.fromkeys(TEST_DEV, "x"))
    assert write_submission(test, full, tmp_path / "u.json", split_questions=dev)["complete"] is True


def test_broken_answer_files_name_the_line(source: Path, tmp_path: Path) -> None:
    test = source / "llava_vqav2_mscoco_test2015.jsonl"
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question_id": 262144000, "text": "a"}\n{"question_id": 2621')
    with pytest.raises(FormatError, match=r"broken\.jsonl:2: not valid JSON"):
        write_submission(test, broken, tmp_path / "u.json")
    twice = _jsonl(tmp_path / "twice.jsonl", [{"question_id": 1000, "text": "a"}, {"question_id": 1000, "text": "b"}])
    with pytest.raises(FormatError, match=r"twice\.jsonl:2: second, different answer to question_id 1000"):
        write_submission(test, twice, tmp_path / "u.json")
    assert not (tmp_path / "u.json").exists()


def _annotation(qid: int, answers: list[str], answer_type: str, question_type: str) -> dict:
    return {
        "question_id": qid,
        "image_id": qid // 10,
        "question_type": question_type,
        "answer_type": answer_type,
        "multiple_choice_answer": answers[0],
        "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)],
    }


@pytest.fixture
def val(tmp_path: Path) -> tuple[Path, Path]:
    annotations = [
        _annotation(10, ["yes"] * 10, "yes/no", "is the"),
        _annotation(20, ["2"] * 6 + ["3"] * 4, "number", "how many"),
        _annotation(30, ["red"] * 2 + ["dark red"] * 8, "other", "what color is the"),
        _annotation(40, ["ball"] * 10, "other", "what is the"),
    ]
    questions = [{"question_id": a["question_id"], "image_id": a["image_id"], "question": "?"} for a in annotations]
    ann_path, q_path = (
        tmp_path / "v2_mscoco_val2014_annotations.json",
        tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json",
    )
    ann_path.write_text(json.dumps({"annotations": annotations}))
    q_path.write_text(json.dumps({"questions": questions}))
    return ann_path, q_path


def test_val_accuracy_as_vqaeval(val: tuple[Path, Path], tmp_path: Path) -> None:
    annotations, questions = val
    # "Yes" is lower-cased by the upload processing; "Three" -> "3"; "red" matches 2 humans
    answers = _answers(tmp_path / "a.jsonl", {10: "Yes", 20: "Three", 30: "Red", 40: "balls"})
    out = score_vqav2_files(annotations, answers, questions=questions)
    red = (2 * (1 / 3) + 8 * (2 / 3)) / 10
    assert out["exact_accuracy"] == pytest.approx(100 * (1 + 1 + red + 0) / 4)
    assert out["accuracy"] == 65.0
    assert out["per_answer_type"] == {"yes/no": 100.0, "number": 100.0, "other": 30.0}
    assert out["per_question_type"]["what color is the"] == 60.0


def test_val_scores_upload_files_as_they_are(val: tuple[Path, Path], tmp_path: Path) -> None:
    annotations, _ = val
    upload = tmp_path / "upload.json"
    upload.write_text(
        json.dumps([{"question_id": q, "answer": a} for q, a in ((10, "Yes"), (20, "3"), (30, "x"), (40, "ball"))])
    )
    out = score_vqav2_files(annotations, upload)
    assert out["per_answer_type"]["yes/no"] == 0.0  # unanimous humans: no normalisation, "Yes" != "yes"
    assert out["accuracy"] == 50.0


def test_val_needs_every_answer_unless_partial(val: tuple[Path, Path], tmp_path: Path) -> None:
    annotations, questions = val
    answers = _answers(tmp_path / "a.jsonl", {10: "yes"})
    with pytest.raises(FormatError, match="3 of 4 annotated questions have no answer"):
        score_vqav2_files(annotations, answers)
    out = score_vqav2_files(annotations, answers, allow_partial=True)
    assert out["accuracy"] == 100.0 and out["unanswered"] == 3 and out["unanswered_ids"] == [20, 30, 40]
    stray = _answers(tmp_path / "s.jsonl", {99: "yes"})
    with pytest.raises(FormatError, match="without annotation"):
        score_vqav2_files(annotations, stray, allow_partial=True)
    other = tmp_path / "q.json"
    other.write_text(json.dumps({"questions": [{"question_id": 10, "image_id": 1, "question": "?"}]}))
    with pytest.raises(FormatError, match="does not hold the question_ids"):
        score_vqav2_files(annotations, answers, questions=other, allow_partial=True)


def test_commands(source: Path, val: tuple[Path, Path], tmp_path: Path) -> None:
    answers = _answers(tmp_path / "a.jsonl", dict.fromkeys(TEST_DEV, "Yes"))
    out = tmp_path / "upload.json"
    result = CliRunner().invoke(
        eval_group,
        [
            "submission",
            "vqav2",
            "--questions",
            str(source / "llava_vqav2_mscoco_test2015.jsonl"),
            "--split-questions",
            str(source / "llava_vqav2_mscoco_test-dev2015.jsonl"),
            "--answers",
            str(answers),
            "--out",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["complete"] is True
    assert [r["answer"] for r in json.loads(out.read_text())] == ["", "yes", "yes", "yes", "yes", ""]
    annotations, questions = val
    val_answers = _answers(tmp_path / "v.jsonl", {10: "yes", 20: "2", 30: "dark red", 40: "ball"})
    result = CliRunner().invoke(
        eval_group,
        [
            "score",
            "vqav2",
            "--annotations",
            str(annotations),
            "--questions",
            str(questions),
            "--answers",
            str(val_answers),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == 100.0


def test_test_dev_items_are_submission_only(source: Path, tmp_path: Path) -> None:
    bench = VQAv2Benchmark()
    items = bench.load_items(str(source))
    assert [item.id for item in items] == [str(q) for q in TEST_DEV]
    assert items[0].prompt == f"What color is thing 0?\n{SHORT}" and items[0].image.endswith(
        "test2015/COCO_test2015_000000262144.jpg"
    )
    answers = dict.fromkeys((item.id for item in items), "No.")
    scores = bench.score(items, answers, output_url=str(tmp_path / "run"))
    assert scores["headline"] is None and scores["submission_only"] is True
    assert scores["upload_url"] == "https://eval.ai/web/challenges/challenge-page/830/my-submission"
    upload = json.loads(Path(scores["upload_file"]).read_text())
    assert [r["question_id"] for r in upload] == [1000, *TEST_DEV, 1001]  # filled from test2015
    assert [r["answer"] for r in upload] == ["", "no", "no", "no", "no", ""]
    assert bench.score(items, answers)["upload_file"] is None  # nowhere to write


def test_val_items_score_accuracy(tmp_path: Path) -> None:
    source = vqav2_source(tmp_path / "vqav2", n=3, split="val")
    bench = VQAv2Benchmark()
    items = bench.load_items(str(source))
    assert items[1].id == "43001" and items[1].prompt == f"How many dogs are in picture 1?\n{SHORT}"
    assert items[1].image.endswith("val2014/COCO_val2014_000000000043.jpg")
    scores = bench.score(items, {"42000": "zero", "43001": "1", "44002": "3"})
    assert scores["headline"] == scores["accuracy"] == 66.67 and scores["exact_accuracy"] == pytest.approx(200 / 3)
    assert bench.load_items(str(source), limit=1)[0].id == "42000"


def test_registered_with_aliases() -> None:
    for name, alias in (("textvqa", "TextVQA"), ("textvqa", "text-vqa"), ("vqav2", "vqa_v2"), ("vizwiz", "viz-wiz")):
        bench = get_benchmark(alias)
        assert bench is BENCHMARKS[name] and isinstance(bench, Benchmark) and not bench.needs_judge
        assert bench.max_new_tokens == 128  # model_vqa_loader.py's default; LLaVA's scripts set none
    assert get_benchmark("vqav2", split="val").split == "val"
