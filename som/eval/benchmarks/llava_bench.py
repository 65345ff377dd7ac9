"""LLaVA-Bench (In-the-Wild, and its COCO variant): a GPT judge compares the model's answer with a
reference answer; the score is the model's mean judge score relative to the reference's.

Semantics kept from LLaVA's `eval_gpt_review_bench.py` / `eval_gpt_review_visual.py` and
`summarize_gpt_review.py`:

* the judge gets a system message ("You are a helpful and precise assistant ...") and one user
  message: `[Context]` (In-the-Wild: the image's caption; COCO: its five captions, a blank line,
  then one "category: [x1, y1, x2, y2]" line per instance), `[Question]`, the reference answer
  as Assistant 1, the model's answer as Assistant 2, and `[System]` with the category's rule
  prompt from LLaVA's rule.json (`llava_bench_<category>` In-the-Wild, `<category>` for COCO);
  max_tokens 1024; LLaVA's judge was gpt-4-0314;
* the reply's first line, commas turned into spaces, split on single spaces, must be exactly two
  numbers: (reference score, model score);
* per category and over all questions ("all"): mean reference score and mean model score;
  relative score = mean(model) / mean(reference) * 100; LLaVA prints it rounded to 1 decimal
  after rounding both means to 3 decimals (`official_rounding` repeats that).

Where somflow differs, and why:

* Unparsable replies. LLaVA stores (-1, -1) and averages it in, which lowers both means (and
  the ratio, unpredictably) for every failure. somflow asks again, at temperatures 0.5 then 1.0
  (a repeat at the same temperature would be a cache hit with the same reply), and if the reply
  still cannot be read, leaves the question out of the means and counts it in `unparsed`.
  `llava_compat` gives the numbers with LLaVA's (-1, -1) rule on the same replies.
* Temperature: LLaVA reviews at 0.2; somflow's judge works at 0 (`temperature` to change it),
  so a rerun gives the same review and the cache applies.
* Pairing: LLaVA zips the question file with the two answer files line by line; somflow pairs
  by question_id, so answer order does not matter. A caption given as a list is joined with
  newlines (LLaVA's join); a caption given as a string is used as is.

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
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
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
RETRY_TEMPERATURES: tuple[float, ...] = (0.5, 1.0)
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
    if not isinstance(data, dict) or not all(isinstance(r, dict) and "prompt" in r and "role" in r for r in data.values()):
        raise FormatError(path or "llava_bench_rules.json", "expected {key: {role, prompt}} rules")
    return data


def review_prompt(context: str, question: str, reference: str, answer: str, rule: Mapping[str, str]) -> str:
    """The user message of one review: context, question, both answers, the rule."""
    role = rule["role"]
    return (f"[Context]\n{context}\n\n"
            f"[Question]\n{question}\n\n"
            f"[{role} 1]\n{reference}\n\n[End of {role} 1]\n\n"
            f"[{role} 2]\n{answer}\n\n[End of {role} 2]\n\n"
            f"[System]\n{rule['prompt']}\n\n")


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
    """One judged question: the scores (None when unparsable), the reply, requests made."""

    question_id: str
    category: str
    scores: tuple[float, float] | None
    content: str
    requests: int


def review(item: EvalItem, answer: str, judge: Judge, rules: Mapping[str, Mapping[str, str]],
           temperature: float = 0.0) -> Review:
    """Judge one answer; an unparsable reply is asked again at each RETRY_TEMPERATURES."""
    rule_key = item.meta["rule"]
    if rule_key not in rules:
        raise FormatError("rules", f"question {item.id}: no rule {rule_key!r} (have {sorted(rules)})")
    prompt = review_prompt(item.meta["context"], item.prompt, item.meta["reference"], answer, rules[rule_key])
    requests = 0
    for step in (temperature, *RETRY_TEMPERATURES):
        content = judge.ask(prompt, step, system=SYSTEM_PROMPT, max_tokens=JUDGE_MAX_TOKENS)
        requests += 1
        scores = parse_score_pair(content)
        if scores is not None:
            return Review(item.id, item.meta["category"], scores, content, requests)
    log.warning("llava_bench: judge reply for question %s is unparsable after %d requests: %r",
                item.id, requests, content[:200])
    return Review(item.id, item.meta["category"], None, content, requests)


# --- summary --------------------------------------------------------------------------------


def _ordered(categories: Sequence[str]) -> list[str]:
    return [c for c in CATEGORIES if c in categories] + sorted(set(categories) - set(CATEGORIES))


def summarize(reviews: Sequence[Review], *, llava_failures: bool = False) -> dict[str, dict[str, float]]:
    """Per category and "all": relative score (%), reference and model means x10, count.

    With `llava_failures`, unparsable reviews count as (-1, -1), as summarize_gpt_review.py
    does; otherwise they are left out."""
    pairs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in reviews:
        pair = r.scores if r.scores is not None else ((-1.0, -1.0) if llava_failures else None)
        if pair is None:
            continue
        pairs[r.category].append(pair)
        pairs["all"].append(pair)
    summary = {}
    for category in [*_ordered([c for c in pairs if c != "all"]), "all"]:
        values = pairs.get(category)
        if not values:
            continue
        reference = sum(p[0] for p in values) / len(values)
        model = sum(p[1] for p in values) / len(values)
        summary[category] = {
            "relative": model / reference * 100 if reference else 0.0,
            "reference": reference * 10,
            "model": model * 10,
            "n": len(values),
            "official_rounding": round(round(model, 3) / round(reference, 3) * 100, 1) if round(reference, 3) else 0.0,
        }
    return summary


def load_reviews(path: str | Path) -> list[Review]:
    """LLaVA's review JSONL (question_id, category, content, tuple); a -1 -1 tuple is unparsed."""
    reviews = []
    for line, record in iter_jsonl(path):
        pair = require(record, "tuple", path, line)
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, (int, float)) for v in pair)):
            raise FormatError(path, "'tuple' must be two numbers", line)
        category = str(record.get("category", "all")).removeprefix("llava_bench_")
        scores = None if pair == [-1, -1] else (float(pair[0]), float(pair[1]))
        reviews.append(Review(str(require(record, "question_id", path, line)), category, scores,
                              str(record.get("content", "")), 1))
    return reviews


