"""POPE scoring: LLaVA's normalisation rules and the published LLaVA-1.5-13B numbers.

Published: LLaVA-1.5-13B POPE 85.9 (LLaVA docs/MODEL_ZOO.md, the mean F1 over the three COCO
splits, in percent). The third-party answers in ../shared/reference/pope/llava_eval reproduce it
with the label files at AoiDragon/POPE e3e3926 (the commit LLaVA pins): per-split F1 87.14
(random), 86.25 (popular), 84.46 (adversarial), mean 85.95.

Disagreement between copies: AoiDragon/POPE HEAD (08d957b) regenerated the random split (90 more
questions, interleaved), so LLaVA's position-based pairing with HEAD labels scores random at
F1 45.65 (mean 72.12). somflow pairs by (image, question) and gets 85.95 with either commit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from som.eval.benchmarks import FormatError
from som.eval.benchmarks.pope import (
    PopeLabels,
    PopeQuestion,
    load_answers,
    load_labels,
    normalize_answer,
    question_key,
    score_pope,
    score_pope_files,
    split_score,
)
from tests.eval.reference import reference

PINNED = ("pope", "AoiDragon_POPE_e3e3926_llava_pinned")
HEAD = ("pope", "AoiDragon_POPE_HEAD")
QUESTIONS = ("pope", "llava_eval", "llava_pope_test.jsonl")
ANSWERS_13B = ("pope", "llava_eval", "answers_llava-v1.5-13b.jsonl")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("No, there is not.", "no"),
        ("Yes", "yes"),
        ("No", "no"),
        ("no", "no"),
        ("Yes, there is a dog in the image.", "yes"),
        ("There is no dog.", "no"),
        ("There is not a dog", "no"),
        ("Yes. There is no cat.", "yes"),  # only the first sentence counts
        ("I see no, cat", "no"),  # commas are removed before splitting
        ("Nope", "yes"),  # only the exact words No / no / not
        ("NO", "yes"),  # case-sensitive, as in eval_pope.py
        ("None", "yes"),
        ("No\nthere is none", "yes"),  # split on single spaces: "No\nthere" is one word
        ("", "yes"),
        ("cannot tell", "yes"),
    ],
)
def test_normalize_answer_follows_llava(answer: str, expected: str) -> None:
    assert normalize_answer(answer) == expected


def test_question_key_ignores_suffix_case_and_the_imange_typo() -> None:
    llava = question_key(
        "val2014/COCO_val2014_000000210789.jpg",
        "Is there an umbrella in the imange?\nAnswer the question using a single word or phrase.",
    )
    assert llava == question_key("COCO_val2014_000000210789.jpg", "is there an  umbrella in the image?")


def test_split_score_on_a_hand_built_case() -> None:
    predictions = [True, True, False, False, True]
    labels = [True, False, False, True, True]
    score = split_score("random", predictions, labels)
    assert (score.tp, score.fp, score.tn, score.fn) == (2, 1, 1, 1)
    assert score.accuracy == pytest.approx(3 / 5)
    assert score.precision == pytest.approx(2 / 3)
    assert score.recall == pytest.approx(2 / 3)
    assert score.f1 == pytest.approx(2 / 3)
    assert score.yes_ratio == pytest.approx(3 / 5)


def test_split_score_without_yes_answers_is_zero_not_a_crash() -> None:
    score = split_score("random", [False, False], [True, False])
    assert score.precision == 0.0 and score.f1 == 0.0 and score.accuracy == 0.5


def _tiny_case() -> tuple[list[PopeQuestion], list[PopeLabels]]:
    questions = [
        PopeQuestion("1", "a.jpg", "Is there a dog in the image?\nAnswer briefly.", "random", 1),
        PopeQuestion("2", "a.jpg", "Is there a cat in the image?\nAnswer briefly.", "random", 2),
        PopeQuestion("3", "b.jpg", "Is there a car in the image?", "popular", 3),
        PopeQuestion("4", "b.jpg", "Is there a bus in the image?", "popular", 4),
    ]
    labels = [
        PopeLabels("random", Path("coco_pope_random.json"), {
            question_key("a.jpg", "Is there a cat in the image?"): False,
            question_key("a.jpg", "Is there a dog in the image?"): True,
        }),
        PopeLabels("popular", Path("coco_pope_popular.json"), {
            question_key("b.jpg", "Is there a car in the image?"): True,
            question_key("b.jpg", "Is there a bus in the image?"): False,
            question_key("b.jpg", "Is there a van in the image?"): False,
        }),
    ]
    return questions, labels


def test_score_pope_pairs_by_question_not_position() -> None:
    questions, labels = _tiny_case()
    answers = {"1": "Yes", "2": "No, there is no cat.", "3": "Yes", "4": "Yes"}
    scores = score_pope(questions, answers, labels)
    assert list(scores.splits) == ["random", "popular"]
    assert scores.splits["random"].f1 == 1.0
    assert scores.splits["popular"].fp == 1
    assert scores.mean_f1 == pytest.approx((1.0 + 2 / 3) / 2)
    assert scores.unmatched_labels == {"random": 0, "popular": 1}


def test_unanswered_questions_fail_unless_partial_is_allowed() -> None:
    questions, labels = _tiny_case()
    answers = {"1": "Yes", "2": "No", "3": "Yes"}
    with pytest.raises(FormatError, match="1 of 2 popular questions have no answer"):
        score_pope(questions, answers, labels)
    scores = score_pope(questions, answers, labels, allow_partial=True)
    assert scores.splits["popular"].n == 1
    assert scores.unanswered == {"random": 0, "popular": 1}


def test_question_missing_from_label_file_is_reported() -> None:
    questions, labels = _tiny_case()
    questions.append(PopeQuestion("5", "c.jpg", "Is there a cow in the image?", "random", 5))
    with pytest.raises(FormatError, match=r"questions:5: question_id 5 .* is not in coco_pope_random.json"):
        score_pope(questions, {q.question_id: "Yes" for q in questions}, labels)


def test_malformed_answers_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": 1, "text": "Yes"}\n{"question_id": 2, "text": "No"\n')
    with pytest.raises(FormatError, match=r"answers.jsonl:2: not valid JSON"):
        load_answers(path)
    path.write_text('{"question_id": 1, "text": "Yes"}\n{"question_id": 1, "text": "No"}\n')
    with pytest.raises(FormatError, match=r"answers.jsonl:2: second answer to question_id 1"):
        load_answers(path)
    path.write_text('{"question_id": 1}\n')
    with pytest.raises(FormatError, match=r"answers.jsonl:1: missing field 'text'"):
        load_answers(path)


def test_bad_label_value_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "coco_pope_random.json"
    path.write_text('{"image": "a.jpg", "text": "Is there a dog?", "label": "maybe"}\n')
    with pytest.raises(FormatError, match=r"coco_pope_random.json:1: label must be 'yes' or 'no'"):
        load_labels(path)


# --- the published LLaVA-1.5-13B numbers -----------------------------------------------------

PUBLISHED_13B_MEAN_F1 = 85.9  # LLaVA docs/MODEL_ZOO.md, LLaVA-1.5 13B, POPE column
EXPECTED_13B_F1 = {"random": 87.14, "popular": 86.25, "adversarial": 84.46}
EXPECTED_13B_COUNTS = {  # TP, FP, TN, FN
    "random": (1182, 31, 1379, 318),
    "popular": (1182, 59, 1441, 318),
    "adversarial": (1182, 117, 1383, 318),
}


@pytest.mark.parametrize("labels", [PINNED, HEAD], ids=["pinned-e3e3926", "head-08d957b"])
def test_llava_13b_reproduces_published_pope(labels: tuple[str, str]) -> None:
    scores = score_pope_files(reference(*QUESTIONS), reference(*ANSWERS_13B), reference(*labels))
    for split, f1 in EXPECTED_13B_F1.items():
        s = scores.splits[split]
        assert round(s.f1 * 100, 2) == f1
        assert (s.tp, s.fp, s.tn, s.fn) == EXPECTED_13B_COUNTS[split]
    assert round(scores.mean_f1 * 100, 2) == 85.95
    assert round(scores.mean_f1 * 100, 1) == PUBLISHED_13B_MEAN_F1
    expected_unmatched = 90 if labels == HEAD else 0
    assert scores.unmatched_labels == {"random": expected_unmatched, "popular": 0, "adversarial": 0}


def test_positional_pairing_with_head_labels_breaks_random_split() -> None:
    """What LLaVA's eval_pope.py computes when given HEAD's label files (documented disagreement)."""
    questions = [json.loads(line) for line in reference(*QUESTIONS).open()]
    answers = [json.loads(line) for line in reference(*ANSWERS_13B).open()]
    category = {q["question_id"]: q["category"] for q in questions}
    f1 = {}
    for split in EXPECTED_13B_F1:
        labels = [json.loads(line)["label"] == "yes" for line in reference(*HEAD, f"coco_pope_{split}.json").open()]
        preds = [normalize_answer(a["text"]) == "yes" for a in answers if category[a["question_id"]] == split]
        n = min(len(labels), len(preds))  # eval_pope.py zips
        f1[split] = split_score(split, preds[:n], labels[:n]).f1 * 100
    assert round(f1["random"], 2) == 45.65
    assert round(f1["popular"], 2) == EXPECTED_13B_F1["popular"]
    assert round(f1["adversarial"], 2) == EXPECTED_13B_F1["adversarial"]
    assert round(sum(f1.values()) / 3, 2) == 72.12


def test_partial_7b_run_matches_its_official_results_file() -> None:
    """The third-party 7B run stopped early; LLaVA's script scored what it had (popular: none)."""
    scores = score_pope_files(
        reference(*QUESTIONS),
        reference("pope", "llava_eval", "answers_llava-v1.5-7b_PARTIAL.jsonl"),
        reference(*PINNED),
        allow_partial=True,
    )
    text = reference("pope", "llava_eval", "POPE_results_llava-v1.5-7b_PARTIAL.txt").read_text()
    blocks = re.findall(
        r"TP\tFP\tTN\tFN\t\n(\d+)\t(\d+)\t(\d+)\t(\d+)\nAccuracy: (\S+)\nPrecision: (\S+)\nRecall: (\S+)\n"
        r"F1 score: (\S+)\nYes ratio: (\S+)\n.*\nCategory: (\w+), # samples: (\d+)",
        text,
    )
    assert [b[9] for b in blocks] == ["adversarial", "random"]
    for *counts, acc, precision, recall, f1, yes_ratio, split, n in blocks:
        s = scores.splits[split]
        assert (s.tp, s.fp, s.tn, s.fn) == tuple(int(c) for c in counts)
        assert s.n == int(n)
        assert (s.accuracy, s.precision, s.recall, s.f1, s.yes_ratio) == pytest.approx(
            (float(acc), float(precision), float(recall), float(f1), float(yes_ratio)), abs=1e-12
        )
    assert "popular" not in scores.splits
    assert scores.unanswered["popular"] == 3000
