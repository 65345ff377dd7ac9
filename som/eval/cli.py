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
    """Evaluate models on POPE, MME, SEED-Bench, MM-Vet, LLaVA-Bench and the SoM listing probe.

    `som eval run --model M --benchmark pope --data pope=DIR --run-dir RUN` answers the
    benchmarks with the model, sharded over Slurm job arrays (or local processes), with and
    without Set-of-Mark tags, then scores them. `som eval score BENCHMARK ...` recomputes a
    benchmark's scores from existing answer files with the official scripts' rules and prints
    them as JSON; no model or GPU is needed.
    """


@eval_group.group("score")
def score() -> None:
    """Score existing answers exactly as the official scripts do (JSON on stdout).

    \b
    pope   LLaVA question JSONL + answers JSONL + folder of coco_pope_<split>.json
    mme    an eval_tool results folder, or LLaVA questions/answers JSONL + ground truth
    mmvet  mm-vet.json + the official grader's grade JSON
    seed   SEED-Bench.json + answers JSONL (upload format or LLaVA answers)
    llava-bench  LLaVA's review JSONL, or the benchmark folder + answers + a judge model
    listing      a folder of marked images (som mark --masks) + answers JSONL
    """


@score.command("pope")
@click.option("--questions", required=True, type=_FILE, help="LLaVA's llava_pope_test.jsonl: question_id, image, text, category (random/popular/adversarial) per line.")
@click.option("--answers", required=True, type=_FILE, help="Model answers JSONL: question_id and text per line (LLaVA's model_vqa_loader output).")
@click.option("--labels", required=True, type=_DIR, help="Folder with AoiDragon/POPE's coco_pope_random.json, coco_pope_popular.json, coco_pope_adversarial.json (all three are needed; LLaVA pins POPE commit e3e3926).")
@click.option("--pairing", type=click.Choice(["question", "positional"]), default="question", show_default=True, help="question: match answers to labels by image + question text. positional: zip each split's answers (file order) with the label lines, exactly as LLaVA's eval_pope.py does.")
@click.option("--allow-partial", is_flag=True, help="Score what is there instead of failing on unanswered questions or a missing label split (reported as unanswered / missing_splits).")
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
@click.option("--results-dir", type=_DIR, help="eval_tool results folder: one <task>.txt per task, lines image<TAB>question<TAB>answer<TAB>response.")
@click.option("--questions", type=_FILE, help="LLaVA's llava_mme.jsonl (question_id, text, category). Optional check that every question was answered; answers it lacks are still scored (reported as conversion.not_in_questions).")
@click.option("--answers", type=_FILE, help="Model answers JSONL: question_id (image path, e.g. landmark/images/x.jpg), prompt and text per line (LLaVA's model_vqa_loader output).")
@click.option("--gt", "gt_dir", type=_DIR, help="Ground truth for --answers: MME's eval_tool template folder (Your_Results/ from eval_tool.zip) or MME_Benchmark_release_version/.")
@click.option("--write-results-dir", type=click.Path(file_okay=False), help="With --answers: also write the eval_tool <task>.txt files here, for the official calculation.py.")
@click.option("--skip-missing-gt", is_flag=True, help="With --answers: leave out answers the ground truth lacks (counted as conversion.missing_gt) instead of failing.")
@click.option("--allow-duplicates", is_flag=True, help="With --answers: keep the last of repeated (question_id, prompt) lines (counted as conversion.duplicates) instead of failing.")
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
@click.option("--gt", required=True, type=_FILE, help="The official mm-vet.json (question, answer and capability list per sample).")
@click.option("--grades", required=True, type=_FILE, help="The official grader's output, e.g. results/<model>_gpt-4-grade-1runs.json ({id: {model, content, score: [...]}}).")
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
@click.option("--questions", required=True, type=_FILE, help="SEED-Bench.json (official annotation with answer letters), or a JSON/JSONL list of its question records.")
@click.option("--answers", required=True, type=_FILE, help="Answers JSONL: question_id plus prediction (upload format, ids matched as text) or text (LLaVA answers, ids matched as LLaVA's converter does: numeric ids must be JSON numbers).")
@click.option("--data-type", type=click.Choice(["image", "video", "all"]), default="image", show_default=True, help="Which SEED-Bench questions to score.")
@click.option("--lenient", is_flag=True, help="Also report accuracy with a forgiving letter extractor (kept separate from the official exact-letter score).")
def score_seed(questions: str, answers: str, data_type: str, lenient: bool) -> None:
    """SEED-Bench: exact-letter accuracy per question type and overall, as LLaVA computes it.

    A question counts as right only when the answer is exactly its letter ("B"); unanswered
    questions count as wrong. LLaVA answers are matched like convert_seed_for_submission.py
    does: it looks "101669" up as the integer 101669, so an answers file with string ids
    scores 0% there and here. `unmatched_answers` and `id_type_mismatches` in the JSON (and a
    warning) show when that happened.

    \b
    Examples:
      som eval score seed --questions SEED-Bench.json --answers answers_upload/llava-v1.5-13b.jsonl
      som eval score seed --questions SEED-Bench.json --answers answers/llava-v1.5-13b.jsonl --lenient
    """
    from som.eval.benchmarks.seed import score_seed_files

    _emit(_run(lambda: score_seed_files(questions, answers, data_type=data_type, lenient=lenient)))


@score.command("llava-bench")
@click.option("--reviews", type=_FILE, multiple=True, help="LLaVA's review JSONL (eval_gpt_review_bench.py output: question_id, category, content, tuple); summarised without a judge. Repeat for several runs (LLaVA reports the mean of 3): each file's scores plus the mean and std.")
@click.option("--source", help="With --answers: the LLaVA-Bench folder or URL (questions.jsonl, context.jsonl, answers_gpt4.jsonl; or the COCO qa90 files).")
@click.option("--answers", type=_FILE, help="Model answers JSONL: question_id and text per line.")
@click.option("--judge-model", help="The pinned judge model for --answers (LLaVA used gpt-4-0314).")
@click.option("--judge-url", help="Judge API root (default $SOMFLOW_CHAT_BASE_URL); key from $OPENAI_API_KEY.")
@click.option("--judge-cache", help="Folder/URL where judge replies are cached (a rerun sends no request).")
@click.option("--temperature", type=float, default=0.2, show_default=True, help="The judge's temperature (LLaVA's 0.2).")
@click.option("--retry-unparsable", is_flag=True, help="Ask again at higher temperatures when a reply has no score pair (LLaVA keeps it as -1 -1).")
@click.option("--runs", type=click.IntRange(min=1), default=1, show_default=True, help="Reviews per answer, averaged (LLaVA reports 3).")
@click.option("--allow-partial", is_flag=True, help="Score only the answered questions instead of failing on unanswered ones.")
def score_llava_bench(reviews: tuple[str, ...], source: str | None, answers: str | None, judge_model: str | None,
                      judge_url: str | None, judge_cache: str | None, temperature: float, retry_unparsable: bool,
                      runs: int, allow_partial: bool) -> None:
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
        _emit(_run(lambda: bench.score(bench.load_items(source), load_answers(answers), judge=judge,
                                       allow_partial=allow_partial)))


@score.command("listing")
@click.option("--source", required=True, help="Folder or URL of marked images: <name>.json + <name>.jpg as `som mark --masks` writes (or a SoM dataset with marks/).")
@click.option("--answers", required=True, type=_FILE, help="Model answers JSONL: question_id (the image name) and text per line.")
@click.option("--allow-partial", is_flag=True, help="Score only the answered images instead of failing on unanswered ones.")
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


if __name__ == "__main__":
    eval_group()
