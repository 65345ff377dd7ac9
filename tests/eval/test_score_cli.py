"""`som eval score ...` on the reference files: JSON on stdout, clear errors, light imports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from som.eval.cli import eval_group
from tests.eval.reference import reference


def _invoke(*args: str) -> dict:
    result = CliRunner().invoke(eval_group, ["score", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_pope_command() -> None:
    out = _invoke(
        "pope",
        "--questions",
        str(reference("pope", "llava_eval", "llava_pope_test.jsonl")),
        "--answers",
        str(reference("pope", "llava_eval", "answers_llava-v1.5-13b.jsonl")),
        "--labels",
        str(reference("pope", "AoiDragon_POPE_e3e3926_llava_pinned")),
    )
    assert out["benchmark"] == "pope"
    assert out["pairing"] == "question"
    assert round(out["mean_f1"] * 100, 2) == 85.95
    assert round(out["splits"]["random"]["f1"] * 100, 2) == 87.14


def test_pope_command_positional_pairing_reproduces_eval_pope_with_head_labels() -> None:
    out = _invoke(
        "pope",
        "--questions",
        str(reference("pope", "llava_eval", "llava_pope_test.jsonl")),
        "--answers",
        str(reference("pope", "llava_eval", "answers_llava-v1.5-13b.jsonl")),
        "--labels",
        str(reference("pope", "AoiDragon_POPE_HEAD")),
        "--pairing",
        "positional",
    )
    assert out["pairing"] == "positional"
    assert round(out["splits"]["random"]["f1"], 4) == 0.4565
    assert out["mismatched_pairs"]["random"] == 2893


def test_pope_command_fails_on_a_missing_label_split(tmp_path: Path) -> None:
    for split in ("random", "popular"):
        shutil.copy(reference("pope", "AoiDragon_POPE_e3e3926_llava_pinned", f"coco_pope_{split}.json"), tmp_path)
    args = [
        "score",
        "pope",
        "--questions",
        str(reference("pope", "llava_eval", "llava_pope_test.jsonl")),
        "--answers",
        str(reference("pope", "llava_eval", "answers_llava-v1.5-13b.jsonl")),
        "--labels",
        str(tmp_path),
    ]
    result = CliRunner().invoke(eval_group, args)
    assert result.exit_code == 1
    assert "no label file for split(s) adversarial" in result.output and "--allow-partial" in result.output
    out = _invoke(*args[1:], "--allow-partial")
    assert out["missing_splits"] == ["adversarial"]


def test_mme_command_from_results_dir() -> None:
    out = _invoke("mme", "--results-dir", str(reference("mme", "eval_tool", "answers_llava-v1.5-7b")))
    assert round(out["perception"], 2) == 1508.67
    assert round(out["cognition"], 2) == 355.71
    assert set(out["tasks"]) >= {"existence", "OCR", "code_reasoning"}


def test_mme_command_from_llava_answers_writes_eval_tool_files(tmp_path: Path) -> None:
    out = _invoke(
        "mme",
        "--questions",
        str(reference("mme", "llava_mme.jsonl")),
        "--answers",
        str(reference("mme", "answers_llava-v1.5-7b.jsonl")),
        "--gt",
        str(reference("mme", "eval_tool", "answers_llava-v1.5-7b")),
        "--skip-missing-gt",
        "--write-results-dir",
        str(tmp_path),
    )
    assert round(out["perception"], 2) == 1508.67
    expected = reference("mme", "eval_tool", "answers_llava-v1.5-7b", "count.txt").read_bytes()
    assert (tmp_path / "count.txt").read_bytes() == expected


def test_mme_command_scores_every_llava_answer_like_the_converter() -> None:
    out = _invoke(
        "mme",
        "--questions",
        str(reference("mme", "llava_mme.jsonl")),
        "--answers",
        str(reference("mme", "answers_llava-v1.5-13b.jsonl")),
        "--gt",
        str(reference("mme", "eval_tool_official", "Your_Results")),
    )
    assert round(out["perception"], 2) == 1531.32
    assert round(out["cognition"], 2) == 295.36
    assert out["conversion"] == {
        "answers": 2374,
        "scored": 2374,
        "not_in_questions": 6,
        "missing_gt": 0,
        "duplicates": 0,
    }


def test_mme_command_needs_one_input_mode() -> None:
    result = CliRunner().invoke(eval_group, ["score", "mme"])
    assert result.exit_code == 2
    assert "give --results-dir, or --answers with --gt" in result.output


def test_mmvet_command() -> None:
    out = _invoke(
        "mmvet",
        "--gt",
        str(reference("mmvet", "mm-vet.json")),
        "--grades",
        str(reference("mmvet", "results", "llava-v1.5-13b_gpt-4-grade-1runs.json")),
    )
    assert out["official_rounding"]["total"] == 36.1
    assert round(out["capabilities"]["rec"], 2) == 40.60
    assert out["judge_models"] == ["gpt-4"]


def test_seed_command(tmp_path: Path) -> None:
    annotation = tmp_path / "SEED-Bench.json"
    annotation.write_text(
        json.dumps(
            {
                "questions": [
                    {
                        "question_id": "101669",
                        "answer": "B",
                        "question_type_id": 1,
                        "data_type": "image",
                        "choice_b": "a cat",
                    },
                    {"question_id": "104933", "answer": "A", "question_type_id": 9, "data_type": "image"},
                ]
            }
        )
    )
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        '{"question_id": "101669", "prediction": "a cat"}\n{"question_id": "104933", "prediction": "A"}\n'
    )
    out = _invoke("seed", "--questions", str(annotation), "--answers", str(answers), "--lenient")
    assert out["accuracy"] == 50.0
    assert out["lenient"]["overall"] == 100.0
    assert out["exact"]["per_type"] == {"Scene Understanding": 0.0, "Text Understanding": 100.0}


def test_seed_command_reports_string_ids_in_llava_answers(tmp_path: Path) -> None:
    annotation = tmp_path / "SEED-Bench.json"
    annotation.write_text(
        json.dumps(
            {
                "questions": [
                    {"question_id": "101669", "answer": "B", "question_type_id": 1, "data_type": "image"},
                ]
            }
        )
    )
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"question_id": "101669", "prompt": "...", "text": "B"}\n')
    out = _invoke("seed", "--questions", str(annotation), "--answers", str(answers))
    assert out["accuracy"] == 0.0  # as convert_seed_for_submission.py: it looks up int 101669
    assert (out["answer_format"], out["unmatched_answers"], out["id_type_mismatches"]) == ("llava", 1, 1)


def test_malformed_file_gives_a_one_line_error(tmp_path: Path) -> None:
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"question_id": 1, "text": "Yes"}\nnot json\n')
    result = CliRunner().invoke(
        eval_group,
        [
            "score",
            "pope",
            "--questions",
            str(reference("pope", "llava_eval", "llava_pope_test.jsonl")),
            "--answers",
            str(answers),
            "--labels",
            str(reference("pope", "AoiDragon_POPE_e3e3926_llava_pinned")),
        ],
    )
    assert result.exit_code == 1
    assert f"Error: {answers}:2: not valid JSON" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["pope", "mme", "mmvet", "seed"])
def test_help_tells_which_files_to_pass(command: str) -> None:
    result = CliRunner().invoke(eval_group, ["score", command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


def test_importing_the_cli_and_scorers_stays_light() -> None:
    code = (
        "import sys, som.eval.cli, som.eval.benchmarks.pope, som.eval.benchmarks.mme, "
        "som.eval.benchmarks.mmvet, som.eval.benchmarks.seed\n"
        "heavy = [m for m in ('torch', 'transformers', 'prefect', 'numpy', 'PIL') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
