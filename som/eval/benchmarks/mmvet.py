"""MM-Vet: the official GPT grader's prompt and grade parsing, and its capability scores.

Semantics kept from the official MM-Vet evaluator (`mm-vet_evaluator.py`):

* each answer is graded by a judge model (the official run pins gpt-4-0613) with temperature 0
  and at most 3 output tokens, in one user message (no system message): the evaluator's
  `prompt` string verbatim (instructions, then the few-shot table "Question | Ground truth |
  Prediction | Correctness", ending with a newline; packaged as prompts/mmvet_grader.json),
  a newline, and the row `" | ".join([question, truth, prediction, ""])` whose empty last cell
  the judge fills in; `<AND>` / `<OR>` in the truth get a space on each side;
* a grade is the reply's text before its first space, stripped, read as a float in [0, 1];
  when that fails the judge is asked again with "\nPredict the correctness of the answer
  (digit): " appended, first at temperature 0 and 0.5 higher after every retry; after the
  fourth failed retry the grade is 0. Two differences: the official loop makes one more
  request (at temperature 2.0) whose reply it never parses but stores as the content, which
  somflow skips (same grade; the content kept is the last reply read); and a reply of "nan",
  which the official parser takes and which makes every mean it enters NaN, counts as
  unparsable here (retried, like any other unreadable reply);
* `runs` gradings per answer (the evaluator's `num_run`, 1 by default, 5 in the paper), each
  starting again at temperature 0;
* per run, a capability's score is the mean grade over the samples whose `capability` list in
  mm-vet.json contains it, times 100; total is the mean over all samples, times 100; with
  several runs the reported value is the mean over runs and `std` the population standard
  deviation of the run totals; the official CSVs round all of these to 1 decimal;
* "capability integrations" group samples by their exact set of capabilities. The official
  names join the set in Python's (hash-seed dependent) iteration order, so the same group can
  be called "gen_rec_know" or "rec_know_gen"; somflow always joins in the order of
  `CAPABILITIES`.

The judge HTTP client lives elsewhere: `grade` takes any callable that sends one prompt at one
temperature and returns the reply text, so the retry rule is testable without a network;
`grade_answers` runs it with a som.eval.judge.Judge (one user message, max 3 tokens, cached).

Items (`MMVetBenchmark.load_items(source)`), from the folder or URL of the official release
(`mm-vet/`, LLaVA's `playground/data/eval/mm-vet/`): `mm-vet.json` and the images in `images/`
(or the `images` folder/URL given). Ids are the sample ids ("v1_0"); the prompt is the
question as is, as LLaVA asks it. `MMVetBenchmark.score` grades every answer with the judge,
then scores the grades with `score_mmvet`; the judge model is recorded with the scores.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from som.eval.benchmarks import FormatError, iter_jsonl, read_json, text_field

if TYPE_CHECKING:
    from som.eval.items import EvalItem
    from som.eval.judge import Judge as JudgeModel

log = logging.getLogger(__name__)

CAPABILITIES: tuple[str, ...] = ("rec", "ocr", "know", "gen", "spat", "math")
"""The six core capabilities, in the order of the official CSV (most to fewest samples)."""

JUDGE_MODEL = "gpt-4-0613"
"""The judge the official grader pins; record whichever judge a run actually used."""
JUDGE_MAX_TOKENS = 3
FIRST_TEMPERATURE = 0.0
TEMPERATURE_STEP = 0.5
MAX_RETRIES = 4
"""Retries whose replies are read; the official loop then gives up with a grade of 0."""

PROMPT_FILE = "mmvet_grader.json"
"""The official grader's `prompt` string (instructions plus the few-shot table), kept verbatim
as data: a reworded instruction is a different judge, and its grades are not comparable."""
RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "


@functools.cache
def official_prompt() -> str:
    """The official grader's prompt text, from som/eval/prompts/mmvet_grader.json."""
    text = resources.files("som.eval").joinpath("prompts", PROMPT_FILE).read_text("utf-8")
    return str(json.loads(text)["prompt"])


def spaced_truth(answer: str) -> str:
    """mm-vet.json writes '-1<AND>-5'; the evaluator sends '-1 <AND> -5' (its replace calls)."""
    return answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")


def grading_prompt(question: str, truth: str, prediction: str, *, retry: bool = False) -> str:
    """The judge prompt for one sample, built as the evaluator builds it: the prompt, a newline,
    then the row "question | truth | prediction | " whose empty last cell the judge fills in."""
    row = " | ".join([question, spaced_truth(truth), prediction, ""])
    prompt = official_prompt() + "\n" + row
    return prompt + RETRY_SUFFIX if retry else prompt


