"""EvalAI's answer processor and the three VQA accuracies, each rule pinned by a constructed case.

Expected values were taken from the official codes (LLaVA's m4c_evaluator.py, GT-Vision-Lab's
vqaEval.py at a013f00, VizWiz's VQAEval) run on the same inputs.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from som.eval.benchmarks.vqa_answers import (
    CONTRACTIONS,
    EVALAI_COMMA,
    NUMBER_WORDS,
    VQA_COMMA,
    digits_and_articles,
    evalai_answer,
    m4c_accuracy,
    m4c_answer_scores,
    punctuation,
    round_half_away,
    summarize,
    upload_bytes,
    vizwiz_accuracy,
    vqa_accuracy,
)


@pytest.mark.parametrize(
    ("raw", "processed"),
    [
        ("Yes", "yes"),  # lower-cased first
        ("Two dogs.", "2 dogs"),  # number word -> digit, final period dropped
        ("none", "0"),
        ("the cat", "cat"),  # articles dropped
        ("A dog", "dog"),
        ("THE END", "end"),
        ("a-b", "b"),  # "-" between letters becomes a space, then "a" is an article
        ("e-mail", "e mail"),
        ("black/white", "black white"),
        ("a -b", "b"),  # a mark touching a space anywhere is deleted, not spaced
        ("(x)", "x"),
        ("dont", "don't"),  # contractions restored
        ("Im", "im"),  # capitalised table keys never match after lower-casing
        ("1,000", "1000"),  # commas dropped before punctuation handling
        ("Yes, it is.", "yes it is"),
        ("dog's", "dog 's"),  # "'s" split off
        ("it's", "it 's"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("$5.00", "$5.00"),
        ("a.b", "ab"),  # other periods are deleted, not spaced
        ("x:y", "x:y"),  # ":" is no punctuation mark here
        ("hello!", "hello"),
        ("what?", "what"),
        ("\tfoo\nbar ", "foo bar"),  # newlines and tabs become spaces
    ],
)
def test_evalai_answer(raw: str, processed: str) -> None:
    assert evalai_answer(raw) == processed


def test_only_the_first_32_periods_go() -> None:
    # the official codes pass re.UNICODE (32) as re.sub's count
    assert evalai_answer("a." * 40) == "a" * 33 + ".a" * 7 + "."


def test_comma_rules_differ_between_evalai_and_vqaeval() -> None:
    # EvalAI's pattern takes several commas between digits as "digits joined": every mark is deleted
    assert punctuation("1,,2 (x)", EVALAI_COMMA) == "12 x"
    # vqaEval's needs exactly one, so untouched marks become spaces
    assert punctuation("1,,2 (x)", VQA_COMMA) == "1  2 x "
    assert punctuation("1,2 (x)", VQA_COMMA) == "12 x"


def test_tables_hold_the_published_entries() -> None:
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["somebody'd"] == "somebodyd"  # the table's own oddity, kept
    assert CONTRACTIONS["yall'd've"] == "y'all'd've"
    assert NUMBER_WORDS == {
        "none": "0",
        "zero": "0",
        "one": "1",
        "two": "2",
        "three": "3",
        "four": "4",
        "five": "5",
        "six": "6",
        "seven": "7",
        "eight": "8",
        "nine": "9",
        "ten": "10",
    }
    assert digits_and_articles("An  Ten wont") == "10 won't"


def test_m4c_leaves_one_answer_out_by_position() -> None:
    humans = ["sign 1"] * 7 + ["sign"] * 3
    assert m4c_accuracy("Sign 1.", humans) == 1.0
    assert m4c_accuracy("sign", humans) == pytest.approx(0.9)  # 3 x 2/3 and 7 x 1
    assert m4c_accuracy("a sign", humans) == pytest.approx(0.9)
    assert m4c_accuracy("other", humans) == 0.0
    assert m4c_answer_scores(["a"] * 8 + ["b"] * 2)["b"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="10 human answers"):
        m4c_accuracy("x", ["x"] * 9)


def _records(*answers: str, ids: bool = True) -> list[dict]:
    return [
        {"answer": a, "answer_confidence": "yes", **({"answer_id": i + 1} if ids else {})}
        for i, a in enumerate(answers)
    ]


def test_vqa_accuracy_processes_nothing_when_humans_agree() -> None:
    unanimous = _records(*["yes"] * 10)
    assert vqa_accuracy("yes", unanimous) == 1.0
    assert vqa_accuracy(" yes\n", unanimous) == 1.0  # only whitespace is cleaned
    assert vqa_accuracy("Yes", unanimous) == 0.0  # no lower-casing without disagreement


def test_vqa_accuracy_normalises_both_sides_when_humans_disagree() -> None:
    mixed = _records(*["yes"] * 3, *["no"] * 7)
    assert vqa_accuracy("Yes", mixed) == pytest.approx(0.9)
    assert vqa_accuracy("two", _records(*["two"] * 5, *["2"] * 5)) == 1.0


def test_vqa_accuracy_leaves_out_every_equal_record() -> None:
    # without answer_id, equal records are dropped together (vqaEval compares the dicts)
    assert vqa_accuracy("red", _records(*["red"] * 5, *["blue"] * 5, ids=False)) == pytest.approx(0.5)
    assert vqa_accuracy("red", _records(*["red"] * 5, *["blue"] * 5)) == 1.0


def test_vizwiz_accuracy_processes_only_the_model_answer() -> None:
    assert vizwiz_accuracy("Red.", ["red"] * 5 + ["blue"] * 5) == 1.0  # leave-one-out by position
    assert vizwiz_accuracy("red", ["Red"] * 10) == 0.0
    assert vizwiz_accuracy("blue", ["red"] * 8 + ["blue"] * 2) == pytest.approx(0.6)


def test_rounding_follows_each_evaluator() -> None:
    assert round_half_away(12.125) == 12.13 and round(12.125, 2) == 12.12
    assert round_half_away(2.675) == 2.67  # 2.675 is just below the tie in binary
    rows = [(0.01, "other", "what")] + [(0.0, "other", "what")] * 7  # exactly 0.125 percent
    assert summarize(rows, python2_rounding=True).overall == 0.13
    assert summarize(rows, python2_rounding=False).overall == 0.12
    scores = summarize(
        [(1.0, "yes/no", "is"), (0.0, "number", "how many"), (0.5, "number", None)], python2_rounding=True
    )
    assert scores.overall == 50.0 and scores.per_answer_type == {"yes/no": 100.0, "number": 25.0}
    assert scores.per_question_type == {"is": 100.0, "how many": 0.0}


def test_upload_bytes_is_json_dump_default_formatting() -> None:
    assert upload_bytes([{"image": "x.jpg", "answer": "caf\u00e9"}]) == b'[{"image": "x.jpg", "answer": "caf\\u00e9"}]'


def test_importing_the_scorers_stays_light() -> None:
    code = (
        "import sys, som.eval.benchmarks.textvqa, som.eval.benchmarks.vqav2, som.eval.benchmarks.vizwiz\n"
        "heavy = [m for m in ('torch', 'transformers', 'prefect', 'numpy', 'PIL', 'fsspec') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
