"""POPE scoring: LLaVA's normalisation rules and the published LLaVA-1.5-13B numbers.

Published: LLaVA-1.5-13B POPE 85.9 (LLaVA docs/MODEL_ZOO.md, the mean F1 over the three COCO
splits, in percent). The third-party answers in ../shared/reference/pope/llava_eval reproduce it
with the label files at AoiDragon/POPE e3e3926 (the commit LLaVA pins): per-split F1 87.14
(random), 86.25 (popular), 84.46 (adversarial), mean 85.95.

Disagreement between copies: AoiDragon/POPE HEAD (08d957b) regenerated the random split (90 more
questions, interleaved), so LLaVA's position-based pairing with HEAD labels (`pairing=
"positional"`, checked against eval_pope.py's printout) scores random at F1 45.65 (mean 72.12),
with 2893 of its 2910 pairs asking different questions. somflow's default pairing by (image,
question) gets 85.95 with either commit; with the pinned labels both pairings give 85.95.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
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
        PopeQuestion("5", "c.jpg", "Is there a cow in the image?", "adversarial", 5),
    ]
    labels = [
        PopeLabels(
            "random",
            Path("coco_pope_random.json"),
            {
                question_key("a.jpg", "Is there a cat in the image?"): False,
                question_key("a.jpg", "Is there a dog in the image?"): True,
            },
        ),
        PopeLabels(
            "popular",
            Path("coco_pope_popular.json"),
            {
                question_key("b.jpg", "Is there a car in the image?"): True,
                question_key("b.jpg", "Is there a bus in the image?"): False,
                question_key("b.jpg", "Is there a van in the image?"): False,
            },
        ),
        PopeLabels(
            "adversarial",
            Path("coco_pope_adversarial.json"),
            {
                question_key("c.jpg", "Is there a cow in the image?"): True,
            },
        ),
    ]
    return questions, labels


def test_score_pope_pairs_by_question_not_position() -> None:
    questions, labels = _tiny_case()
    answers = {"1": "Yes", "2": "No, there is no cat.", "3": "Yes", "4": "Yes", "5": "Yes"}
    scores = score_pope(questions, answers, labels)
    assert list(scores.splits) == ["random", "popular", "adversarial"]
    assert scores.splits["random"].f1 == 1.0
    assert scores.splits["popular"].fp == 1
    assert scores.mean_f1 == pytest.approx((1.0 + 2 / 3 + 1.0) / 3)
    assert scores.unmatched_labels == {"random": 0, "popular": 1, "adversarial": 0}
    assert scores.to_dict()["pairing"] == "question"


def test_missing_label_split_fails_unless_partial_is_allowed() -> None:
    questions, labels = _tiny_case()
    answers = {"1": "Yes", "2": "No", "3": "Yes", "4": "No", "5": "Yes"}
    without_adversarial = labels[:2]
    with pytest.raises(FormatError, match=r"no label file for split\(s\) adversarial .*pass allow_partial"):
        score_pope(questions, answers, without_adversarial)
    scores = score_pope(questions, answers, without_adversarial, allow_partial=True)
    assert scores.missing_splits == ["adversarial"]
    assert list(scores.splits) == ["random", "popular"]
    # A label file that has every split the questions use still needs all three POPE splits.
    only_random = [q for q in questions if q.category == "random"]
    with pytest.raises(FormatError, match=r"no label file for split\(s\) popular, adversarial"):
        score_pope(only_random, {"1": "Yes", "2": "No"}, labels[:1])


def test_positional_pairing_zips_answer_order_with_label_lines() -> None:
    questions, labels = _tiny_case()
    # Label lines in file order: "cat" (no) before "dog" (yes); the question file asks dog first.
    labels[0] = replace(
        labels[0],
        order=[
            (question_key("a.jpg", "Is there a cat in the image?"), False),
            (question_key("a.jpg", "Is there a dog in the image?"), True),
            (question_key("a.jpg", "Is there a cup in the image?"), False),
        ],
    )
    labels[1] = replace(labels[1], order=list(labels[1].labels.items()))
    labels[2] = replace(labels[2], order=list(labels[2].labels.items()))
    answers = {"2": "No", "1": "Yes", "3": "Yes", "4": "No", "5": "No"}  # answer-file order counts
    scores = score_pope(questions, answers, labels, pairing="positional")
    assert scores.pairing == "positional"
    assert (scores.splits["random"].tp, scores.splits["random"].tn) == (1, 1)
    assert scores.unmatched_labels["random"] == 1 and scores.mismatched_pairs["random"] == 0
    by_question = score_pope(questions, answers, labels)
    assert by_question.splits["random"].f1 == scores.splits["random"].f1
    # Swapping the answers' order swaps the pairs: positional pairing no longer matches questions.
    swapped = score_pope(
        questions, {"1": "Yes", "2": "No", "3": "Yes", "4": "No", "5": "No"}, labels, pairing="positional"
    )
    assert swapped.mismatched_pairs["random"] == 2
    assert (swapped.splits["random"].fp, swapped.splits["random"].fn) == (1, 1)


def test_unanswered_questions_fail_unless_partial_is_allowed() -> None:
    questions, labels = _tiny_case()
    answers = {"1": "Yes", "2": "No", "3": "Yes", "5": "Yes"}
    with pytest.raises(FormatError, match="1 of 2 popular questions have no answer"):
        score_pope(questions, answers, labels)
    scores = score_pope(questions, answers, labels, allow_partial=True)
    assert scores.splits["popular"].n == 1
    assert scores.unanswered == {"random": 0, "popular": 1, "adversarial": 0}


def test_question_missing_from_label_file_is_reported() -> None:
    questions, labels = _tiny_case()
    questions.append(PopeQuestion("6", "c.jpg", "Is there a pig in the image?", "random", 6))
    with pytest.raises(FormatError, match=r"questions:6: question_id 6 .* is not in coco_pope_random.json"):
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


@pytest.mark.parametrize(
    ("labels", "pairing"),
    [(PINNED, "question"), (PINNED, "positional"), (HEAD, "question")],
    ids=["pinned-e3e3926-by-question", "pinned-e3e3926-positional", "head-08d957b-by-question"],
)
def test_llava_13b_reproduces_published_pope(labels: tuple[str, str], pairing: str) -> None:
    scores = score_pope_files(reference(*QUESTIONS), reference(*ANSWERS_13B), reference(*labels), pairing=pairing)
    for split, f1 in EXPECTED_13B_F1.items():
        s = scores.splits[split]
        assert round(s.f1 * 100, 2) == f1
        assert (s.tp, s.fp, s.tn, s.fn) == EXPECTED_13B_COUNTS[split]
    assert round(scores.mean_f1 * 100, 2) == 85.95
    assert round(scores.mean_f1 * 100, 1) == PUBLISHED_13B_MEAN_F1
    assert scores.to_dict()["pairing"] == pairing
    expected_unmatched = 90 if labels == HEAD else 0
    assert scores.unmatched_labels == {"random": expected_unmatched, "popular": 0, "adversarial": 0}
    assert scores.mismatched_pairs == {"random": 0, "popular": 0, "adversarial": 0}


def test_positional_pairing_with_head_labels_breaks_random_split() -> None:
    """What LLaVA's eval_pope.py prints for HEAD's label files (documented disagreement).

    eval_pope.py, random: TP 609 FP 604 TN 851 FN 846, F1 0.45652173913043476, yes ratio
    0.4168384879725086 (all 2910 answers); popular and adversarial as with the pinned labels.
    """
    scores = score_pope_files(reference(*QUESTIONS), reference(*ANSWERS_13B), reference(*HEAD), pairing="positional")
    random = scores.splits["random"]
    assert (random.tp, random.fp, random.tn, random.fn) == (609, 604, 851, 846)
    assert round(random.f1, 4) == 0.4565
    assert random.yes_ratio == pytest.approx(1213 / 2910)
    assert round(scores.splits["popular"].f1 * 100, 2) == EXPECTED_13B_F1["popular"]
    assert round(scores.splits["adversarial"].f1 * 100, 2) == EXPECTED_13B_F1["adversarial"]
    assert round(scores.mean_f1 * 100, 2) == 72.12
    # The 90 regenerated questions shift 2893 of the 2910 pairs; the last 90 label lines go unused.
    assert scores.mismatched_pairs == {"random": 2893, "popular": 0, "adversarial": 0}
    assert scores.unmatched_labels == {"random": 90, "popular": 0, "adversarial": 0}
    assert scores.unpaired_answers == {"random": 0, "popular": 0, "adversarial": 0}


def test_missing_label_file_on_reference_data(tmp_path: Path) -> None:
    for split in ("random", "popular"):
        shutil.copy(reference(*PINNED, f"coco_pope_{split}.json"), tmp_path)
    with pytest.raises(FormatError, match=r"no label file for split\(s\) adversarial"):
        score_pope_files(reference(*QUESTIONS), reference(*ANSWERS_13B), tmp_path)
    scores = score_pope_files(reference(*QUESTIONS), reference(*ANSWERS_13B), tmp_path, allow_partial=True)
    assert scores.missing_splits == ["adversarial"]
    assert round(scores.mean_f1 * 100, 2) == round((87.14 + 86.25) / 2, 2)


@pytest.mark.parametrize("pairing", ["question", "positional"])
def test_partial_7b_run_matches_its_official_results_file(pairing: str) -> None:
    """The third-party 7B run stopped early; LLaVA's script scored what it had (popular: none)."""
    scores = score_pope_files(
        reference(*QUESTIONS),
        reference("pope", "llava_eval", "answers_llava-v1.5-7b_PARTIAL.jsonl"),
        reference(*PINNED),
        allow_partial=True,
        pairing=pairing,
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


def test_runner_source_without_a_split_is_an_error_unless_allowed(tmp_path: Path) -> None:
    """`som eval run` must not print a mean F1 over two splits as if it were POPE's."""
    from som.eval.benchmarks.pope import PopeBenchmark
    from tests.helpers.eval_sources import pope_source, reference_available

    if not reference_available():
        pytest.skip("../shared/reference is not there")
    source = pope_source(tmp_path / "pope", per_split=2)
    (source / "coco" / "coco_pope_adversarial.json").unlink()
    with pytest.raises(FormatError, match="no label file for split.*adversarial.*allow_missing_splits"):
        PopeBenchmark().load_items(str(source))
    items = PopeBenchmark(allow_missing_splits=True).load_items(str(source))
    assert {item.meta["split"] for item in items} == {"random", "popular"}
