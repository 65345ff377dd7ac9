"""TextVQA as eval_textvqa.py scores it: question recovery from prompts, annotation matching, m4c.

The official annotation file is not shipped, so annotations are constructed: on the real
question and answer files (../shared/reference/textvqa) they are built so that the expected
accuracy is known, which checks that all 5000 real prompts find their annotation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from som.eval.benchmarks import FormatError
from som.eval.benchmarks.textvqa import TextVQABenchmark, prompt_question, score_textvqa_files
from som.eval.cli import eval_group
from tests.eval.reference import reference
from tests.helpers.suite_sources_vqa import textvqa_source

SHORT = "Answer the question using a single word or phrase."


@pytest.mark.parametrize(
    ("prompt", "question"),
    [
        ("What is the Brand?\nReference OCR token: DAKOTA, Camera\n" + SHORT, "what is the brand?"),
        ("What is the Brand?\nReference OCR token: \n" + SHORT, "what is the brand?"),  # no OCR tokens
        ("Reference OCR token: A, B\nWhat is it?\n" + SHORT, "what is it?"),
        ("What is it?\n" + SHORT, "what is it?"),
        ("OCR tokens: A, B Question: What is\nit? Short answer:", "what is\nit?"),  # spans lines
    ],
)
def test_prompt_question_layouts(prompt: str, question: str) -> None:
    assert prompt_question(prompt) == question


@pytest.mark.parametrize("prompt", ["What is it?", "a\nb\nc", "a\nb\nc\nd", "OCR tokens: A Question: x"])
def test_prompt_question_rejects_other_layouts(prompt: str) -> None:
    with pytest.raises(ValueError):
        prompt_question(prompt)


def _annotations(path: Path, data: list[dict]) -> Path:
    path.write_text(json.dumps({"dataset_name": "textvqa", "data": data}))
    return path


def _answers(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _record(qid: int, image: str, question: str, answers: list[str]) -> dict:
    return {"question_id": qid, "image_id": image, "question": question, "answers": answers}


def test_scores_every_line_by_image_and_question(tmp_path: Path) -> None:
    annotations = _annotations(
        tmp_path / "val.json",
        [
            _record(1, "img1", "What is it?", ["Stop"] * 10),
            _record(2, "img1", "What colour?", ["red"] * 9 + ["blue"]),
            _record(3, "img2", "What is it?", ["old"] * 10),
            _record(4, "img2", "WHAT IS IT?", ["exit"] * 10),  # same key, lower-cased: the later one wins
        ],
    )
    answers = _answers(
        tmp_path / "a.jsonl",
        [
            {"question_id": "img1", "prompt": f"What is it?\nReference OCR token: STOP\n{SHORT}", "text": "STOP."},
            {"question_id": "img1", "prompt": f"What colour?\nReference OCR token: \n{SHORT}", "text": "Blue"},
            {"question_id": "img2", "prompt": f"what is it?\n{SHORT}", "text": "exit"},
            {"question_id": "img2", "prompt": f"what is it?\n{SHORT}", "text": "exit"},  # a repeat counts again
        ],
    )
    out = score_textvqa_files(annotations, answers)
    assert out["samples"] == 4 and out["unanswered"] == 0
    assert out["accuracy"] == pytest.approx(100 * (1 + 0.3 + 1 + 1) / 4)
    assert out["accuracy_printed"] == "82.50"


def test_unanswered_questions_need_allow_partial(tmp_path: Path) -> None:
    annotations = _annotations(
        tmp_path / "val.json", [_record(1, "i", "Q?", ["a"] * 10), _record(2, "j", "R?", ["b"] * 10)]
    )
    answers = _answers(tmp_path / "a.jsonl", [{"question_id": "i", "prompt": f"Q?\n{SHORT}", "text": "a"}])
    with pytest.raises(FormatError, match="1 of 2 questions have no answer"):
        score_textvqa_files(annotations, answers)
    out = score_textvqa_files(annotations, answers, allow_partial=True)
    assert out["accuracy"] == 100.0 and out["unanswered"] == 1 and out["unanswered_questions"] == [["j", "r?"]]


def test_bad_answers_name_file_and_line(tmp_path: Path) -> None:
    annotations = _annotations(tmp_path / "val.json", [_record(1, "i", "Q?", ["a"] * 10)])
    unknown = _answers(tmp_path / "a.jsonl", [{"question_id": "x", "prompt": f"Q?\n{SHORT}", "text": "a"}])
    with pytest.raises(FormatError, match=r"a\.jsonl:1: no annotation for question 'q\?' on image x"):
        score_textvqa_files(annotations, unknown)
    layout = _answers(tmp_path / "b.jsonl", [{"question_id": "i", "prompt": "Q?", "text": "a"}])
    with pytest.raises(FormatError, match=r"b\.jsonl:1: prompt has 1 lines"):
        score_textvqa_files(annotations, layout)
    nine = _annotations(tmp_path / "nine.json", [_record(7, "i", "Q?", ["a"] * 9)])
    ok = _answers(tmp_path / "c.jsonl", [{"question_id": "i", "prompt": f"Q?\n{SHORT}", "text": "a"}])
    with pytest.raises(FormatError, match="question_id 7: TextVQA accuracy needs 10 human answers"):
        score_textvqa_files(nine, ok)


def test_answers_without_prompt_take_it_from_the_question_file(tmp_path: Path) -> None:
    annotations = _annotations(
        tmp_path / "val.json",
        [_record(1, "i", "Q?", ["a"] * 10), _record(2, "j", "R?", ["b"] * 10), _record(3, "j", "S?", ["c"] * 10)],
    )
    questions = _answers(
        tmp_path / "q.jsonl",
        [
            {
                "question_id": qid,
                "image": f"{qid}.jpg",
                "text": f"{q}\nReference OCR token: \n{SHORT}",
                "category": "default",
            }
            for qid, q in (("i", "Q?"), ("j", "R?"), ("j", "S?"))
        ],
    )
    answers = _answers(tmp_path / "a.jsonl", [{"question_id": "i", "text": "a"}])
    with pytest.raises(FormatError, match="pass the question file"):
        score_textvqa_files(annotations, answers)
    out = score_textvqa_files(annotations, answers, questions=questions, allow_partial=True)
    assert out["accuracy"] == 100.0 and out["questions"] == 3 and out["unanswered"] == 2
    ambiguous = _answers(tmp_path / "b.jsonl", [{"question_id": "j", "text": "b"}])
    with pytest.raises(FormatError, match="question_id j is in .* 2 times"):
        score_textvqa_files(annotations, ambiguous, questions=questions, allow_partial=True)


def test_reference_prompts_all_find_their_annotation(tmp_path: Path) -> None:
    questions = reference("textvqa", "llava_textvqa_val_v051_ocr.jsonl")
    answers = reference("textvqa", "answers_llava-v1.5-13b.jsonl")
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    # even lines: every human gave the model's answer; odd lines: none did
    data = [
        _record(
            index,
            line["question_id"],
            line["prompt"].split("\n")[0],
            [line["text"] if index % 2 == 0 else "\u2205"] * 10,
        )
        for index, line in enumerate(lines)
    ]
    annotations = _annotations(tmp_path / "TextVQA_0.5.1_val.json", data)
    out = score_textvqa_files(annotations, answers, questions=questions)
    assert out["samples"] == 5000 and out["questions"] == 5000
    assert out["accuracy"] == 50.0


def test_command(tmp_path: Path) -> None:
    annotations = _annotations(tmp_path / "val.json", [_record(1, "i", "Q?", ["two"] * 10)])
    answers = _answers(tmp_path / "a.jsonl", [{"question_id": "i", "prompt": f"Q?\n{SHORT}", "text": "2"}])
    result = CliRunner().invoke(
        eval_group,
        ["score", "textvqa", "--annotations", str(annotations), "--answers", str(answers)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == 100.0


def test_items_and_runner_score(tmp_path: Path) -> None:
    source = textvqa_source(tmp_path / "textvqa", n=4)
    bench = TextVQABenchmark()
    items = bench.load_items(str(source))
    assert [item.id for item in items] == ["34602", "34603", "34604", "34605"]
    assert items[0].meta["image_id"] == items[1].meta["image_id"]  # one image, two questions
    assert items[1].prompt == f"What does sign 1 say?\nReference OCR token: \n{SHORT}"
    assert items[0].image.endswith("train_images/0000000000000000.jpg")
    assert bench.max_new_tokens == 128 and len(bench.load_items(str(source), limit=2)) == 2
    answers = {"34602": "Sign 0", "34603": "sign", "34604": "sign 2", "34605": "no"}
    scores = bench.score(items, answers)
    assert scores["headline"] == pytest.approx(100 * (1 + 0.9 + 1 + 0) / 4)
    with pytest.raises(ValueError, match="1 of 4 items have no answer"):
        bench.score(items, {k: v for k, v in answers.items() if k != "34605"})
    partial = bench.score(items, {"34602": "sign 0"}, allow_partial=True)
    assert partial["headline"] == 100.0 and partial["samples"] == 1


def test_items_need_the_annotations(tmp_path: Path) -> None:
    source = textvqa_source(tmp_path / "textvqa", n=2)
    (source / "TextVQA_0.5.1_val.json").unlink()
    with pytest.raises(FormatError, match="TextVQA items need it"):
        TextVQABenchmark().load_items(str(source))