def parse_grade(reply: str) -> float | None:
    """The grade in a judge reply (text before the first space, a number in [0, 1]), else None."""
    token = reply.split(" ")[0].strip()
    try:
        value = float(token)
    except ValueError:
        return None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        return None
    return value


@dataclass(frozen=True)
class Grade:
    """One judged sample: the grade, the reply it came from and how many requests it took."""

    score: float
    content: str
    requests: int
    parsed: bool


Judge = Callable[[str, float], str]
"""Sends (prompt, temperature) to the judge model and returns the reply text."""


def grade(question: str, truth: str, prediction: str, ask: Judge) -> Grade:
    """Grade one sample with the official retry rule; `ask` performs the judge request."""
    temperature = FIRST_TEMPERATURE
    reply = ask(grading_prompt(question, truth, prediction), temperature)
    requests = 1
    score = parse_grade(reply)
    retry_prompt = grading_prompt(question, truth, prediction, retry=True)
    while score is None and requests <= MAX_RETRIES:
        reply = ask(retry_prompt, temperature)
        requests += 1
        temperature += TEMPERATURE_STEP
        score = parse_grade(reply)
    if score is None:
        log.warning("judge gave no usable grade after %d requests; grading 0: %r", requests, reply)
        return Grade(score=0.0, content=reply, requests=requests, parsed=False)
    return Grade(score=score, content=reply.split(" ")[0].strip(), requests=requests, parsed=True)


# --- data files -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MMVetSample:
    """One entry of mm-vet.json."""

    sample_id: str
    question: str
    answer: str
    capabilities: frozenset[str]
    image: str


def load_samples(path: str | Path) -> dict[str, MMVetSample]:
    """mm-vet.json: {"v1_0": {"imagename", "question", "answer", "capability": [...]}, ...}."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise FormatError(path, "expected a JSON object keyed by sample id (v1_0, v1_1, ...)")
    samples = {}
    for sample_id, entry in data.items():
        if not isinstance(entry, dict):
            raise FormatError(path, f"sample {sample_id}: expected an object")
        where = f"sample {sample_id}"
        caps = entry.get("capability")
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise FormatError(path, f"{where}: 'capability' must be a non-empty list of names")
        try:
            samples[sample_id] = MMVetSample(
                sample_id=sample_id,
                question=str(entry["question"]),
                answer=str(entry["answer"]),
                capabilities=frozenset(caps),
                image=str(entry.get("imagename", "")),
            )
        except KeyError as exc:
            raise FormatError(path, f"{where}: missing field {exc.args[0]!r}") from None
    return samples


def load_grades(path: str | Path) -> dict[str, list[float]]:
    """A grader output file: {"v1_0": {"model": [...], "content": [...], "score": [0.0, ...]}, ...}.

    A bare number per sample is accepted too (one run).
    """
    data = read_json(path)
    if not isinstance(data, dict):
        raise FormatError(path, "expected a JSON object keyed by sample id")
    grades = {}
    for sample_id, entry in data.items():
        scores: Any = entry.get("score") if isinstance(entry, dict) else entry
        if isinstance(scores, (int, float)) and not isinstance(scores, bool):
            scores = [scores]
        if (
            not isinstance(scores, list)
            or not scores
            or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores)
        ):
            raise FormatError(path, f"sample {sample_id}: 'score' must be a non-empty list of numbers")
        grades[sample_id] = [float(s) for s in scores]
    return grades


def load_subset(path: str | Path) -> list[str]:
    """A JSON list of sample ids, e.g. the official bard_set.json."""
    data = read_json(path)
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise FormatError(path, "expected a JSON list of sample ids")
    return data


def llava_answers_to_results(path: str | Path) -> dict[str, str]:
    """LLaVA answers JSONL -> the grader's input {"v1_<question_id>": answer}."""
    results = {}
    for line, record in iter_jsonl(path):
        if "question_id" not in record:
            raise FormatError(path, "missing field 'question_id'", line)
        results[f"v1_{record['question_id']}"] = text_field(record, "text", path, line)
    return results


# --- scores ---------------------------------------------------------------------------------


def integration_name(capabilities: Iterable[str]) -> str:
    """Stable name of a capability set: known capabilities in CAPABILITIES order, then others."""
    caps = set(capabilities)
    known = [c for c in CAPABILITIES if c in caps]
    return "_".join(known + sorted(caps.difference(CAPABILITIES)))


def round_like_numpy(value: float, decimals: int = 1) -> float:
    """np.round: scale, round half to even, unscale (the official CSVs use it)."""
    scale = 10**decimals
    return round(value * scale) / scale


