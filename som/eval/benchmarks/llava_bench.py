"""LLaVA-Bench (In-the-Wild, and its COCO variant): a GPT judge compares the model's answer with a
reference answer; the score is the model's mean judge score relative to the reference's.

Semantics kept from LLaVA's `eval_gpt_review_bench.py` / `eval_gpt_review_visual.py` and
`summarize_gpt_review.py`:

* the judge (LLaVA's was gpt-4-0314) gets the system message "You are a helpful and precise
  assistant for checking the quality of the answer." and one user message: `[Context]`
  (In-the-Wild: the image's caption, a list joined with newlines; COCO: its five captions, a
  blank line, then one "category: [x1, y1, x2, y2]" line per instance), `[Question]`, the
  reference answer as Assistant 1, the model's answer as Assistant 2, and `[System]` with the
  category's rule prompt from LLaVA's rule.json (`llava_bench_<category>` In-the-Wild,
  `<category>` for COCO); temperature 0.2, max_tokens 1024, one request per answer;
* the reply's first line, commas turned into spaces, split on single spaces, must be exactly two
  numbers: (reference score, model score); otherwise LLaVA stores (-1, -1), and averages it in;
* summarize_gpt_review.py: a review with a category counts in its category and in "all", one
  without a category in "all" only (and may carry its pair as `score` instead of `tuple`);
  per group, mean reference and mean model score; relative score = mean(model) /
  mean(reference) * 100; it prints the relative score and both means x10 rounded to 1 decimal,
  after rounding both means to 3 decimals (`official_rounding` repeats that);
* LLaVA reports the mean of 3 review runs: `scores_from_runs` gives each run and the mean (with
  the population std) per category; `runs` does the same through the judge.

Options off by default, where somflow can differ:

* `retry_unparsable`: ask again at temperatures 0.5 then 1.0 (a repeat at the same
  temperature would be a cache hit with the same reply) instead of keeping (-1, -1) at once;
  `excluding_unparsed` always gives the summary with unparsable reviews left out;
* `temperature` 0 for more repeatable reviews.

Pairing: LLaVA zips the question file with the two answer files line by line; somflow pairs by
question_id, so answer order does not matter (for answer files in question order, the same).

Items (`LlavaBenchBenchmark.load_items(source)`), from the folder or URL of either layout:

* In-the-Wild (Hugging Face `liuhaotian/llava-bench-in-the-wild`, LLaVA's
  `playground/data/eval/llava-bench-in-the-wild/`): `questions.jsonl`, `context.jsonl`,
  `answers_gpt4.jsonl`, `images/`;
* COCO (LLaVA's `coco2014_val_qa_eval/`): `qa90_questions.jsonl`, `qa90_gpt4_answer.jsonl`,
  `caps_boxes_coco2014_val_80.jsonl`; images in `images/` or the `images` folder/URL given.

Ids are the question_ids; the prompt is the question as is (LLaVA adds no suffix).
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from som.eval.benchmarks import FormatError, iter_jsonl, read_json, require, text_field

if TYPE_CHECKING:
    from som.eval.items import EvalItem, Source
    from som.eval.judge import Judge

log = logging.getLogger(__name__)

SYSTEM_PROMPT = "You are a helpful and precise assistant for checking the quality of the answer."
JUDGE_MODEL = "gpt-4-0314"
"""LLaVA's review model; record whichever judge a run actually used."""
JUDGE_MAX_TOKENS = 1024
LLAVA_TEMPERATURE = 0.2
"""eval_gpt_review_bench.py's review temperature."""
RETRY_TEMPERATURES: tuple[float, ...] = (0.5, 1.0)
"""Where `retry_unparsable` asks again (a repeat at the same temperature would be a cache hit)."""
CATEGORIES: tuple[str, ...] = ("conv", "detail", "complex")

WILD_FILES = ("questions.jsonl", "answers_gpt4.jsonl", "context.jsonl")
COCO_FILES = ("qa90_questions.jsonl", "qa90_gpt4_answer.jsonl", "caps_boxes_coco2014_val_80.jsonl")
IMAGE_FOLDER = "images"


# --- judge prompt and reply -------------------------------------------------------------------


def load_rules(path: str | Path | None = None) -> dict[str, dict[str, str]]:
    """Rule prompts by key: LLaVA's rule.json at `path`, else the packaged copy of its entries."""
    if path is None:
        text = resources.files("som.eval").joinpath("prompts", "llava_bench_rules.json").read_text("utf-8")
        data = json.loads(text)["rules"]
    else:
        data = read_json(path)
        data = data.get("rules", data) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not all(
        isinstance(r, dict) and "prompt" in r and "role" in r for r in data.values()
    ):
        raise FormatError(path or "llava_bench_rules.json", "expected {key: {role, prompt}} rules")
    return data


