"""MM-Vet: grading prompt and grade parsing, and LLaVA-1.5-13B's official capability scores.

Published: LLaVA-1.5-13B MM-Vet 36.1 (LLaVA docs/MODEL_ZOO.md). The official grader's output in
../shared/reference/mmvet/results/ (one gpt-4 run) gives total 36.15 and, per capability,
rec 40.60, ocr 28.02, know 23.45, gen 24.38, spat 34.67, math 7.69; rounded like the official
CSVs (1 decimal) these equal both CSV files cell for cell. The CSV names capability integrations
in hash-seed order ("spat_rec_ocr_gen"), so the test compares them as sets of capabilities.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from som.eval.benchmarks import FormatError
from som.eval.benchmarks.mmvet import (
    MMVetSample,
    grade,
    grading_prompt,
    integration_name,
    llava_answers_to_results,
    load_samples,
    official_prompt,
    parse_grade,
    round_like_numpy,
    score_mmvet,
    score_mmvet_files,
)
from tests.eval.reference import reference

GRADES_13B = ("mmvet", "results", "llava-v1.5-13b_gpt-4-grade-1runs.json")
PUBLISHED_13B_TOTAL = 36.1  # LLaVA docs/MODEL_ZOO.md
EXPECTED_13B = {"total": 36.15, "rec": 40.60, "ocr": 28.02, "know": 23.45, "gen": 24.38, "spat": 34.67, "math": 7.69}


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("0.5", 0.5),
        ("1.0", 1.0),
        ("0", 0.0),
        ("0.7 because", 0.7),
        ("1.0\n", 1.0),
        ("1.5", None),  # out of range
        ("-0.1", None),
        ("Correct", None),
        (" 0.5", None),  # text before the first space is empty, as in the official parser
        ("0.5.", None),
        ("nan", None),
        ("", None),
    ],
)
def test_parse_grade(reply: str, expected: float | None) -> None:
    assert parse_grade(reply) == expected


# The module-level `prompt` of yuweihao/MM-Vet mm-vet_evaluator.py (acde843), copied verbatim.
OFFICIAL_PROMPT = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""


def official_query(prompt: str, line: dict[str, str], model_pred: str) -> str:
    """The evaluator's first request text for one sample (its `question` variable), verbatim logic."""
    return (
        prompt
        + "\n"
        + " | ".join(
            [
                line["question"],
                line["answer"].replace("<AND>", " <AND> ").replace("<OR>", " <OR> "),
                model_pred,
                "",
            ]
        )
    )


def test_packaged_prompt_is_the_official_one() -> None:
    assert official_prompt() == OFFICIAL_PROMPT
    assert OFFICIAL_PROMPT.startswith("Compare the ground truth and prediction from AI models, to give a correctness")
    assert OFFICIAL_PROMPT.endswith("their actual physical characteristics. | 1.0\n")


@pytest.mark.parametrize("sample_id", ["v1_0", "v1_1"])  # an <AND> and an <OR> ground truth
def test_request_for_a_real_sample_is_the_official_evaluators(sample_id: str) -> None:
    data = json.loads(reference("mmvet", "mm-vet.json").read_text())
    results = json.loads(reference("mmvet", "results", "llava-v1.5-13b.json").read_text())
    line, model_pred = data[sample_id], results[sample_id]
    expected = official_query(OFFICIAL_PROMPT, line, model_pred)
    assert grading_prompt(line["question"], line["answer"], model_pred) == expected
    retry = expected + "\nPredict the correctness of the answer (digit): "
    assert grading_prompt(line["question"], line["answer"], model_pred, retry=True) == retry
    if sample_id == "v1_0":  # spelled out once: blank line after the table, trailing " | "
        assert expected.endswith(" | 1.0\n\nWhat is x in the equation? | -1 <AND> -5 | " + model_pred + " | ")
    else:
        assert " | 1.25 <OR> =1.25 <OR> 5/4 | " in expected


