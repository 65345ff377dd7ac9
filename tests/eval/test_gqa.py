"""GQA testdev-balanced: LLaVA's conversion (convert_gqa_for_eval.py) and GQA's eval.py scores.

The reference folder has LLaVA's real question file and LLaVA-1.5-13B's real answers, but not
GQA's answer key (testdev_balanced_questions.json), so the conversion is checked on the real
answers and the evaluator on constructed questions in GQA's schema.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from som.eval.benchmarks import FormatError
from som.eval.benchmarks.gqa import (
    GqaQuestion,
    convert,
    evaluate,
    normalise,
    predictions_bytes,
    read_predictions,
    score_gqa_files,
    write_predictions,
)
from som.eval.cli import eval_group
from som.eval.registry import get_benchmark
from tests.eval.reference import reference
from tests.helpers.suite_sources_gqa_seed import gqa_source


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("No.", "no"),
        ("T-shirt", "t-shirt"),
        ("Mr. Smith...", "mr. smith"),  # every trailing dot goes, inner ones stay
        ("yes. ", "yes. "),  # rstrip('.') only: a trailing space protects the dot
        (" Left", " left"),  # no whitespace stripping
        ("...", ""),
        ("91.5 best", "91.5 best"),
        ("ÉCOLE.", "école"),
    ],
)
def test_normalise_is_the_converters_rstrip_then_lower(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_conversion_keeps_ids_order_and_repeats() -> None:
    converted = convert([("2", "Yes."), (7, "Blue"), ("2", "No")])
    assert converted == [
        {"questionId": "2", "prediction": "yes"},
        {"questionId": 7, "prediction": "blue"},
        {"questionId": "2", "prediction": "no"},
    ]
    assert predictions_bytes(converted) == (
        b'[{"questionId": "2", "prediction": "yes"}, {"questionId": 7, "prediction": "blue"}, '
        b'{"questionId": "2", "prediction": "no"}]'
    )
    assert predictions_bytes(convert([("1", "Caf\u00e9")])) == b'[{"questionId": "1", "prediction": "caf\\u00e9"}]'


def test_conversion_of_the_real_llava_answers(tmp_path: Path) -> None:
    answers = reference("gqa", "answers_llava-v1.5-13b.jsonl")
    out = tmp_path / "testdev_balanced_predictions.json"
    summary = write_predictions(answers, str(out))
    assert summary["predictions"] == 12578
    data = out.read_bytes()
    assert data.startswith(
        b'[{"questionId": "201307251", "prediction": "no"}, {"questionId": "201640614", "prediction": "woman"}, '
    )
    assert data.endswith(b"}]") and b"\n" not in data and data.isascii()
    # sha256 of the file LLaVA's scripts/convert_gqa_for_eval.py writes from these answers (run once on it)
    assert hashlib.sha256(data).hexdigest() == "8fe02304fefd2f19d0a4bc80db9fdedda07ccd99fd23532fa62fb5801b2948e5"
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    written = json.loads(data)
    assert [p["questionId"] for p in written] == [r["question_id"] for r in rows]  # order and string ids kept
    assert all(isinstance(p["questionId"], str) for p in written)
    assert sum(r["text"] != p["prediction"] for r, p in zip(rows, written, strict=True)) == 12565  # capitalised answers
    assert all(p["prediction"] == p["prediction"].lower() and not p["prediction"].endswith(".") for p in written)
    assert (
        written[
            [r["question_id"] for r in rows].index(next(r["question_id"] for r in rows if r["text"] == "91.5 best"))
        ]["prediction"]
        == "91.5 best"
    )
    questions = [
        json.loads(line) for line in reference("gqa", "llava_gqa_testdev_balanced.jsonl").read_text().splitlines()
    ]
    assert [q["question_id"] for q in questions] == [p["questionId"] for p in written]


def _question(answer: str, structural: str, group: str | None, balanced: bool = True, semantic: str = "attr") -> dict:
    return {
        "question": "?",
        "answer": answer,
        "isBalanced": balanced,
        "semantic": [],
        "entailed": [],
        "types": {"structural": structural, "semantic": semantic, "detailed": "x"},
        "groups": {"global": group, "local": "l"},
    }


def _key(tmp_path: Path) -> Path:
    path = tmp_path / "testdev_balanced_questions.json"
    path.write_text(
        json.dumps(
            {
                "q1": _question("yes", "verify", "g1"),
                "q2": _question("left", "query", "g2", semantic="rel"),
                "q3": _question("no", "logical", "g1"),
                "q4": _question("red", "query", None, balanced=False),  # unbalanced: neither scored nor required
            }
        )
    )
    return path


def _answers(tmp_path: Path, lines: list[dict]) -> Path:
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_evaluator_accuracy_binary_open_and_distribution(tmp_path: Path) -> None:
    answers = _answers(
        tmp_path,
        [
            {"question_id": "q1", "text": "Yes."},
            {"question_id": "q2", "text": "Left"},
            {"question_id": "q3", "text": "No "},
        ],
    )  # "no " != "no": exact match only
    scores = score_gqa_files(_key(tmp_path), answers=answers)
    assert scores.accuracy == pytest.approx(200 / 3) and scores.questions == 3
    assert (scores.binary, scores.open) == (50.0, 100.0)
    assert scores.per_structural_type == {
        "logical": {"accuracy": 0.0, "questions": 1},
        "query": {"accuracy": 100.0, "questions": 1},
        "verify": {"accuracy": 100.0, "questions": 1},
    }
    assert scores.per_semantic_type["attr"] == {"accuracy": 50.0, "questions": 2}
    # group g1: gold {yes: 1, no: 1}, predicted {yes: 1, "no ": 1} -> chi 1 weighted 2; g2: 0 weighted 1
    assert scores.distribution == pytest.approx((1 * 2 + 0 * 1) / 3 / 100)
    assert scores.to_dict()["validity"] is None and scores.unanswered == 0


def test_same_numbers_from_a_predictions_file_and_last_repeat_wins(tmp_path: Path) -> None:
    predictions = tmp_path / "testdev_balanced_predictions.json"
    predictions.write_text(
        json.dumps(
            [
                {"questionId": "q1", "prediction": "no"},
                {"questionId": "q2", "prediction": "left"},
                {"questionId": "q3", "prediction": "no"},
                {"questionId": "q1", "prediction": "yes"},
            ]
        )
    )
    assert read_predictions(predictions)["q1"] == "yes"
    assert score_gqa_files(_key(tmp_path), predictions=predictions).accuracy == 100.0


def test_missing_predictions_fail_like_eval_py_unless_allow_partial(tmp_path: Path) -> None:
    answers = _answers(tmp_path, [{"question_id": "q1", "text": "yes"}, {"question_id": "q2", "text": "left"}])
    with pytest.raises(FormatError, match=r"answers.jsonl: no prediction for 1 balanced questions \(e.g. \['q3'\]\)"):
        score_gqa_files(_key(tmp_path), answers=answers)
    partial = score_gqa_files(_key(tmp_path), answers=answers, allow_partial=True)
    assert (partial.accuracy, partial.questions, partial.unanswered, partial.unanswered_ids) == (100.0, 2, 1, ["q3"])


def test_numeric_ids_match_nothing_and_the_error_says_why() -> None:
    questions = {"5": GqaQuestion("yes", "verify", "attr", None, True)}
    with pytest.raises(FormatError, match="1 predictions have a numeric questionId"):
        evaluate(questions, {5: "yes"})


def test_malformed_gqa_files(tmp_path: Path) -> None:
    bad = _answers(tmp_path, [{"question_id": "q1", "text": "yes"}, {"question_id": "q2"}])
    with pytest.raises(FormatError, match=r"answers.jsonl:2: missing field 'text'"):
        score_gqa_files(_key(tmp_path), answers=bad)
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"q1": {"answer": "yes", "isBalanced": True}}))
    with pytest.raises(FormatError, match=r"key.json: question q1: expected answer, isBalanced, types.structural"):
        score_gqa_files(key, answers=_answers(tmp_path, []))
    key.write_text("[]")
    with pytest.raises(FormatError, match="an object of questions keyed by id"):
        score_gqa_files(key, answers=_answers(tmp_path, []))
    predictions = tmp_path / "p.json"
    predictions.write_text(json.dumps([{"questionId": "q1"}]))
    with pytest.raises(FormatError, match=r"p.json: entry 1: expected"):
        read_predictions(predictions)


def test_gqa_items_score_and_predictions_file(tmp_path: Path) -> None:
    reference("gqa", "llava_gqa_testdev_balanced.jsonl")
    source = gqa_source(tmp_path / "gqa", n=4)
    bench = get_benchmark("gqa")
    assert bench.max_new_tokens == 128  # model_vqa_loader's default, as gqa.sh runs it
    items = bench.load_items(str(source))
    assert [i.id for i in items] == ["201307251", "201640614", "202225914", "2062325"]
    assert items[0].prompt == "Is it overcast?\nAnswer the question using a single word or phrase."
    assert items[0].image == str(source / "data" / "images" / "n161313.jpg")
    answers = {"201307251": "Yes", "201640614": "No.", "202225914": "No", "2062325": "Maybe"}
    out = tmp_path / "run" / "testdev_balanced_predictions.json"
    scores = bench.score(items, answers, output_url=str(out.parent))
    assert scores["headline"] == 50.0 and scores["binary"] == 50.0 and scores["open"] == 50.0
    assert json.loads(out.read_text())[1] == {"questionId": "201640614", "prediction": "no"}
    with pytest.raises(ValueError, match="1 of 4 items have no answer"):
        bench.score(items, {k: v for k, v in answers.items() if k != "2062325"})
    partial = bench.score(items, {k: v for k, v in answers.items() if k != "2062325"}, allow_partial=True)
    assert partial["unanswered"] == 1 and partial["headline"] == pytest.approx(200 / 3)
    assert len(bench.load_items(str(source), limit=2)) == 2


def test_gqa_without_the_answer_key_writes_predictions_and_no_headline(tmp_path: Path) -> None:
    reference("gqa", "llava_gqa_testdev_balanced.jsonl")
    source = gqa_source(tmp_path / "gqa", n=2)
    (source / "data" / "testdev_balanced_questions.json").unlink()
    bench = get_benchmark("gqa")
    items = bench.load_items(str(source))
    assert items[0].meta == {}
    out = tmp_path / "testdev_balanced_predictions.json"
    scores = bench.score(items, {"201307251": "No", "201640614": "Woman"}, output_url=str(tmp_path))
    assert scores["headline"] is None and scores["predictions_file"] == str(out) and scores["submission_only"]
    assert "no testdev_balanced_questions.json" in scores["note"]
    assert (
        out.read_bytes()
        == b'[{"questionId": "201307251", "prediction": "no"}, {"questionId": "201640614", "prediction": "woman"}]'
    )


def test_gqa_commands(tmp_path: Path) -> None:
    answers = _answers(
        tmp_path,
        [
            {"question_id": "q1", "text": "Yes"},
            {"question_id": "q2", "text": "Left."},
            {"question_id": "q3", "text": "no"},
        ],
    )
    out = tmp_path / "predictions.json"
    result = CliRunner().invoke(eval_group, ["submission", "gqa", "--answers", str(answers), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["predictions"] == 3 and json.loads(out.read_text())[1]["prediction"] == "left"
    for source in (["--answers", str(answers)], ["--predictions", str(out)]):
        result = CliRunner().invoke(eval_group, ["score", "gqa", "--questions", str(_key(tmp_path)), *source])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["accuracy"] == 100.0
    result = CliRunner().invoke(eval_group, ["score", "gqa", "--questions", str(_key(tmp_path))])
    assert result.exit_code == 2 and "give --answers or --predictions" in result.output
    short = _answers(tmp_path, [{"question_id": "q1", "text": "Yes"}])
    result = CliRunner().invoke(
        eval_group, ["score", "gqa", "--questions", str(_key(tmp_path)), "--answers", str(short)]
    )
    assert result.exit_code == 1 and "no prediction for 2 balanced questions" in result.output


def test_a_question_missing_from_the_answer_key_is_named(tmp_path: Path) -> None:
    reference("gqa", "llava_gqa_testdev_balanced.jsonl")
    source = gqa_source(tmp_path / "gqa", n=2)
    key = source / "data" / "testdev_balanced_questions.json"
    key.write_text(json.dumps({k: v for k, v in json.loads(key.read_text()).items() if k != "201640614"}))
    with pytest.raises(FormatError, match=r"llava_gqa_testdev_balanced.jsonl:2: question 201640614 is not in"):
        get_benchmark("gqa").load_items(str(source))
