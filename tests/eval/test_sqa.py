"""ScienceQA-IMG: eval_science_qa.py's letter rules, FAILED handling and output files.

../shared/reference/sqa/ holds LLaVA-1.5-13B's scorer outputs (output/result files, from which
the answers file was rebuilt), so the official numbers (all 74.39, IMG 71.64) and both files
are checked byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from som import storage
from som.eval.benchmarks import FormatError
from som.eval.benchmarks.seed import PROMPT_SUFFIX
from som.eval.benchmarks.sqa import (
    FAILED,
    SqaAnswer,
    SqaProblem,
    choice_index,
    load_problems,
    load_sqa_answers,
    parse_answer,
    recorded_prompt,
    score_sqa,
    score_sqa_files,
    sqa_prompt,
    write_llava_files,
)
from som.eval.cli import eval_group
from som.eval.registry import get_benchmark
from tests.eval.reference import reference
from tests.helpers.suite_sources_sqa_mmbench import SQA, sqa_source


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("E", "E"),
        ("B. apostrophe", "B"),
        ("The answer is C.", "C"),
        ("Because ... The answer is Dx", "D"),  # the pattern's "." matches any character
        ("The answer is C", FAILED),  # nothing after the letter
        ("The answer is A. The answer is B.", FAILED),  # two matches
        ("B.", FAILED),  # too short for "B. "
        ("B.apostrophe", FAILED),
        (" B", FAILED),  # no stripping
        ("b", FAILED),
        ("F", FAILED),
        ("", FAILED),
    ],
)
def test_parse_answer_follows_eval_science_qa(text: str, letter: str) -> None:
    assert parse_answer(text) == letter


def test_letters_beyond_the_choices_and_failed_are_index_minus_one() -> None:
    assert choice_index("B", 2) == 1
    assert choice_index("C", 2) == -1
    assert choice_index(FAILED, 5) == -1


def test_prompts_are_model_vqa_science_with_single_pred_prompt() -> None:
    question = "<image>\nContext: a map.\nWhich state is highlighted?\nA. Ohio\nB. Iowa  "
    assert sqa_prompt(question) == f"Context: a map.\nWhich state is highlighted?\nA. Ohio\nB. Iowa\n{PROMPT_SUFFIX}"
    assert recorded_prompt(sqa_prompt(question), True) == "<image>\n" + sqa_prompt(question)
    assert recorded_prompt("Which?\nA. x\nB. y", False) == "Which?\nA. x\nB. y"


def _problems() -> list[SqaProblem]:
    return [SqaProblem("1", 0, 2), SqaProblem("2", 1, 3), SqaProblem("3", 2, 3), SqaProblem("4", 0, 2)]


def test_image_questions_are_told_by_the_prompt_and_failed_counts_wrong() -> None:
    answers = {
        "1": SqaAnswer("A", "<image>\nq"),
        "2": SqaAnswer("B. two", "q"),
        "3": SqaAnswer("I think so", "<image>\nq"),
        "4": SqaAnswer("The answer is A.", "<image>\nq"),
    }
    scores = score_sqa(_problems(), answers)
    assert (scores.correct, scores.count, scores.accuracy) == (3, 4, 75.0)
    assert (scores.img_correct, scores.img_count) == (2, 3)
    assert scores.img_accuracy == pytest.approx(200 / 3)
    assert scores.failed == 1
    assert scores.result["results"] == {"1": 0, "2": 1, "3": -1, "4": 0}
    assert [r["question_id"] for r in scores.output["incorrect"]] == ["3"]
    assert scores.summary_line == "Total: 4, Correct: 3, Accuracy: 75.00%, IMG-Accuracy: 66.67%"


def test_unanswered_problems_are_an_error_unless_partial_then_failed_and_not_img() -> None:
    answers = {"1": SqaAnswer("A", "<image>\nq"), "2": SqaAnswer("B", "q")}
    with pytest.raises(ValueError, match="2 of 4 problems have no answer"):
        score_sqa(_problems(), answers)
    scores = score_sqa(_problems(), answers, allow_partial=True)
    assert scores.missing == ["3", "4"]
    assert scores.to_dict()["unanswered"] == 2
    assert (scores.correct, scores.count, scores.img_count) == (2, 4, 1)  # "Unknown" prompts are no image questions
    unknown = scores.output["incorrect"][0]
    assert (unknown["pred"], unknown["question"], unknown["parsed_ans"]) == ("FAILED", "Unknown", "FAILED")


def _base(tmp_path: Path, problems: dict, splits: dict) -> Path:
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps(splits))
    return tmp_path


def test_integer_question_ids_match_no_problem_as_in_the_official_lookup(tmp_path: Path) -> None:
    base = _base(tmp_path, {"7": {"choices": ["x", "y"], "answer": 1}}, {"test": ["7"]})
    (tmp_path / "answers.jsonl").write_text(json.dumps({"question_id": 7, "text": "B", "prompt": "q"}) + "\n")
    with pytest.raises(FormatError, match="1 of 1 problems have no answer"):
        score_sqa_files(base, tmp_path / "answers.jsonl")
    scores = score_sqa_files(base, tmp_path / "answers.jsonl", allow_partial=True)
    assert (scores.correct, scores.unmatched_answers, scores.id_type_mismatches) == (0, 1, 1)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"question_id": "7", "text": "B", "prompt": "q"}', "{oops"], r"answers.jsonl:2: not valid JSON"),
        (['{"question_id": "7", "text": "B"}'], r"answers.jsonl:1: answer to '7' has no 'prompt'"),
        (['{"question_id": "7", "text": 3, "prompt": "q"}'], r"answers.jsonl:1: expected question_id"),
        (
            ['{"question_id": "7", "text": "B", "prompt": "q"}', '{"question_id": "7", "text": "A", "prompt": "q"}'],
            r"answers.jsonl:2: second, different answer",
        ),
    ],
)
def test_malformed_answers_name_file_and_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError, match=message):
        load_sqa_answers(path)


def test_malformed_problem_files_are_format_errors(tmp_path: Path) -> None:
    base = _base(tmp_path, {"7": {"choices": ["x"], "answer": 0}}, {"val": ["7"]})
    with pytest.raises(FormatError, match=r"pid_splits.json: no split 'test' \(splits: val\)"):
        load_problems(base)
    base = _base(tmp_path, {"7": {"choices": ["x"]}}, {"test": ["7", "8"]})
    with pytest.raises(FormatError, match=r"problems.json: problem '7': needs a 'choices' list"):
        load_problems(base)
    base = _base(tmp_path, {"7": {"choices": ["x"], "answer": 0}}, {"test": ["7", "8"]})
    with pytest.raises(FormatError, match=r"problem '8' of split 'test' is missing"):
        load_problems(base)


def _tiny_source(folder: Path) -> Path:
    if not SQA.exists():
        pytest.skip(f"reference data not available: {SQA}")
    return sqa_source(folder, n=4)


def test_answers_without_prompt_take_it_from_llavas_question_file(tmp_path: Path) -> None:
    source = _tiny_source(tmp_path / "sqa")
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"id": pid, "answer": "A"}) + "\n" for pid in ("4", "5", "11", "15")))
    scores = score_sqa_files(source, answers, questions=source / "llava_test_CQM-A.json")
    assert scores.img_count == 2  # 5 and 11 have images
    assert scores.output["incorrect"][0]["question"].endswith(PROMPT_SUFFIX)


# --- reference: LLaVA-1.5-13B ----------------------------------------------------------------


def test_reference_reproduces_official_numbers_and_files(tmp_path: Path) -> None:
    scores = score_sqa_files(reference("sqa", "base"), reference("sqa", "answers_llava-v1.5-13b_reconstructed.jsonl"))
    assert (round(scores.img_accuracy or 0, 2), round(scores.accuracy, 2)) == (71.64, 74.39)
    assert (scores.correct, scores.count, scores.img_correct, scores.img_count) == (3155, 4241, 1445, 2017)
    write_llava_files(scores, tmp_path / "output.jsonl", tmp_path / "result.json")
    assert (tmp_path / "output.jsonl").read_bytes() == reference("sqa", "output_llava-v1.5-13b.jsonl").read_bytes()
    assert (tmp_path / "result.json").read_bytes() == reference("sqa", "result_llava-v1.5-13b.json").read_bytes()


def test_score_command_prints_json_and_writes_llavas_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        eval_group,
        [
            "score",
            "sqa",
            "--base-dir",
            str(reference("sqa", "base")),
            "--answers",
            str(reference("sqa", "answers_llava-v1.5-13b_reconstructed.jsonl")),
            "--output-file",
            str(tmp_path / "out.jsonl"),
            "--output-result",
            str(tmp_path / "result.json"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (round(out["accuracy"], 2), round(out["img_accuracy"], 2)) == (74.39, 71.64)
    assert out["official_line"] == "Total: 4241, Correct: 3155, Accuracy: 74.39%, IMG-Accuracy: 71.64%"
    assert (tmp_path / "out.jsonl").read_bytes() == reference("sqa", "output_llava-v1.5-13b.jsonl").read_bytes()


def test_score_command_refuses_partial_answers_unless_asked(tmp_path: Path) -> None:
    lines = reference("sqa", "answers_llava-v1.5-13b_reconstructed.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "part.jsonl").write_text("".join(lines[:100]))
    args = ["score", "sqa", "--base-dir", str(reference("sqa", "base")), "--answers", str(tmp_path / "part.jsonl")]
    refused = CliRunner().invoke(eval_group, args)
    assert refused.exit_code != 0 and "4141 of 4241 problems have no answer" in refused.output
    out = json.loads(CliRunner().invoke(eval_group, [*args, "--allow-partial"]).stdout)
    assert out["unanswered"] == 4141 and out["count"] == 4241 and len(out["missing"]) == 20


def test_items_give_llavas_prompts_and_score_like_the_script(tmp_path: Path) -> None:
    source = tmp_path / "scienceqa"
    source.mkdir()
    shutil.copy(reference("sqa", "llava_test_CQM-A.json"), source)
    for name in ("problems.json", "pid_splits.json"):
        shutil.copy(reference("sqa", "base", name), source)
    bench = get_benchmark("scienceqa")
    items = bench.load_items(str(source))
    recorded = {}
    for line in reference("sqa", "answers_llava-v1.5-13b_reconstructed.jsonl").read_text().splitlines():
        record = json.loads(line)
        recorded[record["question_id"]] = record
    assert len(items) == 4241 and bench.max_new_tokens == 1024
    assert all(recorded_prompt(item.prompt, item.image is not None) == recorded[item.id]["prompt"] for item in items)
    assert sum(item.image is not None for item in items) == 2017
    scores = bench.score(items, {pid: record["text"] for pid, record in recorded.items()})
    assert (round(scores["headline"], 2), round(scores["accuracy"], 2)) == (71.64, 74.39)


def test_registry_round_trip_on_a_tiny_source(tmp_path: Path) -> None:
    items = get_benchmark("sqa").load_items(str(_tiny_source(tmp_path / "scienceqa")))
    assert [item.id for item in items] == ["4", "5", "11", "15"]
    assert [item.image is None for item in items] == [True, False, False, True]
    assert items[0].prompt.startswith("Which figure of speech is used in this text?\n")
    assert all(item.prompt.endswith("\n" + PROMPT_SUFFIX) and "<image>" not in item.prompt for item in items)
    assert storage.read_bytes(items[1].image)[:2] == b"\xff\xd8"
    assert items[1].image.endswith("images/test/5/image.png")
    assert len(get_benchmark("sqa").load_items(str(tmp_path / "scienceqa"), limit=2)) == 2
