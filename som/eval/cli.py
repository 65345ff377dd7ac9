"""`som eval`: evaluation commands. `som eval score ...` scores existing answer files, no model.

Only click and the standard library are imported here, so `som eval --help` stays instant.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from som.cli import LazyGroup
from som.eval.benchmarks import FormatError

T = TypeVar("T")

_FILE = click.Path(exists=True, dir_okay=False)
_DIR = click.Path(exists=True, file_okay=False)


def _emit(result: Any) -> None:
    """Print a scores object (or dict) as JSON (the one thing these commands write to stdout)."""
    data = result if isinstance(result, dict) else result.to_dict()
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _run(compute: Callable[[], T]) -> T:
    """Turn a malformed-input error into a one-line CLI error naming the file and line."""
    try:
        return compute()
    except (FormatError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


class _EvalGroup(LazyGroup):
    """`run` lives with the Prefect flow it starts, so it is imported only when invoked."""

    lazy = {"run": ("flows.eval_cli:run", "Answer and score benchmarks with a model (Slurm job arrays or local).")}


@click.group("eval", cls=_EvalGroup, context_settings={"help_option_names": ["-h", "--help"]})
def eval_group() -> None:
    """Evaluate models on LLaVA-1.5's 12 benchmarks and the SoM listing probe.

    Benchmarks: vqav2, gqa, vizwiz, sqa, textvqa, pope, mme, mmbench, mmbench_cn, seed,
    llava_bench, mmvet, listing. `som eval run --model M --benchmark pope --data pope=DIR
    --run-dir RUN` answers benchmarks with the model, sharded over Slurm job arrays (or local
    processes), with and without Set-of-Mark tags, then scores them; `--suite llava15
    --data-root playground/data/eval` runs all of them. `som eval score BENCHMARK ...`
    recomputes a benchmark's scores from existing answer files with the official scripts'
    rules and prints them as JSON; `som eval submission BENCHMARK ...` writes the upload file
    for an evaluation server. No model or GPU is needed for those two.
    """


@eval_group.group("score")
def score() -> None:
    """Score existing answers exactly as the official scripts do (JSON on stdout).

    \b
    pope   LLaVA question JSONL + answers JSONL + folder of coco_pope_<split>.json
    mme    an eval_tool results folder, or LLaVA questions/answers JSONL + ground truth
    mmvet  mm-vet.json + the official grader's grade JSON
    seed   SEED-Bench.json + answers JSONL (upload format or LLaVA answers); all/image/video
    llava-bench  LLaVA's review JSONL, or the benchmark folder + answers + a judge model
    listing      a folder of marked images (som mark --masks) + answers JSONL
    textvqa      TextVQA_0.5.1_val.json + answers JSONL (+ LLaVA question JSONL)
    vqav2        val annotations (+ questions) + answers JSONL or upload JSON
    vizwiz       val.json + answers JSONL or upload JSON
    sqa          folder of problems.json + pid_splits.json + answers JSONL
    mmbench      the MMBench(-CN) dev TSV + answers JSONL
    gqa          testdev_balanced_questions.json + answers JSONL or predictions JSON
    """


@score.command("pope")
@click.option(
    "--questions",
    required=True,
    type=_FILE,
    help="LLaVA's llava_pope_test.jsonl: question_id, image, text, category (random/popular/adversarial) per line.",
)
@click.option(
    "--answers",
    required=True,
    type=_FILE,
    help="Model answers JSONL: question_id and text per line (LLaVA's model_vqa_loader output).",
)
@click.option(
    "--labels",
    required=True,
    type=_DIR,
    help="Folder with AoiDragon/POPE's coco_pope_random.json, coco_pope_popular.json, coco_pope_adversarial.json (all "
    "three are needed; LLaVA pins POPE commit e3e3926).",
)
@click.option(
    "--pairing",
    type=click.Choice(["question", "positional"]),
    default="question",
    show_default=True,
    help="question: match answers to labels by image + question text. positional: zip each split's answers (file "
    "order) with the label lines, exactly as LLaVA's eval_pope.py does.",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Score what is there instead of failing on unanswered questions or a missing label split (reported as "
    "unanswered / missing_splits).",
)
def score_pope(questions: str, answers: str, labels: str, pairing: str, allow_partial: bool) -> None:
    """POPE: per-split accuracy, precision, recall, F1 and yes-ratio; headline mean F1.

    Answers are normalised as LLaVA's eval_pope.py does (a 'no'/'not'/'No' word in the first
    sentence means no, anything else yes). By default questions are matched to labels by image
    and question text, so label files from either POPE commit work with LLaVA's question file.
    `--pairing positional` gives eval_pope.py's numbers even where its pairing is wrong: with
    POPE's newest random split, 90 extra label lines shift the pairs (F1 0.46 instead of 0.87);
    `mismatched_pairs` in the JSON counts such pairs. The JSON's `pairing` says which was used.

    \b
    Example:
      som eval score pope --questions llava_pope_test.jsonl \\
          --answers answers/llava-v1.5-13b.jsonl --labels POPE/output/coco
    """
    from som.eval.benchmarks.pope import score_pope_files

    _emit(_run(lambda: score_pope_files(questions, answers, labels, allow_partial=allow_partial, pairing=pairing)))


@score.command("mme")
@click.option(
    "--results-dir",
    type=_DIR,
    help="eval_tool results folder: one <task>.txt per task, lines image<TAB>question<TAB>answer<TAB>response.",
)
@click.option(
    "--questions",
    type=_FILE,
    help="LLaVA's llava_mme.jsonl (question_id, text, category). Optional check that every question was answered; "
    "answers it lacks are still scored (reported as conversion.not_in_questions).",
)
@click.option(
    "--answers",
    type=_FILE,
    help="Model answers JSONL: question_id (image path, e.g. landmark/images/x.jpg), prompt and text per line "
    "(LLaVA's model_vqa_loader output).",
)
@click.option(
    "--gt",
    "gt_dir",
    type=_DIR,
    help="Ground truth for --answers: MME's eval_tool template folder (Your_Results/ from eval_tool.zip) or "
    "MME_Benchmark_release_version/.",
)
@click.option(
    "--write-results-dir",
    type=click.Path(file_okay=False),
    help="With --answers: also write the eval_tool <task>.txt files here, for the official calculation.py.",
)
@click.option(
    "--skip-missing-gt",
    is_flag=True,
    help="With --answers: leave out answers the ground truth lacks (counted as conversion.missing_gt) instead of "
    "failing.",
)
@click.option(
    "--allow-duplicates",
    is_flag=True,
    help="With --answers: keep the last of repeated (question_id, prompt) lines (counted as conversion.duplicates) "
    "instead of failing.",
)
def score_mme(
    results_dir: str | None,
    questions: str | None,
    answers: str | None,
    gt_dir: str | None,
    write_results_dir: str | None,
    skip_missing_gt: bool,
    allow_duplicates: bool,
) -> None:
    """MME: 100*acc + 100*acc+ per task; Perception and Cognition sums.

    Give either --results-dir (what the official `calculation.py --results_dir` reads), or
    --answers with --gt, which converts every answer line the way LLaVA's
    convert_answer_to_mme.py does (from its own question_id and prompt) before scoring. An
    answer without ground truth or a repeated answer is an error unless the matching flag is
    given; the JSON's `conversion` block counts answers read, scored and set aside.

    \b
    Examples:
      som eval score mme --results-dir eval_tool/answers/llava-v1.5-7b
      som eval score mme --questions llava_mme.jsonl --answers answers/llava-v1.5-13b.jsonl \\
          --gt eval_tool/Your_Results --write-results-dir eval_tool/answers/llava-v1.5-13b
    """
    from som.eval.benchmarks import mme

    if results_dir is not None:
        if answers or questions or gt_dir or write_results_dir or skip_missing_gt or allow_duplicates:
            raise click.UsageError("--results-dir cannot be combined with --questions/--answers/--gt options")
        _emit(_run(lambda: mme.score_results_dir(results_dir)))
        return
    if answers is None or gt_dir is None:
        raise click.UsageError("give --results-dir, or --answers with --gt (ground truth folder)")
    scores, conversion = _run(
        lambda: mme.score_llava_answers(
            questions,
            answers,
            gt_dir,
            skip_missing=skip_missing_gt,
            allow_duplicates=allow_duplicates,
            write_dir=write_results_dir,
        )
    )
    _emit({**scores.to_dict(), "conversion": conversion.to_dict()})


@score.command("mmvet")
@click.option(
    "--gt",
    required=True,
    type=_FILE,
    help="The official mm-vet.json (question, answer and capability list per sample).",
)
@click.option(
    "--grades",
    required=True,
    type=_FILE,
    help="The official grader's output, e.g. results/<model>_gpt-4-grade-1runs.json ({id: {model, content, score: "
    "[...]}}).",
)
@click.option("--subset", type=_FILE, help="Optional JSON list of sample ids to score, e.g. bard_set.json.")
@click.option("--runs", type=int, help="Use the first N grading runs (default: all runs every sample has).")
def score_mmvet(gt: str, grades: str, subset: str | None, runs: int | None) -> None:
    """MM-Vet: mean grade x100 per capability, per capability integration and in total.

    Grades come from a GPT judge (the official grader or somflow's); this command only adds
    them up. `official_rounding` repeats the numbers rounded as the official CSVs print them.

    \b
    Example:
      som eval score mmvet --gt mm-vet.json --grades results/llava-v1.5-13b_gpt-4-grade-1runs.json
    """
    from som.eval.benchmarks.mmvet import score_mmvet_files

    _emit(_run(lambda: score_mmvet_files(gt, grades, subset=subset, runs=runs)))


@score.command("seed")
@click.option(
    "--questions",
    required=True,
    type=_FILE,
    help="SEED-Bench.json (official annotation with answer letters), or a JSON/JSONL list of its question records.",
)
@click.option(
    "--answers",
    required=True,
    type=_FILE,
    help="Answers JSONL: question_id plus prediction (upload format, ids matched as text) or text (LLaVA answers, ids "
    "matched as LLaVA's converter does: numeric ids must be JSON numbers).",
)
@click.option(
    "--data-type",
    type=click.Choice(["image", "video", "all"]),
    default="image",
    show_default=True,
    help="Which SEED-Bench questions to score.",
)
@click.option(
    "--lenient",
    is_flag=True,
    help="Also report accuracy with a forgiving letter extractor (kept separate from the official exact-letter score).",
)
def score_seed(questions: str, answers: str, data_type: str, lenient: bool) -> None:
    """SEED-Bench: exact-letter accuracy per question type and overall, as LLaVA computes it.

    A question counts as right only when the answer is exactly its letter ("B"); unanswered
    questions count as wrong. LLaVA answers are matched like convert_seed_for_submission.py
    does: it looks "101669" up as the integer 101669, so an answers file with string ids
    scores 0% there and here. `unmatched_answers` and `id_type_mismatches` in the JSON (and a
    warning) show when that happened. Whatever --data-type, the JSON also has the converter's
    own summary over every question in the file: `all_accuracy`, `image_accuracy`,
    `video_accuracy`, and `official` (per-dimension accuracy and the lines it prints).

    \b
    Examples:
      som eval score seed --questions SEED-Bench.json --answers answers_upload/llava-v1.5-13b.jsonl
      som eval score seed --questions SEED-Bench.json --answers answers/llava-v1.5-13b.jsonl --lenient
    """
    from som.eval.benchmarks.seed import score_seed_files

    _emit(_run(lambda: score_seed_files(questions, answers, data_type=data_type, lenient=lenient)))


@score.command("llava-bench")
@click.option(
    "--reviews",
    type=_FILE,
    multiple=True,
    help="LLaVA's review JSONL (eval_gpt_review_bench.py output: question_id, category, content, tuple); summarised "
    "without a judge. Repeat for several runs (LLaVA reports the mean of 3): each file's scores plus the mean "
    "and std.",
)
@click.option(
    "--source",
    help="With --answers: the LLaVA-Bench folder or URL (questions.jsonl, context.jsonl, answers_gpt4.jsonl; or the "
    "COCO qa90 files).",
)
@click.option("--answers", type=_FILE, help="Model answers JSONL: question_id and text per line.")
@click.option("--judge-model", help="The pinned judge model for --answers (LLaVA used gpt-4-0314).")
@click.option("--judge-url", help="Judge API root (default $SOMFLOW_CHAT_BASE_URL); key from $OPENAI_API_KEY.")
@click.option("--judge-cache", help="Folder/URL where judge replies are cached (a rerun sends no request).")
@click.option(
    "--temperature", type=float, default=0.2, show_default=True, help="The judge's temperature (LLaVA's 0.2)."
)
@click.option(
    "--retry-unparsable",
    is_flag=True,
    help="Ask again at higher temperatures when a reply has no score pair (LLaVA keeps it as -1 -1).",
)
@click.option(
    "--runs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Reviews per answer, averaged (LLaVA reports 3).",
)
@click.option(
    "--allow-partial", is_flag=True, help="Score only the answered questions instead of failing on unanswered ones."
)
def score_llava_bench(
    reviews: tuple[str, ...],
    source: str | None,
    answers: str | None,
    judge_model: str | None,
    judge_url: str | None,
    judge_cache: str | None,
    temperature: float,
    retry_unparsable: bool,
    runs: int,
    allow_partial: bool,
) -> None:
    """LLaVA-Bench: mean(model) / mean(reference) judge score x100, per category and overall.

    Numbers follow summarize_gpt_review.py (unparsable reviews count as -1 -1;
    `excluding_unparsed` leaves them out); with several runs, `categories` holds the mean over
    runs and `runs` each run's scores.

    \b
    Examples:
      som eval score llava-bench --reviews reviews/llava-v1.5-13b.jsonl
      som eval score llava-bench --reviews eval1.jsonl --reviews eval2.jsonl --reviews eval3.jsonl
      som eval score llava-bench --source llava-bench-in-the-wild --answers answers/llava-v1.5-13b.jsonl \\
          --judge-model gpt-4-0314 --judge-cache s3://bucket/judge-cache --runs 3
    """
    from som.eval.benchmarks import llava_bench

    if reviews:
        if source or answers or judge_model:
            raise click.UsageError("--reviews cannot be combined with --source/--answers/--judge-model")
        _emit(_run(lambda: llava_bench.scores_from_runs([llava_bench.load_reviews(r) for r in reviews], reviews)))
        return
    if not (source and answers and judge_model):
        raise click.UsageError("give --reviews, or --source with --answers and --judge-model")
    from som.eval.items import load_answers
    from som.eval.judge import Judge

    bench = llava_bench.LlavaBenchBenchmark(temperature=temperature, retry_unparsable=retry_unparsable, runs=runs)
    with Judge(judge_url, judge_model, cache_url=judge_cache) as judge:
        _emit(
            _run(
                lambda: bench.score(
                    bench.load_items(source), load_answers(answers), judge=judge, allow_partial=allow_partial
                )
            )
        )


@score.command("listing")
@click.option(
    "--source",
    required=True,
    help="Folder or URL of marked images: <name>.json + <name>.jpg as `som mark --masks` writes (or a SoM dataset "
    "with marks/).",
)
@click.option(
    "--answers", required=True, type=_FILE, help="Model answers JSONL: question_id (the image name) and text per line."
)
@click.option(
    "--allow-partial", is_flag=True, help="Score only the answered images instead of failing on unanswered ones."
)
def score_listing(source: str, answers: str, allow_partial: bool) -> None:
    """SoM listing probe: tag-level precision / recall / F1 of (number, name) and exact-order accuracy.

    \b
    Example:
      som mark heldout/ --out heldout-marked/ --masks instances_val2017.json
      som eval score listing --source heldout-marked --answers answers/listing.jsonl
    """
    from som.eval.benchmarks.listing import ListingBenchmark
    from som.eval.items import load_answers

    bench = ListingBenchmark()
    _emit(_run(lambda: bench.score(bench.load_items(source), load_answers(answers), allow_partial=allow_partial)))


@eval_group.group("submission")
def submission() -> None:
    """Write a benchmark's upload file from model answers, as LLaVA's convert_* scripts do.

    For benchmarks scored by an evaluation server (VQAv2 test-dev, VizWiz test, MMBench test,
    SEED-Bench) or by the benchmark's own evaluator (GQA). The file is written atomically and
    the command prints (JSON) where it went and where to upload it.
    """


# --- new benchmarks: each adds its `score` and `submission` commands below this line ------


@score.command("gqa")
@click.option(
    "--questions",
    required=True,
    type=_FILE,
    help="GQA's testdev_balanced_questions.json (the answer key; from GQA's questions1.2.zip).",
)
@click.option(
    "--answers",
    type=_FILE,
    help="LLaVA's answers JSONL (question_id + text), converted as convert_gqa_for_eval.py does.",
)
@click.option(
    "--predictions",
    type=_FILE,
    help="Or GQA's predictions JSON ([{questionId, prediction}]), e.g. from `som eval submission gqa`.",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Score the answered balanced questions instead of failing like eval.py on a missing prediction (reported as "
    "unanswered).",
)
def score_gqa(questions: str, answers: str | None, predictions: str | None, allow_partial: bool) -> None:
    """GQA testdev-balanced: accuracy, binary / open accuracy, per-type accuracy and distribution,
    as GQA's eval.py --tier testdev_balanced computes them (LLaVA's gqa.sh).

    Exact string match over the balanced questions after LLaVA's conversion (trailing dots off,
    lower case); question ids are strings, so numeric ids match nothing. Validity and
    plausibility need a choices file GQA does not publish for testdev: reported as null.

    \b
    Example:
      som eval score gqa --questions data/testdev_balanced_questions.json \\
          --answers answers/llava_gqa_testdev_balanced/llava-v1.5-13b/merge.jsonl
    """
    from som.eval.benchmarks.gqa import score_gqa_files

    if (answers is None) == (predictions is None):
        raise click.UsageError("give --answers or --predictions (one of them)")
    _emit(
        _run(lambda: score_gqa_files(questions, answers=answers, predictions=predictions, allow_partial=allow_partial))
    )


@submission.command("gqa")
@click.option(
    "--answers",
    required=True,
    type=_FILE,
    help="LLaVA's answers JSONL (question_id + text), e.g. merge.jsonl from gqa.sh.",
)
@click.option(
    "--out",
    required=True,
    help="Predictions file to write (path or URL); GQA's eval.py reads testdev_balanced_predictions.json.",
)
def submission_gqa(answers: str, out: str) -> None:
    """GQA: LLaVA's answers -> GQA's predictions JSON, byte for byte as convert_gqa_for_eval.py.

    \b
    Example:
      som eval submission gqa --answers merge.jsonl --out gqa/data/testdev_balanced_predictions.json
    """
    from som.eval.benchmarks.gqa import write_predictions

    _emit(_run(lambda: write_predictions(answers, out)))


@submission.command("seed")
@click.option("--questions", required=True, type=_FILE, help="SEED-Bench.json (the official annotation).")
@click.option(
    "--answers",
    required=True,
    type=_FILE,
    help="LLaVA's answers JSONL (question_id + text; numeric ids as JSON numbers, as LLaVA writes them).",
)
@click.option("--out", required=True, help="Upload JSONL to write (path or URL), e.g. answers_upload/<model>.jsonl.")
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Leave unanswered questions out (listed in the JSON) instead of failing, where the converter stops with a "
    "KeyError.",
)
def submission_seed(questions: str, answers: str, out: str, allow_partial: bool) -> None:
    """SEED-Bench: the leaderboard upload file, line for line as convert_seed_for_submission.py.

    One line per annotation question (19,242 for SEED-Bench-1, 49914 twice), the annotation's
    ids, the answer text as given. The JSON also carries the converter's all / image / video
    accuracy and the lines it prints.

    \b
    Example:
      som eval submission seed --questions SEED-Bench.json --answers merge.jsonl \\
          --out answers_upload/llava-v1.5-13b.jsonl
    """
    from som.eval.benchmarks.seed import write_upload

    _emit(_run(lambda: write_upload(questions, answers, out, allow_partial=allow_partial)))


@score.command("textvqa")
@click.option(
    "--annotations",
    required=True,
    type=_FILE,
    help="TextVQA_0.5.1_val.json (the official val annotations, 10 answers per question).",
)
@click.option(
    "--answers",
    required=True,
    type=_FILE,
    help="Model answers JSONL: question_id (the image id), prompt and text per line (LLaVA's model_vqa_loader output).",
)
@click.option(
    "--questions",
    type=_FILE,
    help="LLaVA's llava_textvqa_val_v051_ocr.jsonl: the questions that must be answered, and the prompt of answer "
    "lines without one.",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Score the answered questions instead of failing on unanswered ones (reported as unanswered).",
)
def score_textvqa(annotations: str, answers: str, questions: str | None, allow_partial: bool) -> None:
    """TextVQA: accuracy (m4c soft score, percent) exactly as LLaVA's eval_textvqa.py.

    Each answer line is matched to its annotation by image id and the question recovered from
    its prompt, as eval_textvqa.py does; every line counts. Without --questions, every
    annotated question needs an answer.

    \b
    Example:
      som eval score textvqa --annotations TextVQA_0.5.1_val.json \\
          --answers answers/llava-v1.5-13b.jsonl --questions llava_textvqa_val_v051_ocr.jsonl
    """
    from som.eval.benchmarks.textvqa import score_textvqa_files

    _emit(_run(lambda: score_textvqa_files(annotations, answers, questions=questions, allow_partial=allow_partial)))


@score.command("vqav2")
@click.option(
    "--annotations", required=True, type=_FILE, help="v2_mscoco_val2014_annotations.json (official val annotations)."
)
@click.option(
    "--answers",
    required=True,
    type=_FILE,
    help="LLaVA answers JSONL (question_id, text; EvalAI-processed before scoring, as for upload) or an upload JSON "
    "list of {question_id, answer} (scored as it is).",
)
@click.option(
    "--questions",
    type=_FILE,
    help="v2_OpenEnded_mscoco_val2014_questions.json; checked to hold exactly the annotated questions.",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Score the answered questions instead of failing on unanswered ones (reported as unanswered).",
)
def score_vqav2(annotations: str, answers: str, questions: str | None, allow_partial: bool) -> None:
    """VQAv2 val: official VQA accuracy (vqaEval.py), overall and per answer/question type, %.

    \b
    Example:
      som eval score vqav2 --annotations v2_mscoco_val2014_annotations.json \\
          --questions v2_OpenEnded_mscoco_val2014_questions.json --answers answers/val.jsonl
    """
    from som.eval.benchmarks.vqav2 import score_vqav2_files

    _emit(_run(lambda: score_vqav2_files(annotations, answers, questions=questions, allow_partial=allow_partial)))


@score.command("vizwiz")
@click.option(
    "--annotations",
    required=True,
    type=_FILE,
    help="VizWiz val.json (a list of {image, question, answers, answer_type}).",
)
@click.option(
    "--answers",
    required=True,
    type=_FILE,
    help="LLaVA answers JSONL (question_id, text; EvalAI-processed as for upload) or an upload JSON list of {image, "
    "answer}.",
)
@click.option(
    "--questions",
    type=_FILE,
    help="LLaVA-layout question JSONL mapping question_id to image; default: question_id is the position in "
    "--annotations, as LLaVA numbers llava_test.jsonl.",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Score the answered questions instead of failing on unanswered ones (reported as unanswered).",
)
def score_vizwiz(annotations: str, answers: str, questions: str | None, allow_partial: bool) -> None:
    """VizWiz val: VQA accuracy as VizWiz's evaluator computes it, overall and per answer type, %.

    \b
    Example:
      som eval score vizwiz --annotations val.json --answers answers/val.jsonl
    """
    from som.eval.benchmarks.vizwiz import score_vizwiz_files

    _emit(_run(lambda: score_vizwiz_files(annotations, answers, questions=questions, allow_partial=allow_partial)))


@submission.command("vqav2")
@click.option(
    "--questions",
    required=True,
    type=_FILE,
    help="LLaVA's llava_vqav2_mscoco_test2015.jsonl (the whole test split: the upload lists every question).",
)
@click.option(
    "--answers",
    required=True,
    type=_FILE,
    help="Model answers JSONL: question_id and text per line (e.g. LLaVA's merged test-dev answers).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the upload JSON.")
@click.option(
    "--split-questions",
    type=_FILE,
    help="The question file that was answered (llava_vqav2_mscoco_test-dev2015.jsonl): each of its questions needs an "
    "answer.",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="With --split-questions: upload unanswered questions as '' instead of failing.",
)
def submission_vqav2(questions: str, answers: str, out: str, split_questions: str | None, allow_partial: bool) -> None:
    """VQAv2 test-dev/test upload, byte for byte as convert_vqav2_for_submission.py writes it.

    Every test2015 question is listed in file order, answers through EvalAI's processor,
    questions without an answer as "".

    \b
    Example:
      som eval submission vqav2 --questions llava_vqav2_mscoco_test2015.jsonl \\
          --split-questions llava_vqav2_mscoco_test-dev2015.jsonl --answers merge.jsonl --out upload.json
    """
    from som.eval.benchmarks.vqav2 import write_submission

    _emit(
        _run(
            lambda: write_submission(
                questions, answers, out, split_questions=split_questions, allow_partial=allow_partial
            )
        )
    )


@submission.command("vizwiz")
@click.option("--questions", required=True, type=_FILE, help="LLaVA's llava_test.jsonl.")
@click.option("--answers", required=True, type=_FILE, help="Model answers JSONL: question_id and text per line.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the upload JSON.")
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Write the answered questions instead of failing on unanswered ones (the server will refuse an incomplete "
    "file).",
)
def submission_vizwiz(questions: str, answers: str, out: str, allow_partial: bool) -> None:
    """VizWiz test upload, byte for byte as convert_vizwiz_for_submission.py writes it.

    \b
    Example:
      som eval submission vizwiz --questions llava_test.jsonl --answers answers/llava-v1.5-13b.jsonl \\
          --out answers_upload/llava-v1.5-13b.json
    """
    from som.eval.benchmarks.vizwiz import write_submission

    _emit(_run(lambda: write_submission(questions, answers, out, allow_partial=allow_partial)))


@score.command("sqa")
@click.option(
    "--base-dir",
    required=True,
    type=_DIR,
    help="Folder with ScienceQA's problems.json and pid_splits.json (LLaVA: playground/data/eval/scienceqa).",
)
@click.option(
    "--answers",
    required=True,
    type=_FILE,
    help="Answers JSONL: question_id (string), text and prompt per line (model_vqa_science.py output); lines without "
    "a prompt need --questions.",
)
@click.option("--split", default="test", show_default=True, help="The pid_splits.json split to score.")
@click.option(
    "--questions",
    type=_FILE,
    help="LLaVA's llava_test_CQM-A.json: rebuilds the prompt (which says whether a question has an image) of answer "
    "lines without one.",
)
@click.option(
    "--output-file",
    type=click.Path(dir_okay=False),
    help="Write LLaVA's per-question analysis ({correct, incorrect}) here, as eval_science_qa.py --output-file.",
)
@click.option(
    "--output-result",
    type=click.Path(dir_okay=False),
    help="Write LLaVA's result JSON (acc, correct, count, results, outputs) here, as --output-result.",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Score unanswered problems as FAILED (as eval_science_qa.py does) instead of failing; the JSON lists them.",
)
def score_sqa(
    base_dir: str,
    answers: str,
    split: str,
    questions: str | None,
    output_file: str | None,
    output_result: str | None,
    allow_partial: bool,
) -> None:
    """ScienceQA: accuracy over all problems and on image questions (ScienceQA-IMG), in percent.

    Letters are read as LLaVA's eval_science_qa.py reads them ("B", "B. ...", or one "The
    answer is B."); anything else is FAILED. A problem is an image question when its answer's
    prompt holds "<image>". The output files are byte for byte the script's.

    \b
    Example:
      som eval score sqa --base-dir scienceqa --answers answers/llava-v1.5-13b.jsonl \\
          --output-file answers/llava-v1.5-13b_output.jsonl --output-result answers/llava-v1.5-13b_result.json
    """
    from som.eval.benchmarks.sqa import score_sqa_files, write_llava_files

    scores = _run(
        lambda: score_sqa_files(base_dir, answers, split=split, questions=questions, allow_partial=allow_partial)
    )
    write_llava_files(scores, output_file, output_result)
    _emit(scores)


@score.command("mmbench")
@click.option(
    "--questions",
    required=True,
    type=_FILE,
    help="The MMBench dev TSV (mmbench_dev_20230712.tsv or mmbench_dev_cn_20231003.tsv), answers and circular copies "
    "included.",
)
@click.option(
    "--answers",
    required=True,
    type=_FILE,
    help="Answers JSONL: question_id (the TSV index) and text per line (model_vqa_mmbench.py output), or id and "
    "answer.",
)
@click.option(
    "--lang",
    type=click.Choice(["en", "cn"]),
    default="en",
    show_default=True,
    help="Names the result mmbench or mmbench_cn; the scoring rules are the same.",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Score the questions whose circular copies are all answered instead of failing (the JSON counts the rest).",
)
def score_mmbench(questions: str, answers: str, lang: str, allow_partial: bool) -> None:
    """MMBench / MMBench-CN: CircularEval accuracy (%), per category and l2-category, and vanilla.

    Letters are found with the official evaluator's rules (tools/eval_mmbench.py: a standing
    letter, a letter in one of its affixes, or one option's text). Where those find no letter
    the official evaluator asks ChatGPT; here such questions count as wrong and are counted
    (`undecided`), with `circular_accuracy_if_undecided_right` as the upper bound.

    \b
    Example:
      som eval score mmbench --questions mmbench_dev_20230712.tsv \\
          --answers answers/mmbench_dev_20230712/llava-v1.5-13b.jsonl
    """
    from som.eval.benchmarks.mmbench import score_mmbench_files

    _emit(_run(lambda: score_mmbench_files(questions, answers, lang=lang, allow_partial=allow_partial)))


@submission.command("mmbench")
@click.option("--questions", required=True, type=_FILE, help="The MMBench(-CN) TSV that was answered (dev or test).")
@click.option(
    "--answers", required=True, type=_FILE, help="Answers JSONL: question_id (the TSV index) and text per line."
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the upload xlsx.")
@click.option("--allow-partial", is_flag=True, help="Leave unanswered rows' prediction empty instead of failing.")
def submission_mmbench(questions: str, answers: str, out: str, allow_partial: bool) -> None:
    """MMBench / MMBench-CN upload xlsx with the cells convert_mmbench_for_submission.py writes.

    \b
    Example:
      som eval submission mmbench --questions mmbench_dev_20230712.tsv \\
          --answers answers/mmbench_dev_20230712/llava-v1.5-13b.jsonl --out answers_upload/llava-v1.5-13b.xlsx
    """
    from som.eval.benchmarks.mmbench import write_submission

    _emit(_run(lambda: write_submission(questions, answers, out, allow_partial=allow_partial)))


if __name__ == "__main__":
    eval_group()