def review_prompt(context: str, question: str, reference: str, answer: str, rule: Mapping[str, str]) -> str:
    """The user message of one review: context, question, both answers, the rule."""
    role = rule["role"]
    return (
        f"[Context]\n{context}\n\n"
        f"[Question]\n{question}\n\n"
        f"[{role} 1]\n{reference}\n\n[End of {role} 1]\n\n"
        f"[{role} 2]\n{answer}\n\n[End of {role} 2]\n\n"
        f"[System]\n{rule['prompt']}\n\n"
    )


def parse_score_pair(review: str) -> tuple[float, float] | None:
    """(reference, model) from the reply's first line by LLaVA's rule; None where it gives -1 -1."""
    fields = review.split("\n")[0].replace(",", " ").split(" ")
    if len(fields) != 2:
        return None
    try:
        return float(fields[0]), float(fields[1])
    except ValueError:
        return None


@dataclass(frozen=True)
class Review:
    """One judged question: the scores (None when unparsable), the reply, requests made.

    `category` is None for a review file line without one: summarize_gpt_review.py counts
    such a line in "all" only."""

    question_id: str
    category: str | None
    scores: tuple[float, float] | None
    content: str
    requests: int


def review(
    item: EvalItem,
    answer: str,
    judge: Judge,
    rules: Mapping[str, Mapping[str, str]],
    temperature: float = LLAVA_TEMPERATURE,
    *,
    retry_unparsable: bool = False,
    run: int = 0,
) -> Review:
    """Judge one answer as eval_gpt_review_bench.py does (one request; an unparsable reply is
    kept as unparsed). With `retry_unparsable` it is asked again at each RETRY_TEMPERATURES.
    `run` numbers repeated reviews of the same answer so each is a fresh request."""
    rule_key = item.meta["rule"]
    if rule_key not in rules:
        raise FormatError("rules", f"question {item.id}: no rule {rule_key!r} (have {sorted(rules)})")
    prompt = review_prompt(item.meta["context"], item.prompt, item.meta["reference"], answer, rules[rule_key])
    requests = 0
    for step in (temperature, *(RETRY_TEMPERATURES if retry_unparsable else ())):
        content = judge.ask(prompt, step, system=SYSTEM_PROMPT, max_tokens=JUDGE_MAX_TOKENS, run=run)
        requests += 1
        scores = parse_score_pair(content)
        if scores is not None:
            return Review(item.id, item.meta["category"], scores, content, requests)
    log.warning(
        "llava_bench: judge reply for question %s is unparsable after %d requests: %r", item.id, requests, content[:200]
    )
    return Review(item.id, item.meta["category"], None, content, requests)


# --- summary --------------------------------------------------------------------------------


def _ordered(categories: Iterable[str]) -> list[str]:
    categories = set(categories)
    return [c for c in CATEGORIES if c in categories] + sorted(categories - set(CATEGORIES))


def summarize(reviews: Sequence[Review], *, drop_unparsed: bool = False) -> dict[str, dict[str, Any]]:
    """Per category and "all" as summarize_gpt_review.py computes them: relative score (%),
    reference and model means x10, count, and `official_rounding` (what it prints: both means
    rounded to 3 decimals, then the ratio x100 and the means x10 rounded to 1 decimal).

    A review with a category counts in it and in "all", one without only in "all". Unparsable
    reviews count as (-1, -1), LLaVA's rule; `drop_unparsed` leaves them out instead."""
    pairs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in reviews:
        pair = r.scores if r.scores is not None else (None if drop_unparsed else (-1.0, -1.0))
        if pair is None:
            continue
        if r.category is not None:
            pairs[r.category].append(pair)
        pairs["all"].append(pair)
    summary = {}
    for category in [*_ordered(c for c in pairs if c != "all"), "all"]:
        values = pairs.get(category)
        if not values:
            continue
        reference = sum(p[0] for p in values) / len(values)
        model = sum(p[1] for p in values) / len(values)
        shown_reference, shown_model = round(reference, 3), round(model, 3)
        summary[category] = {
            "relative": model / reference * 100 if reference else 0.0,
            "reference": reference * 10,
            "model": model * 10,
            "n": len(values),
            "official_rounding": {
                "relative": round(shown_model / shown_reference * 100, 1) if shown_reference else 0.0,
                "reference": round(shown_reference * 10, 1),
                "model": round(shown_model * 10, 1),
            },
        }
    return summary