@dataclass(frozen=True)
class MMVetScores:
    """Mean grade *100 per capability, per capability integration and overall."""

    total: float
    capabilities: dict[str, float]
    integrations: dict[str, float]
    counts: dict[str, int]
    integration_counts: dict[str, int]
    run_totals: list[float]
    std: float
    samples: int
    judge_models: list[str] = field(default_factory=list)

    def rounded(self) -> dict[str, object]:
        """The numbers as the official CSVs print them (1 decimal)."""
        return {
            "total": round_like_numpy(self.total),
            "std": round_like_numpy(self.std),
            "runs": [round_like_numpy(t) for t in self.run_totals],
            "capabilities": {k: round_like_numpy(v) for k, v in self.capabilities.items()},
            "integrations": {k: round_like_numpy(v) for k, v in self.integrations.items()},
        }

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"benchmark": "mmvet", **asdict(self)}
        out["official_rounding"] = self.rounded()
        return out


def score_mmvet(
    samples: Mapping[str, MMVetSample],
    grades: Mapping[str, Sequence[float]],
    *,
    subset: Iterable[str] | None = None,
    runs: int | None = None,
    grades_path: str | Path = "grades",
) -> MMVetScores:
    """Capability scores from per-sample grades (every selected sample must be graded)."""
    wanted = list(samples) if subset is None else list(subset)
    unknown = [s for s in wanted if s not in samples]
    if unknown:
        raise FormatError(grades_path, f"{len(unknown)} subset ids are not in mm-vet.json, e.g. {unknown[:3]}")
    strays = [s for s in grades if s not in samples]
    if strays:
        raise FormatError(grades_path, f"{len(strays)} graded ids are not in mm-vet.json, e.g. {strays[:3]}")
    missing = [s for s in wanted if s not in grades]
    if missing:
        raise FormatError(grades_path, f"{len(missing)} samples have no grade, e.g. {missing[:3]}")
    if not wanted:
        raise FormatError(grades_path, "no samples to score")
    available = min(len(grades[s]) for s in wanted)
    runs = available if runs is None else runs
    if runs < 1 or runs > available:
        raise FormatError(grades_path, f"asked for {runs} runs but some samples have only {available} grades")
    for sample_id in wanted:
        for value in grades[sample_id][:runs]:
            if not 0.0 <= value <= 1.0:
                raise FormatError(grades_path, f"sample {sample_id}: grade {value} is outside [0, 1]")

    cap_counts: Counter[str] = Counter()
    int_counts: Counter[str] = Counter()
    for sample_id in wanted:
        caps = samples[sample_id].capabilities
        cap_counts.update(caps)
        int_counts[integration_name(caps)] += 1

    cap_sums = {c: [0.0] * runs for c in cap_counts}
    int_sums = {c: [0.0] * runs for c in int_counts}
    totals = [0.0] * runs
    for sample_id in wanted:
        caps = samples[sample_id].capabilities
        name = integration_name(caps)
        for run in range(runs):
            value = grades[sample_id][run]
            for cap in caps:
                cap_sums[cap][run] += value
            int_sums[name][run] += value
            totals[run] += value

    def mean_percent(sums: list[float], count: int) -> float:
        return statistics.fmean(s / count * 100 for s in sums)

    run_totals = [t / len(wanted) * 100 for t in totals]
    cap_order = sorted(cap_counts, key=lambda c: (-cap_counts[c], _cap_rank(c)))
    int_order = sorted(int_counts, key=lambda n: -int_counts[n])  # stable: first seen wins ties
    return MMVetScores(
        total=statistics.fmean(run_totals),
        capabilities={c: mean_percent(cap_sums[c], cap_counts[c]) for c in cap_order},
        integrations={n: mean_percent(int_sums[n], int_counts[n]) for n in int_order},
        counts={c: cap_counts[c] for c in cap_order},
        integration_counts={n: int_counts[n] for n in int_order},
        run_totals=run_totals,
        std=statistics.pstdev(run_totals),
        samples=len(wanted),
    )


def _cap_rank(cap: str) -> int:
    return CAPABILITIES.index(cap) if cap in CAPABILITIES else len(CAPABILITIES)


def judge_models_of(path: str | Path) -> list[str]:
    """The distinct judge model names recorded in a grader output file."""
    data = read_json(path)
    models: set[str] = set()
    if isinstance(data, dict):
        for entry in data.values():
            if isinstance(entry, dict) and isinstance(entry.get("model"), list):
                models.update(str(m) for m in entry["model"])
    return sorted(models)