def scores_from_reviews(reviews: Sequence[Review]) -> dict[str, Any]:
    """The JSON scores of a set of reviews; headline = the overall relative score."""
    summary = summarize(reviews)
    if "all" not in summary:
        raise ValueError("llava_bench: no review has a usable score")
    return {
        "benchmark": "llava_bench",
        "headline": summary["all"]["relative"],
        "categories": summary,
        "llava_compat": summarize(reviews, llava_failures=True),
        "unparsed": sum(r.scores is None for r in reviews),
        "reviews": [{"question_id": r.question_id, "category": r.category, "tuple": list(r.scores or (-1, -1)),
                     "content": r.content, "requests": r.requests} for r in reviews],
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
    temperature: the judge's first temperature (LLaVA: 0.2).
    """

    name: str = "llava_bench"
    needs_judge: bool = True
    images: str | None = None
    rules: str | None = None
    temperature: float = 0.0

    def load_items(self, source: str, *, limit: int | None = None) -> list[EvalItem]:
        from som.eval.items import Source, take

        src = Source(source)
        if src.exists(WILD_FILES[0]):
            items = self._items(src, WILD_FILES, _context_wild, "llava_bench_")
        elif src.exists(COCO_FILES[0]):
            items = self._items(src, COCO_FILES, _context_coco, "")
        else:
            raise FormatError(src.url, f"no LLaVA-Bench questions: expected {WILD_FILES[0]} (In-the-Wild) "
                              f"or {COCO_FILES[0]} (COCO)")
        return take(items, limit)

    def _items(self, src: Source, files: tuple[str, str, str], context_of: Callable[[Mapping[str, Any]], str],
               rule_prefix: str) -> list[EvalItem]:
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
            items.append(EvalItem(
                id=question_id,
                prompt=text_field(record, "text", questions_path, line),
                image=storage.join(image_root, image),
                meta={"category": category, "rule": rule_prefix + category,
                      "context": context_of(contexts[image]),
                      "reference": text_field(references[question_id], "text", answers_path, None)},
            ))
        check_unique(items, str(questions_path))
        return items

    def score(self, items: list[EvalItem], answers: dict[str, str], *, judge: Judge | None = None,
              cache_url: str | None = None, allow_partial: bool = False) -> dict[str, Any]:
        from som.eval.items import answers_for

        if judge is None:
            raise ValueError("llava_bench: scoring needs a judge (som.eval.judge.Judge, LLaVA used gpt-4-0314)")
        rules = load_rules(self.rules)
        answered = answers_for(items, answers, allow_partial=allow_partial, benchmark=self.name)
        todo = [item for item in items if item.id in answered]
        cached = judge.with_cache(cache_url)
        try:
            reviews = cached.map(lambda item: review(item, answered[item.id], cached, rules, self.temperature), todo)
            record = cached.record()
        finally:
            if cached is not judge:
                cached.close()
        return {**scores_from_reviews(reviews), "judge": record}