def _pair(value: Any) -> tuple[float, float] | None:
    """Two numbers, else None."""
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return float(value[0]), float(value[1])
    return None


def load_reviews(path: str | Path) -> list[Review]:
    """LLaVA's review JSONL (question_id, category, content, tuple), read as
    summarize_gpt_review.py reads it: a line with a category must have `tuple`; a line without
    one counts in "all" only and may give its pair as `score` instead of `tuple`. A (-1, -1)
    pair is LLaVA's mark of an unparsable reply."""
    reviews = []
    for line, record in iter_jsonl(path):
        question_id = str(require(record, "question_id", path, line))
        if "category" in record:
            category: str | None = str(record["category"]).removeprefix("llava_bench_")
            key = "tuple"
        else:
            category = None
            key = "tuple" if "tuple" in record else "score"
        pair = _pair(require(record, key, path, line))
        if pair is None:
            raise FormatError(path, f"{key!r} must be two numbers", line)
        scores = None if pair == (-1.0, -1.0) else pair
        reviews.append(Review(question_id, category, scores, str(record.get("content", "")), 1))
    return reviews


def scores_from_reviews(reviews: Sequence[Review]) -> dict[str, Any]:
    """The JSON scores of one set of reviews; headline = the overall relative score by LLaVA's
    rule. `excluding_unparsed` repeats the summary without the unparsable reviews."""
    summary = summarize(reviews)
    if "all" not in summary:
        raise ValueError("llava_bench: no reviews to summarize")
    return {
        "benchmark": "llava_bench",
        "headline": summary["all"]["relative"],
        "categories": summary,
        "unparsed": sum(r.scores is None for r in reviews),
        "excluding_unparsed": summarize(reviews, drop_unparsed=True),
        "reviews": [
            {
                "question_id": r.question_id,
                "category": r.category,
                "tuple": list(r.scores or (-1, -1)),
                "content": r.content,
                "requests": r.requests,
            }
            for r in reviews
        ],
    }