def score_mmvet_files(
    gt: str | Path, grades: str | Path, *, subset: str | Path | None = None, runs: int | None = None
) -> MMVetScores:
    """Score a grader output JSON against mm-vet.json (optionally on a subset such as bard_set)."""
    scores = score_mmvet(
        load_samples(gt),
        load_grades(grades),
        subset=load_subset(subset) if subset is not None else None,
        runs=runs,
        grades_path=grades,
    )
    return replace(scores, judge_models=judge_models_of(grades))


# --- judging and items ----------------------------------------------------------------------

GT_FILE = "mm-vet.json"
IMAGE_FOLDER = "images"


def grade_answers(
    samples: Mapping[str, MMVetSample], answers: Mapping[str, str], judge: JudgeModel, runs: int = 1
) -> dict[str, list[Grade]]:
    """Grade every answered sample `runs` times with the official rule (the evaluator's
    `num_run`: 1 by default, 5 in the paper), `judge.max_concurrency` samples at a time.

    Each run starts again at temperature 0, as the official loop does; runs after the first
    are cached under their own key (`Judge.ask(run=...)`), so they are fresh requests."""

    def grade_all_runs(sample_id: str) -> list[Grade]:
        sample = samples[sample_id]
        return [
            grade(
                sample.question,
                sample.answer,
                answers[sample_id],
                functools.partial(judge.ask, max_tokens=JUDGE_MAX_TOKENS, run=run),
            )
            for run in range(runs)
        ]

    ids = [sample_id for sample_id in samples if sample_id in answers]
    grades = judge.map(grade_all_runs, ids)
    return dict(zip(ids, grades, strict=True))


def grader_output(grades: Mapping[str, Sequence[Grade]], model: str) -> dict[str, dict[str, list[Any]]]:
    """The official grader's file format ({id: {model, content, score}}, one list entry per run);
    `load_grades` reads it."""
    return {
        sample_id: {
            "model": [model] * len(runs),
            "content": [g.content for g in runs],
            "score": [g.score for g in runs],
        }
        for sample_id, runs in grades.items()
    }


@dataclass(frozen=True)
class MMVetBenchmark:
    """MM-Vet for the runner: a judge grades each answer, capabilities are averaged.

    Arguments:
    images: folder/URL of the MM-Vet images (default: `<source>/images`).
    runs: gradings per answer, averaged (the evaluator's `num_run`: 1 by default, 5 in the
        MM-Vet paper); `std` is then the population std of the run totals.
    """

    name: str = "mmvet"
    needs_judge: bool = True
    max_new_tokens: int = 1024
    images: str | None = None
    runs: int = 1

    def load_items(self, source: str, *, limit: int | None = None) -> list[EvalItem]:
        from som import storage
        from som.eval.items import EvalItem, Source, take

        src = Source(source)
        samples = load_samples(src.local(GT_FILE))
        image_root = self.images or src.url_of(IMAGE_FOLDER)
        items = [
            EvalItem(
                id=s.sample_id,
                prompt=s.question,
                image=storage.join(image_root, s.image) if s.image else None,
                meta={"answer": s.answer, "capabilities": sorted(s.capabilities)},
            )
            for s in samples.values()
        ]
        return take(items, limit)

    def score(
        self,
        items: list[EvalItem],
        answers: dict[str, str],
        *,
        judge: JudgeModel | None = None,
        cache_url: str | None = None,
        allow_partial: bool = False,
    ) -> dict[str, Any]:
        from som.eval.items import answers_for

        if judge is None:
            raise ValueError("mmvet: scoring needs a judge (som.eval.judge.Judge, e.g. model gpt-4-0613)")
        answered = answers_for(items, answers, allow_partial=allow_partial, benchmark=self.name)
        samples = {
            item.id: MMVetSample(
                item.id, item.prompt, item.meta["answer"], frozenset(item.meta["capabilities"]), item.image or ""
            )
            for item in items
            if item.id in answered
        }
        if self.runs < 1:
            raise ValueError(f"mmvet: runs must be at least 1, got {self.runs}")
        cached = judge.with_cache(cache_url)
        try:
            grades = grade_answers(samples, answered, cached, runs=self.runs)
            record = cached.record()
        finally:
            if cached is not judge:
                cached.close()
        scores = score_mmvet(samples, {s: [g.score for g in runs] for s, runs in grades.items()}, grades_path="<judge>")
        scores = replace(scores, judge_models=[judge.model])
        return {
            **scores.to_dict(),
            "headline": scores.total,
            "judge": record,
            "unparsed_grades": sum(not g.parsed for runs in grades.values() for g in runs),
            "grades": grader_output(grades, judge.model),
        }
