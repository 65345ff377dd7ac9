"""MMBench / MMBench-CN: model_vqa_mmbench.py's prompts, the official CircularEval, LLaVA's upload.

The dev TSV is not in ../shared/reference/mmbench/; the reference-based tests rebuild it from
LLaVA's upload xlsx and answers (tests/helpers/suite_sources_sqa_mmbench.py) with generated
images, and check LLaVA-1.5-13B's published 67.7 and the upload file's cells.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from som import storage
from som.eval.benchmarks import FormatError
from som.eval.benchmarks.mmbench import (
    INSTRUCTIONS,
    MMBenchQuestion,
    MMBenchRow,
    can_infer_option,
    can_infer_text,
    infer_letter,
    load_rows,
    mmbench_prompt,
    questions_of,
    read_tsv,
    score_mmbench,
    score_mmbench_files,
    write_submission,
)
from som.eval.benchmarks.seed import PROMPT_SUFFIX
from som.eval.cli import eval_group
from som.eval.registry import get_benchmark
from tests.helpers.suite_sources_sqa_mmbench import (
    MMBENCH_ANSWERS,
    MMBENCH_UPLOAD,
    mmbench_rows,
    mmbench_source,
    write_mmbench_tsv,
)

# --- answer letters (OpenCompass tools/eval_mmbench.py) ---------------------------------------


@pytest.mark.parametrize(
    ("prediction", "letter"),
    [
        ("A", "A"),
        ("E", "E"),  # A-E whatever the number of options
        ("The answer is B", "B"),
        ("B.", "B"),
        ("(C)", "C"),
        ("C) a cat", "C"),
        ("Answer:D", None),  # ":D" must stand alone
        ("Answer :D", "D"),
        ("A cat sits on the mat", None),  # "A" in more than 3 words may be the article
        ("A cat", "A"),
        ("A or B", None),
        ("A. or B.", None),
        ("B, then C.", "C"),  # one "X." and one "X,": the affix ("", ".") is tried first
        ("Failed to obtain answer via API", None),
        ("", None),
    ],
)
def test_can_infer_option(prediction: str, letter: str | None) -> None:
    assert can_infer_option(prediction) == letter


def test_can_infer_text_needs_exactly_one_option_inside() -> None:
    choices = {"A": "Dog", "B": "cat", "C": "bird"}
    assert can_infer_text("It is a dog.", choices) == "A"
    assert can_infer_text("a dog and a cat", choices) is None
    assert can_infer_text("a fish", choices) is None


def test_predictions_are_read_as_the_evaluator_reads_the_upload() -> None:
    assert infer_letter("", {"A": "na", "B": "x"}) == "A"  # an empty cell is read back as "nan"
    assert infer_letter("None", {"A": "na", "B": "x"}) == "A"
    assert infer_letter("I see a cat", {"A": "dog", "B": "cat"}) == "B"
    assert infer_letter("no idea", {"A": "dog", "B": "cat"}) is None


# --- prompts (llava/eval/model_vqa_mmbench.py, --single-pred-prompt) ---------------------------


def _row(hint: str | None, options: dict[str, str], index: int = 5) -> MMBenchRow:
    return MMBenchRow(
        index=index,
        question="What is shown?",
        hint=hint,
        options=options,
        answer="A",
        category="ocr",
        l2_category="fp",
        split="dev",
        image="",
        line=2,
    )


@pytest.mark.parametrize("hint", [None, "nan", "NaN", "None", "none"])
def test_prompt_without_hint(hint: str | None) -> None:
    row = _row(hint, {"A": "a dog", "B": "a cat"})
    assert mmbench_prompt(row) == f"What is shown?\nA. a dog\nB. a cat\n{PROMPT_SUFFIX}"
    assert PROMPT_SUFFIX == "Answer with the option's letter from the given choices directly."


def test_prompt_with_hint_and_options_up_to_the_first_missing_one() -> None:
    row = _row("Look closely.", {"A": "a dog", "B": "a cat", "D": "a bird"})
    assert mmbench_prompt(row, "cn") == "Look closely.\nWhat is shown?\nA. a dog\nB. a cat\n请直接回答选项字母。"
    assert mmbench_prompt(_row(None, {"A": "x", "B": "NONE", "C": "y"})).split("\n")[1:-1] == ["A. x"]
    with pytest.raises(ValueError, match="lang"):
        mmbench_prompt(row, "fr")


# --- TSV reading -------------------------------------------------------------------------------


def _synthetic_rows() -> list[dict[str, str]]:
    """Two questions with circular copies (options rotated) and one without copies."""
    base = {"category": "ocr", "image": "", "source": "test", "l2-category": "fp", "comment": "", "split": "dev"}
    return [
        {
            **base,
            "index": "1",
            "question": 'Q1 "quoted"\twith tab',
            "hint": "nan",
            "A": "red",
            "B": "blue",
            "C": "",
            "D": "",
            "answer": "A",
        },
        {
            **base,
            "index": "2",
            "question": "Q2",
            "hint": "multi\nline hint",
            "A": "one",
            "B": "two",
            "C": "three",
            "D": "NA",
            "answer": "C",
            "category": "count",
        },
        {**base, "index": "3", "question": "Q3", "hint": "", "A": "x", "B": "y", "C": "", "D": "", "answer": "B"},
        {
            **base,
            "index": "1000001",
            "question": 'Q1 "quoted"\twith tab',
            "hint": "nan",
            "A": "blue",
            "B": "red",
            "C": "",
            "D": "",
            "answer": "B",
        },
        {
            **base,
            "index": "1000002",
            "question": "Q2",
            "hint": "multi\nline hint",
            "A": "two",
            "B": "three",
            "C": "one",
            "D": "NA",
            "answer": "B",
            "category": "count",
        },
        {
            **base,
            "index": "2000002",
            "question": "Q2",
            "hint": "multi\nline hint",
            "A": "three",
            "B": "one",
            "C": "two",
            "D": "NA",
            "answer": "A",
            "category": "count",
        },
    ]


def test_tsv_cells_read_like_pandas(tmp_path: Path) -> None:
    path = write_mmbench_tsv(tmp_path / "x.tsv", _synthetic_rows())
    table = read_tsv(path)
    rows = load_rows(table)
    assert [r.index for r in rows] == [1, 2, 3, 1000001, 1000002, 2000002]
    assert rows[0].question == 'Q1 "quoted"\twith tab' and rows[0].hint is None
    assert rows[1].hint == "multi\nline hint" and rows[1].options == {"A": "one", "B": "two", "C": "three"}
    import pandas

    frame = pandas.read_table(path)
    for number, (_, cells) in enumerate(table.rows):
        for column, value in cells.items():
            theirs = frame.iloc[number][column]
            assert (value is None and pandas.isna(theirs)) or str(theirs) == value


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text.replace("\tQ3\t", "\tQ3\textra\t"), r"x.tsv:5: 15 cells, the header has 14"),
        (lambda text: text.replace("1000002\t", "1000001\t"), r"x.tsv:\d+: index 1000001 appears twice"),
        (lambda text: text.replace("\n3\t", "\nthree\t"), r"x.tsv:\d+: index 'three' is not an integer"),
        (lambda text: text.replace("hint\t", "clue\t", 1), r"x.tsv:1: missing column\(s\) hint"),
    ],
)
def test_malformed_tsv_is_a_format_error(tmp_path: Path, edit: Callable[[str], str], message: str) -> None:
    path = write_mmbench_tsv(tmp_path / "x.tsv", _synthetic_rows())
    path.write_text(edit(path.read_text()))
    with pytest.raises(FormatError, match=message):
        load_rows(read_tsv(path))


def test_answer_outside_the_options_and_test_split_without_answers(tmp_path: Path) -> None:
    rows = _synthetic_rows()
    rows[2]["answer"] = "D"
    with pytest.raises(FormatError, match=r"x.tsv:\d+: row 3: answer 'D' is not one of its options"):
        load_rows(read_tsv(write_mmbench_tsv(tmp_path / "x.tsv", rows)))
    rows[2]["answer"] = ""
    path = write_mmbench_tsv(tmp_path / "x.tsv", rows)
    with pytest.raises(FormatError, match="scored by the MMBench server"):
        questions_of(load_rows(read_tsv(path)), path)


# --- CircularEval --------------------------------------------------------------------------------


def _questions() -> list[MMBenchQuestion]:
    two = {"A": "red", "B": "blue"}
    three = {"A": "one", "B": "two", "C": "three"}
    return [
        MMBenchQuestion(1, "A", two, "ocr", "fp", "dev"),
        MMBenchQuestion(1000001, "B", two, "ocr", "fp", "dev"),
        MMBenchQuestion(2, "C", three, "count", "fp", "dev"),
        MMBenchQuestion(1000002, "B", three, "count", "fp", "dev"),
        MMBenchQuestion(2000002, "A", three, "count", "fp", "dev"),
        MMBenchQuestion(3, "B", {"A": "x", "B": "y"}, "count", "cp", "dev"),
    ]


def test_a_question_counts_only_when_every_circular_copy_is_right() -> None:
    predictions = {"1": "A", "1000001": "B", "2": "C", "1000002": "A", "2000002": "A", "3": "B"}
    scores = score_mmbench(_questions(), predictions)
    assert scores.circular_accuracy == pytest.approx(200 / 3)  # question 2 fails on its first copy
    assert scores.vanilla_accuracy == 100.0
    assert scores.per_category == {"count": 50.0, "ocr": 100.0}
    assert scores.per_l2_category == {"cp": 100.0, "fp": 50.0}
    assert (scores.questions, scores.rows, scores.undecided) == (3, 6, 0)


def test_undecided_copies_count_wrong_and_are_reported() -> None:
    predictions = {"1": "A", "1000001": "I cannot tell", "2": "C", "1000002": "B", "2000002": "Z", "3": "x y z w"}
    scores = score_mmbench(_questions(), predictions)
    # no copy is wrong, but one copy of each question has no letter ("x y z w" names both options)
    assert scores.circular_accuracy == 0.0
    assert (scores.undecided, scores.undecided_answers) == (3, 3)
    assert scores.circular_accuracy_if_undecided_right == 100.0
    wrong_first = score_mmbench(_questions(), {**predictions, "1": "B"})
    assert (wrong_first.undecided, wrong_first.undecided_answers) == (2, 2)  # a wrong copy decides question 1


def test_unanswered_copies_are_an_error_unless_partial() -> None:
    predictions = {"1": "A", "1000001": "B", "2": "C", "1000002": "B", "3": "B"}
    with pytest.raises(ValueError, match="1 of 6 rows have no answer"):
        score_mmbench(_questions(), predictions)
    scores = score_mmbench(_questions(), predictions, allow_partial=True)
    assert (scores.questions, scores.skipped_questions, scores.missing) == (2, 1, ["2000002"])
    assert scores.circular_accuracy == 100.0
    assert scores.to_dict()["unanswered"] == 1


def test_copies_without_their_original_are_left_out() -> None:
    scores = score_mmbench(_questions()[1:], {"1000001": "B", "2": "C", "1000002": "B", "2000002": "A", "3": "B"})
    assert scores.questions == 2 and scores.circular_accuracy == 100.0


# --- items ---------------------------------------------------------------------------------------


def test_items_decode_images_once_to_stable_urls(tmp_path: Path) -> None:
    write_mmbench_tsv(tmp_path / "mmb" / "mmbench_dev_20230712.tsv", _synthetic_rows())
    bench = get_benchmark("mmbench")
    items = bench.load_items(str(tmp_path / "mmb"))
    assert [item.id for item in items] == ["1", "2", "3", "1000001", "1000002", "2000002"]
    assert items[0].image == items[3].image  # copies share the decoded image file
    assert storage.read_bytes(items[0].image)[:2] == b"\xff\xd8"
    assert Path(items[0].image).parent == tmp_path / "mmb" / "images" / "mmbench_dev_20230712"
    written = Path(items[0].image).stat().st_mtime_ns
    assert bench.load_items(str(tmp_path / "mmb")) == items
    assert Path(items[0].image).stat().st_mtime_ns == written  # present images are not written again
    assert items[1].prompt.startswith("multi\nline hint\nQ2\nA. one\nB. two\nC. three\nAnswer with")
    elsewhere = get_benchmark("mmbench", images=str(tmp_path / "cache")).load_items(str(tmp_path / "mmb"), limit=2)
    assert len(elsewhere) == 2 and Path(elsewhere[0].image).parent == tmp_path / "cache"
    scores = bench.score(items, {"1": "A", "1000001": "B", "2": "C", "1000002": "B", "2000002": "A", "3": "A"})
    assert scores["headline"] == pytest.approx(200 / 3) and scores["benchmark"] == "mmbench"


def test_bad_base64_image_is_a_format_error(tmp_path: Path) -> None:
    rows = _synthetic_rows()
    rows[0]["image"] = "bm90IGFuIGltYWdl"  # "not an image"
    write_mmbench_tsv(tmp_path / "mmb" / "mmbench_dev_20230712.tsv", rows)
    with pytest.raises(FormatError, match=r"mmbench_dev_20230712.tsv:2: row 1: 'image' is not a JPEG"):
        get_benchmark("mmbench").load_items(str(tmp_path / "mmb"))


def test_source_folder_needs_one_tsv(tmp_path: Path) -> None:
    (tmp_path / "mmb").mkdir()
    with pytest.raises(FormatError, match="found none"):
        get_benchmark("mmbench").load_items(str(tmp_path / "mmb"))


# --- reference: LLaVA-1.5-13B on the dev set ------------------------------------------------------


@pytest.fixture(scope="module")
def dev_tsv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not MMBENCH_UPLOAD.exists():
        pytest.skip(f"reference data not available: {MMBENCH_UPLOAD}")
    return write_mmbench_tsv(tmp_path_factory.mktemp("mmbench") / "mmbench_dev_20230712.tsv", mmbench_rows())


def test_reference_circular_accuracy_is_the_published_67_7(dev_tsv: Path) -> None:
    scores = score_mmbench_files(dev_tsv, str(MMBENCH_ANSWERS))
    assert round(scores.circular_accuracy, 1) == 67.7
    assert (scores.questions, scores.rows, scores.undecided) == (1176, 4377, 0)
    assert round(scores.circular_accuracy * 1176 / 100) == 796
    assert round(scores.vanilla_accuracy, 2) == 75.43


def test_prompts_equal_what_llava_recorded(dev_tsv: Path) -> None:
    recorded = {}
    for line in MMBENCH_ANSWERS.read_text().splitlines():
        record = json.loads(line)
        recorded[record["question_id"]] = record
    rows = load_rows(read_tsv(dev_tsv))
    for row in rows:
        assert mmbench_prompt(row) == recorded[row.index]["prompt"] + "\n" + INSTRUCTIONS["en"]
        assert list(row.options.values())[: len(recorded[row.index]["options"])] == recorded[row.index]["options"]


def test_submission_equals_llavas_upload(dev_tsv: Path, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    written = write_submission(dev_tsv, str(MMBENCH_ANSWERS), str(tmp_path / "upload.xlsx"))
    assert (written["rows"], written["unanswered"]) == (4377, 0)
    ours = load_workbook(tmp_path / "upload.xlsx").active
    theirs = load_workbook(MMBENCH_UPLOAD).active
    assert ours.title == theirs.title == "Sheet1"
    assert list(ours.iter_rows(values_only=True)) == list(theirs.iter_rows(values_only=True))


def test_commands_score_and_write_the_upload(dev_tsv: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        eval_group,
        ["score", "mmbench", "--questions", str(dev_tsv), "--answers", str(MMBENCH_ANSWERS)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert round(out["circular_accuracy"], 1) == 67.7 and "vanilla_accuracy" in out
    assert set(out["per_l2_category"]) <= {
        "coarse_perception",
        "finegrained_perception (instance-level)",
        "logic_reasoning",
    }
    lines = MMBENCH_ANSWERS.read_text().splitlines(keepends=True)
    (tmp_path / "part.jsonl").write_text("".join(lines[:-1]))
    upload = [
        "submission",
        "mmbench",
        "--questions",
        str(dev_tsv),
        "--answers",
        str(tmp_path / "part.jsonl"),
        "--out",
        str(tmp_path / "up.xlsx"),
    ]
    refused = CliRunner().invoke(eval_group, upload)
    assert refused.exit_code != 0 and "1 of 4377 rows" in refused.output
    written = json.loads(CliRunner().invoke(eval_group, [*upload, "--allow-partial"]).stdout)
    assert written["unanswered"] == 1 and written["upload_to"].startswith("https://")
    partial = CliRunner().invoke(
        eval_group,
        [
            "score",
            "mmbench",
            "--questions",
            str(dev_tsv),
            "--answers",
            str(tmp_path / "part.jsonl"),
            "--allow-partial",
            "--lang",
            "cn",
        ],
    )
    out = json.loads(partial.stdout)
    assert (out["benchmark"], out["skipped_questions"], out["unanswered"]) == ("mmbench_cn", 1, 1)


@pytest.mark.parametrize(("name", "lang"), [("mmbench", "en"), ("MMBench-CN", "cn")])
def test_registry_round_trip_on_a_tiny_source(tmp_path: Path, name: str, lang: str) -> None:
    if not MMBENCH_UPLOAD.exists():
        pytest.skip(f"reference data not available: {MMBENCH_UPLOAD}")
    bench = get_benchmark(name)
    items = bench.load_items(str(mmbench_source(tmp_path / "src", n=4, lang=lang)))
    originals = [item for item in items if int(item.id) < 1_000_000]
    assert len(originals) == 4 and len(items) > 4 and bench.max_new_tokens == 1024
    assert all(item.prompt.endswith("\n" + INSTRUCTIONS[lang]) for item in items)
    assert originals[0].prompt.startswith("The passage below describes an experiment.")
    assert all(storage.read_bytes(item.image) for item in items)


def test_runner_hook_writes_the_upload_and_a_test_split_is_submission_only(tmp_path: Path) -> None:
    if not MMBENCH_UPLOAD.exists():
        pytest.skip(f"reference data not available: {MMBENCH_UPLOAD}")
    from openpyxl import load_workbook

    from som.eval.items import with_meta

    bench = get_benchmark("mmbench")
    items = bench.load_items(str(mmbench_source(tmp_path / "src", n=2)))
    answers = {item.id: "A" for item in items}
    dev = bench.score(items, answers, output_url=str(tmp_path / "run"))
    upload = tmp_path / "run" / "mmbench_dev_20230712.xlsx"
    assert dev["headline"] is not None and dev["submission"]["file"] == str(upload)
    rows = list(load_workbook(upload).active.iter_rows(values_only=True))
    assert rows[0][6] == "prediction" and {row[6] for row in rows[1:]} == {"A"} and len(rows) == len(items) + 1
    test_split = [with_meta(item, answer=None) for item in items]
    only = bench.score(test_split, answers, output_url=str(tmp_path / "test-run"))
    assert only["submission_only"] and only["headline"] is None and only["answered"] == len(items)
    assert (tmp_path / "test-run" / "mmbench_dev_20230712.xlsx").exists()
    with pytest.raises(ValueError, match="scored by the MMBench server"):
        bench.score(test_split, answers)