def scores_from_runs(runs: Sequence[Sequence[Review]], labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Scores of several review runs of the same answers (LLaVA reports the mean of 3 GPT-4
    reviews): each run's scores under `runs`, and per category the mean over runs of the
    relative score and of both means x10, with the population std of the relative score
    (`std`: that of "all"). `official_rounding` of the mean is the mean of the runs' printed
    (1-decimal) numbers, rounded to 1 decimal, as a table built from the printed numbers would
    show it. The `headline` is that mean of the printed "all" numbers, unrounded: how LLaVA's
    published figure was made (64.7, 65.3, 66.3 -> 65.4, where the mean of the unrounded
    scores, `mean_relative`, is 65.47). One run gives that run's scores as they are."""
    if not runs:
        raise ValueError("llava_bench: no review runs")
    per_run = [scores_from_reviews(r) for r in runs]
    for scores, label in zip(per_run, labels or [], strict=False):
        scores["source"] = label
    if len(per_run) == 1:
        return per_run[0]
    categories = _ordered({c for s in per_run for c in s["categories"]} - {"all"}) + ["all"]
    mean: dict[str, dict[str, Any]] = {}
    for category in categories:
        found = [s["categories"][category] for s in per_run if category in s["categories"]]
        relative = [f["relative"] for f in found]
        mean[category] = {
            "relative": statistics.fmean(relative),
            "relative_std": statistics.pstdev(relative),
            "reference": statistics.fmean(f["reference"] for f in found),
            "model": statistics.fmean(f["model"] for f in found),
            "runs": len(found),
            "official_rounding": {
                key: round(statistics.fmean(f["official_rounding"][key] for f in found), 1)
                for key in ("relative", "reference", "model")
            },
        }
    return {
        "benchmark": "llava_bench",
        "headline": statistics.fmean(s["categories"]["all"]["official_rounding"]["relative"] for s in per_run),
        "mean_relative": mean["all"]["relative"],
        "std": mean["all"]["relative_std"],
        "categories": mean,
        "unparsed": sum(s["unparsed"] for s in per_run),
        "runs": per_run,
    }


# --- items ----------------------------------------------------------------------------------


def _context_wild(record: Mapping[str, Any]) -> str:
    caption = record.get("caption", "")
    return "\n".join(caption) if isinstance(caption, list) else str(caption)


def _context_coco(record: Mapping[str, Any]) -> str:
    captions = "\n".join(record.get("captions", []))
    boxes = "\n".join(f"{i['category']}: {i['bbox']}" for i in record.get("instances", []))
    return f"{captions}\n\n{boxes}"


def _by_key(path: Path, key: str) -> dict[str, dict[str, Any]]:
    return {str(require(record, key, path, line)): record for line, record in iter_jsonl(path)}


@dataclass(frozen=True)
class LlavaBenchBenchmark:
    """LLaVA-Bench for the runner.

    Arguments:
    images: folder/URL of the images (default: `<source>/images`).
    rules: path of a rule.json to use instead of the packaged copy of LLaVA's.
    temperature: the judge's temperature (LLaVA's 0.2; 0 makes reruns more repeatable).
    retry_unparsable: ask again at RETRY_TEMPERATURES when a reply has no score pair (LLaVA
        does not: it keeps (-1, -1)); off by default so the numbers are LLaVA's.
    runs: reviews per answer (LLaVA reports the mean of 3); scored by `scores_from_runs`.
    """

    name: str = "llava_bench"
    needs_judge: bool = True
    max_new_tokens: int = 1024
    images: str | None = None
    rules: str | None = None
    temperature: float = LLAVA_TEMPERATURE
    retry_unparsable: bool = False
    runs: int = 1

    def load_items(self, source: str, *, limit: int | None = None) -> list[EvalItem]:
        from som.eval.items import Source, take

        src = Source(source)
        if src.exists(WILD_FILES[0]):
            items = self._items(src, WILD_FILES, _context_wild, "llava_bench_")
        elif src.exists(COCO_FILES[0]):
            items = self._items(src, COCO_FILES, _context_coco, "")
        else:
            raise FormatError(
                src.url, f"no LLaVA-Bench questions: expected {WILD_FILES[0]} (In-the-Wild) or {COCO_FILES[0]} (COCO)"
            )
        return take(items, limit)

    def _items(
        self, src: Source, files: tuple[str, str, str], context_of: Callable[[Mapping[str, Any]], str], rule_prefix: str
    ) -> list[EvalItem]:
        """Items of one layout; `files` are (questions, reference answers, contexts by image)."""
        from som import storage
        from som.eval.items import EvalItem, check_unique

        questions_path, answers_path, context_path = (src.local(name) for name in files)
        references = _by_key(answers_path, "question_id")
        contexts = _by_key(context_path, "image")
        image_root = self.images or src.url_of(IMAGE_FOLDER)
        items = []
        for line, record in iter_jsonl(questions_path):
            question_id = str(require(record, "question_id", questions_path, line))
            image = text_field(record, "image", questions_path, line)
            category = text_field(record, "category", questions_path, line)
            if question_id not in references:
                raise FormatError(answers_path, f"no reference answer for question_id {question_id}")
            if image not in contexts:
                raise FormatError(context_path, f"no context for image {image} (question_id {question_id})")
            items.append(
                EvalItem(
                    id=question_id,
                    prompt=text_field(record, "text", questions_path, line),
                    image=storage.join(image_root, image),
                    meta={
                        "category": category,
                        "rule": rule_prefix + category,
                        "context": context_of(contexts[image]),
                        "reference": text_field(references[question_id], "text", answers_path, None),
                    },
                )
            )
        check_unique(items, str(questions_path))
        return items

    def score(
        self,
        items: list[EvalItem],
        answers: dict[str, str],
        *,
        judge: Judge | None = None,
        cache_url: str | None = None,
        allow_partial: bool = False,
    ) -> dict[str, Any]:
        from som.eval.items import answers_for

        if judge is None:
            raise ValueError("llava_bench: scoring needs a judge (som.eval.judge.Judge, LLaVA used gpt-4-0314)")
        rules = load_rules(self.rules)
        answered = answers_for(items, answers, allow_partial=allow_partial, benchmark=self.name)
        todo = [item for item in items if item.id in answered]
        if self.runs < 1:
            raise ValueError(f"llava_bench: runs must be at least 1, got {self.runs}")
        cached = judge.with_cache(cache_url)

        def review_all(run: int) -> list[Review]:
            return cached.map(
                lambda item: review(
                    item,
                    answered[item.id],
                    cached,
                    rules,
                    self.temperature,
                    retry_unparsable=self.retry_unparsable,
                    run=run,
                ),
                todo,
            )

        try:
            runs = [review_all(run) for run in range(self.runs)]
            record = cached.record()
        finally:
            if cached is not judge:
                cached.close()
        return {**scores_from_runs(runs), "judge": {**record, "temperature": self.temperature}}