class FakeJudge:
    """Replays canned replies and records (retry prompt?, temperature) per request."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[bool, float]] = []

    def __call__(self, prompt: str, temperature: float) -> str:
        self.calls.append(("Predict the correctness" in prompt, temperature))
        return self.replies.pop(0)


def test_grade_parses_first_reply() -> None:
    judge = FakeJudge(["0.8"])
    result = grade("Q", "A", "P", judge)
    assert (result.score, result.requests, result.parsed) == (0.8, 1, True)
    assert judge.calls == [(False, 0.0)]


def test_grade_retries_with_rising_temperature() -> None:
    judge = FakeJudge(["Sure", "The", "0.3"])
    result = grade("Q", "A", "P", judge)
    assert (result.score, result.requests) == (0.3, 3)
    assert judge.calls == [(False, 0.0), (True, 0.0), (True, 0.5)]


def test_grade_gives_zero_when_the_judge_never_answers_with_a_number() -> None:
    judge = FakeJudge(["?"] * 10)
    result = grade("Q", "A", "P", judge)
    assert (result.score, result.parsed, result.requests) == (0.0, False, 5)
    assert judge.calls == [(False, 0.0), (True, 0.0), (True, 0.5), (True, 1.0), (True, 1.5)]


def _sample(sample_id: str, *caps: str) -> MMVetSample:
    return MMVetSample(sample_id, "q", "a", frozenset(caps), f"{sample_id}.png")


def test_scores_average_per_capability_and_over_runs() -> None:
    samples = {
        "v1_0": _sample("v1_0", "ocr", "math"),
        "v1_1": _sample("v1_1", "ocr"),
        "v1_2": _sample("v1_2", "rec", "know", "gen"),
    }
    grades = {"v1_0": [1.0, 0.0], "v1_1": [0.5, 0.5], "v1_2": [0.0, 1.0]}
    scores = score_mmvet(samples, grades)
    assert scores.counts == {"ocr": 2, "rec": 1, "know": 1, "gen": 1, "math": 1}
    assert scores.capabilities["ocr"] == pytest.approx(50.0)  # runs: 75, 25
    assert scores.capabilities["math"] == pytest.approx(50.0)
    assert scores.run_totals == pytest.approx([50.0, 50.0])
    assert scores.total == pytest.approx(50.0) and scores.std == 0.0
    assert scores.integrations["ocr_math"] == pytest.approx(50.0)
    assert set(scores.integrations) == {"ocr_math", "ocr", "rec_know_gen"}
    first_run = score_mmvet(samples, grades, runs=1)
    assert first_run.total == pytest.approx(50.0) and first_run.capabilities["math"] == 100.0


def test_population_std_of_run_totals() -> None:
    samples = {"v1_0": _sample("v1_0", "rec")}
    scores = score_mmvet(samples, {"v1_0": [0.2, 0.6]})
    assert scores.run_totals == pytest.approx([20.0, 60.0])
    assert scores.std == pytest.approx(20.0)


def test_missing_and_stray_grades_are_errors() -> None:
    samples = {"v1_0": _sample("v1_0", "rec"), "v1_1": _sample("v1_1", "ocr")}
    with pytest.raises(FormatError, match="1 samples have no grade"):
        score_mmvet(samples, {"v1_0": [1.0]})
    with pytest.raises(FormatError, match="not in mm-vet.json"):
        score_mmvet(samples, {"v1_0": [1.0], "v1_1": [1.0], "v9_9": [0.0]})
    with pytest.raises(FormatError, match="outside"):
        score_mmvet(samples, {"v1_0": [1.0], "v1_1": [2.0]})


def test_malformed_mmvet_json_names_the_sample(tmp_path: Path) -> None:
    path = tmp_path / "mm-vet.json"
    path.write_text(json.dumps({"v1_0": {"question": "q", "answer": "a"}}))
    with pytest.raises(FormatError, match=r"mm-vet.json: sample v1_0: 'capability'"):
        load_samples(path)


def test_integration_names_are_canonical() -> None:
    assert integration_name({"gen", "rec", "know"}) == integration_name(["know", "gen", "rec"]) == "rec_know_gen"


def test_round_like_numpy() -> None:
    assert round_like_numpy(24.375) == 24.4
    assert round_like_numpy(40.60000000000004) == 40.6
    assert round_like_numpy(0.25) == 0.2  # half to even, like np.round


# --- the published LLaVA-1.5-13B numbers -----------------------------------------------------


def _csv_row(path: Path) -> dict[str, str]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    return dict(zip(rows[0][1:], rows[1][1:], strict=False))


def test_llava_13b_reproduces_published_and_official_csvs() -> None:
    scores = score_mmvet_files(reference("mmvet", "mm-vet.json"), reference(*GRADES_13B))
    assert round(scores.total, 2) == EXPECTED_13B["total"]
    for cap in ("rec", "ocr", "know", "gen", "spat", "math"):
        assert round(scores.capabilities[cap], 2) == EXPECTED_13B[cap], cap
    assert round_like_numpy(scores.total) == PUBLISHED_13B_TOTAL
    assert scores.samples == 218 and scores.judge_models == ["gpt-4"]

    official = _csv_row(reference("mmvet", "results", "llava-v1.5-13b_gpt-4-cap-score-1runs.csv"))
    rounded = scores.rounded()
    assert list(official)[:6] == list(scores.capabilities)  # same column order (by sample count)
    for cap, value in scores.capabilities.items():
        assert round_like_numpy(value) == float(official[cap]), cap
    assert rounded["total"] == float(official["total"]) and rounded["std"] == float(official["std"])
    assert str(rounded["runs"]) == official["runs"]

    official_int = _csv_row(reference("mmvet", "results", "llava-v1.5-13b_gpt-4-cap-int-score-1runs.csv"))
    by_set = {
        frozenset(name.split("_")): float(v) for name, v in official_int.items() if name not in ("total", "std", "runs")
    }
    ours = {frozenset(name.split("_")): round_like_numpy(v) for name, v in scores.integrations.items()}
    assert ours == by_set


def test_llava_answers_convert_to_the_graders_input() -> None:
    converted = llava_answers_to_results(reference("mmvet", "answers_llava-v1.5-13b.jsonl"))
    assert converted == json.loads(reference("mmvet", "results", "llava-v1.5-13b.json").read_text())


def test_bard_subset_scores_only_its_samples() -> None:
    subset = json.loads(reference("mmvet", "bard_set.json").read_text())
    scores = score_mmvet_files(
        reference("mmvet", "mm-vet.json"), reference(*GRADES_13B), subset=reference("mmvet", "bard_set.json")
    )
    assert scores.samples == len(subset) < 218
