"""POPE (object hallucination, COCO random / popular / adversarial) scored like LLaVA's eval_pope.py.

Semantics kept from LLaVA's `llava/eval/eval_pope.py`:

* an answer is cut at its first '.', commas are deleted, the rest is split on single spaces, and
  it counts as "no" when one of the words is exactly 'No', 'not' or 'no'; anything else is "yes"
  (so "Nope" and "NO" are "yes", as in the official script);
* per split: TP/FP/TN/FN with "yes" as the positive class, accuracy, precision, recall, F1 and the
  share of "yes" answers; somflow's headline is the mean F1 over the splits.

Where somflow differs, and why:

* LLaVA pairs the i-th answer of a split (answer-file order) with the i-th line of
  `coco_pope_<split>.json` by position, silently dropping what the shorter list lacks. somflow's
  default (`pairing="question"`) pairs each question of LLaVA's question file
  (`llava_pope_test.jsonl`) with the label whose (image, question) is the same, so answers may
  come in any order and a label file from another POPE commit cannot silently shift the pairs.
  `pairing="positional"` (`--pairing positional`) reproduces eval_pope.py, yes-ratio over all of
  the split's answers included, and counts what it cannot see: `mismatched_pairs` (pairs whose
  label line asks another question), `unmatched_labels` / `unpaired_answers` (the zip's
  leftovers). On LLaVA's files both pairings give identical numbers.
* Every POPE split needs its label file and every question an answer: eval_pope.py scores
  whatever label files the folder holds, so a missing split would silently give another mean.
  `allow_partial` scores what is there and reports `missing_splits` / `unanswered`.
* Malformed input raises `FormatError` naming the file and line; an empty split or a run with no
  "yes" answers scores 0 where the official script divides by zero.

Label files at two AoiDragon/POPE commits (checked against ../shared/reference/pope/):

* e3e3926 (pinned by LLaVA): random has 2910 questions (1500 yes / 1410 no); popular and
  adversarial have 3000. `llava_pope_test.jsonl` lists exactly these, line for line.
* 08d957b (HEAD): fixes the "imange" typo in 44 popular / 58 adversarial questions (labels
  unchanged) and regenerates random with 3000 questions: the same 2910 plus 90 new "no" questions
  interleaved. LLaVA's positional pairing therefore scores LLaVA-1.5-13B's random answers at
  F1 45.65 with HEAD labels instead of 87.14 (mean F1 72.12 instead of the published 85.9), with
  2893 of 2910 pairs mismatched. somflow's (image, question) pairing (typo-tolerant) gives
  87.14 / 85.95 with either commit and reports the 90 HEAD questions nobody asked as
  `unmatched_labels`.

Items (`PopeBenchmark.load_items(source)`), from the folder or URL of the published files in
LLaVA's layout (`playground/data/eval/pope/`):

* `llava_pope_test.jsonl`: LLaVA's questions (ids 1..8910, prompts with PROMPT_SUFFIX); when
  absent, the questions are those of the label files, ids `<split>/<question_id>`, and the
  suffix is appended on its own line as LLaVA does;
* labels `coco_pope_<split>.json` in `coco/` (LLaVA's), `output/coco/` (POPE's repository) or
  the source folder itself;
* images in `val2014/` (COCO val2014 file names), or the `images` folder/URL given to
  `PopeBenchmark`.

`PopeBenchmark.score` rebuilds the question and label records from the items and calls
`score_pope`, so scores are those of `som eval score pope` on the same answers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from som.eval.benchmarks import FormatError, iter_jsonl, require, text_field

if TYPE_CHECKING:
    from som.eval.items import EvalItem, Source
    from som.eval.judge import Judge

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("random", "popular", "adversarial")
"""The COCO splits in the order reports list them."""

PROMPT_SUFFIX = "Answer the question using a single word or phrase."
"""LLaVA's short-answer instruction, appended on its own line to each POPE question."""

LABEL_GLOB = "coco_pope_*.json"

_NO_WORDS = frozenset({"No", "not", "no"})


def normalize_answer(text: str) -> str:
    """Map a free-form answer to 'yes' or 'no' exactly as LLaVA's eval_pope.py does."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if _NO_WORDS.intersection(words) else "yes"


def question_key(image: str, text: str) -> tuple[str, str]:
    """Identity of a POPE question across files: image name plus question text.

    Only the first line of the text counts (LLaVA appends its instruction on a second line),
    case and spacing are ignored, and the "imange" typo fixed in later POPE commits is undone.
    """
    first_line = text.strip().split("\n", 1)[0]
    question = " ".join(first_line.lower().split()).replace("imange", "image")
    return Path(image).name, question


@dataclass(frozen=True)
class PopeQuestion:
    """One line of a LLaVA-style question file (`llava_pope_test.jsonl`)."""

    question_id: str
    image: str
    text: str
    category: str
    line: int


@dataclass(frozen=True)
class PopeLabels:
    """One `coco_pope_<split>.json` file: question key -> True when the object is present."""

    split: str
    path: Path
    labels: Mapping[tuple[str, str], bool]
    order: Sequence[tuple[tuple[str, str], bool]] = ()
    """Every line's (question key, label) in file order, for positional pairing."""


@dataclass(frozen=True)
class PopeSplitScore:
    """Confusion counts and the metrics eval_pope.py prints for one split."""

    split: str
    n: int
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float


@dataclass(frozen=True)
class PopeScores:
    """All splits plus the headline mean F1 (fractions in 0..1, like eval_pope.py)."""

    splits: dict[str, PopeSplitScore]
    mean_f1: float
    pairing: str = "question"
    missing_splits: list[str] = field(default_factory=list)
    unanswered: dict[str, int] = field(default_factory=dict)
    unmatched_labels: dict[str, int] = field(default_factory=dict)
    unpaired_answers: dict[str, int] = field(default_factory=dict)
    mismatched_pairs: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "benchmark": "pope",
            "mean_f1": self.mean_f1,
            "pairing": self.pairing,
            "splits": {name: asdict(score) for name, score in self.splits.items()},
            "missing_splits": self.missing_splits,
            "unanswered": self.unanswered,
            "unmatched_labels": self.unmatched_labels,
            "unpaired_answers": self.unpaired_answers,
            "mismatched_pairs": self.mismatched_pairs,
        }


def load_questions(path: str | Path) -> list[PopeQuestion]:
    """Read a question file with question_id, image, text and category on every line."""
    questions = []
    seen: dict[str, int] = {}
    for line, record in iter_jsonl(path):
        question_id = str(require(record, "question_id", path, line))
        if question_id in seen:
            raise FormatError(path, f"question_id {question_id} repeats line {seen[question_id]}", line)
        seen[question_id] = line
        questions.append(
            PopeQuestion(
                question_id=question_id,
                image=text_field(record, "image", path, line),
                text=text_field(record, "text", path, line),
                category=text_field(record, "category", path, line),
                line=line,
            )
        )
    return questions


def load_answers(path: str | Path) -> dict[str, str]:
    """Read model answers (question_id, text), e.g. LLaVA's model_vqa_loader output."""
    answers: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, record in iter_jsonl(path):
        question_id = str(require(record, "question_id", path, line))
        if question_id in answers:
            raise FormatError(
                path, f"second answer to question_id {question_id} (first on line {first_line[question_id]})", line
            )
        answers[question_id] = text_field(record, "text", path, line)
        first_line[question_id] = line
    return answers


def load_labels(path: str | Path, split: str | None = None) -> PopeLabels:
    """Read one POPE label file (JSON Lines with image, text and label 'yes'/'no')."""
    path = Path(path)
    if split is None:
        split = split_of(path)
    labels: dict[tuple[str, str], bool] = {}
    order: list[tuple[tuple[str, str], bool]] = []
    for line, record in iter_jsonl(path):
        label = text_field(record, "label", path, line).strip().lower()
        if label not in ("yes", "no"):
            raise FormatError(path, f"label must be 'yes' or 'no', got {label!r}", line)
        key = question_key(text_field(record, "image", path, line), text_field(record, "text", path, line))
        if key in labels and labels[key] != (label == "yes"):
            raise FormatError(path, f"question {key[1]!r} on {key[0]} appears twice with different labels", line)
        labels[key] = label == "yes"
        order.append((key, label == "yes"))
    return PopeLabels(split=split, path=path, labels=labels, order=order)


def split_of(path: Path) -> str:
    """'coco_pope_random.json' -> 'random' (the naming LLaVA's script asserts)."""
    stem = path.name
    if not (stem.startswith("coco_pope_") and stem.endswith(".json")):
        raise FormatError(path, "POPE label files are named coco_pope_<split>.json")
    return stem[len("coco_pope_") : -len(".json")]


def load_label_dir(directory: str | Path) -> list[PopeLabels]:
    """All `coco_pope_<split>.json` files in a folder (AoiDragon/POPE's output/coco)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FormatError(directory, "not a folder (expected the folder holding coco_pope_<split>.json)")
    paths = sorted(directory.glob(LABEL_GLOB))
    if not paths:
        raise FormatError(directory, f"no {LABEL_GLOB} label files in this folder")
    return [load_labels(p) for p in paths]


def split_score(split: str, predictions: Sequence[bool], labels: Sequence[bool]) -> PopeSplitScore:
    """Metrics for one split; predictions and labels are True for "yes", in matching order."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    tp = sum(p and g for p, g in zip(predictions, labels, strict=False))
    fp = sum(p and not g for p, g in zip(predictions, labels, strict=False))
    tn = sum(not p and not g for p, g in zip(predictions, labels, strict=False))
    fn = sum(not p and g for p, g in zip(predictions, labels, strict=False))
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PopeSplitScore(
        split=split,
        n=n,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        accuracy=(tp + tn) / n if n else 0.0,
        precision=precision,
        recall=recall,
        f1=f1,
        yes_ratio=sum(predictions) / n if n else 0.0,
    )


def _ordered(splits: Iterable[str]) -> list[str]:
    names = set(splits)
    return [s for s in SPLITS if s in names] + sorted(names.difference(SPLITS))


PAIRINGS: tuple[str, ...] = ("question", "positional")
"""How answers meet labels: by (image, question) (somflow's default) or by position (eval_pope.py)."""


def _pair_by_question(
    split_questions: Sequence[PopeQuestion], answers: Mapping[str, str], labels: PopeLabels, questions_path: str | Path
) -> tuple[list[bool], list[bool], int]:
    """Predictions and labels of the answered questions, matched by question_key; labels asked."""
    predictions: list[bool] = []
    truths: list[bool] = []
    asked: set[tuple[str, str]] = set()
    for q in split_questions:
        key = question_key(q.image, q.text)
        if key not in labels.labels:
            raise FormatError(
                questions_path,
                f"question_id {q.question_id} ({key[1]!r} on {key[0]}) is not in {labels.path}; "
                "are the label files from the POPE commit this question file was built from?",
                q.line,
            )
        asked.add(key)
        if q.question_id in answers:
            predictions.append(normalize_answer(answers[q.question_id]) == "yes")
            truths.append(labels.labels[key])
    return predictions, truths, len(asked)


def _pair_by_position(
    split_questions: Sequence[PopeQuestion], answers: Mapping[str, str], labels: PopeLabels
) -> tuple[PopeSplitScore | None, int, int, int]:
    """eval_pope.py's pairing: the split's answers in answer-file order zipped with label lines.

    Returns the score (None without answers), label lines left without an answer, answers left
    without a label line, and zipped pairs whose label line asks another question than the
    answer's (each a sign that the label file does not belong to the question file). As in
    eval_pope.py, the yes-ratio counts every answer of the split, zipped or not.
    """
    by_id = {q.question_id: q for q in split_questions}
    asked = [(by_id[qid], normalize_answer(text) == "yes") for qid, text in answers.items() if qid in by_id]
    if not asked:
        return None, len(labels.order), 0, 0
    paired = list(zip(asked, labels.order, strict=False))
    score = split_score(labels.split, [p for (_, p), _ in paired], [truth for _, (_, truth) in paired])
    score = replace(score, yes_ratio=sum(p for _, p in asked) / len(asked))
    mismatched = sum(question_key(q.image, q.text) != key for (q, _), (key, _) in paired)
    return score, len(labels.order) - len(paired), len(asked) - len(paired), mismatched


def score_pope(
    questions: Sequence[PopeQuestion],
    answers: Mapping[str, str],
    label_sets: Sequence[PopeLabels],
    *,
    allow_partial: bool = False,
    pairing: str = "question",
    questions_path: str | Path = "questions",
) -> PopeScores:
    """Score answers per split; each split's questions are those whose category names it.

    Every POPE split (and every question category) needs its label file, and every question an
    answer, since the headline is the mean over all three splits; with `allow_partial`, missing
    splits and unanswered questions are left out and reported (`missing_splits`, `unanswered`).
    `pairing` is "question" (by image and question text) or "positional" (LLaVA's eval_pope.py).
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    known_ids = {q.question_id for q in questions}
    strays = [qid for qid in answers if qid not in known_ids]
    if strays:
        raise FormatError(
            questions_path, f"{len(strays)} answered question_ids are not in this question file, e.g. {strays[:3]}"
        )
    by_split = {labels.split: labels for labels in label_sets}
    missing_splits = _ordered(set(SPLITS).union(q.category for q in questions) - set(by_split))
    if missing_splits:
        where = label_sets[0].path.parent if label_sets else "labels"
        if not allow_partial:
            raise FormatError(
                where,
                f"no label file for split(s) {', '.join(missing_splits)} (expected coco_pope_<split>.json); the mean "
                f"F1 "
                "needs every split: pass allow_partial (--allow-partial) to score the others",
            )
        log.warning("no label file for split(s) %s in %s; the mean F1 leaves them out", missing_splits, where)

    splits: dict[str, PopeSplitScore] = {}
    unanswered: dict[str, int] = {}
    unmatched: dict[str, int] = {}
    unpaired: dict[str, int] = {}
    mismatched: dict[str, int] = {}
    for split in _ordered(by_split):
        labels = by_split[split]
        split_questions = [q for q in questions if q.category == split]
        if not split_questions:
            raise FormatError(questions_path, f"no question has category {split!r} (label file {labels.path})")
        missing = [q.question_id for q in split_questions if q.question_id not in answers]
        if missing and not allow_partial:
            raise FormatError(
                questions_path,
                f"{len(missing)} of {len(split_questions)} {split} questions have no answer (e.g. question_id "
                f"{missing[0]}); "
                "pass allow_partial (--allow-partial) to score only the answered ones",
            )
        unanswered[split] = len(missing)
        if pairing == "question":
            predictions, truths, asked = _pair_by_question(split_questions, answers, labels, questions_path)
            score = split_score(split, predictions, truths) if predictions else None
            unmatched[split], unpaired[split], mismatched[split] = len(labels.labels) - asked, 0, 0
        else:
            score, unmatched[split], unpaired[split], mismatched[split] = _pair_by_position(
                split_questions, answers, labels
            )
            if mismatched[split] or unpaired[split]:
                log.warning(
                    "%s: positional pairing put %d answers against label lines of other questions (%d answers past the "
                    "last line); the label file is not the one the question file was built from",
                    labels.path,
                    mismatched[split],
                    unpaired[split],
                )
        if unmatched[split]:
            log.info("%s: %d labelled questions are not paired with an answer", labels.path, unmatched[split])
        if score is None:
            log.warning("split %s has no answered question; it is left out of the mean", split)
            continue
        splits[split] = score

    if not splits:
        raise FormatError(questions_path, "no split could be scored")
    mean_f1 = sum(s.f1 for s in splits.values()) / len(splits)
    return PopeScores(
        splits=splits,
        mean_f1=mean_f1,
        pairing=pairing,
        missing_splits=missing_splits,
        unanswered=unanswered,
        unmatched_labels=unmatched,
        unpaired_answers=unpaired,
        mismatched_pairs=mismatched,
    )


def score_pope_files(
    questions: str | Path,
    answers: str | Path,
    labels_dir: str | Path,
    *,
    allow_partial: bool = False,
    pairing: str = "question",
) -> PopeScores:
    """Score an answers JSONL against a question JSONL and a folder of coco_pope_*.json files."""
    return score_pope(
        load_questions(questions),
        load_answers(answers),
        load_label_dir(labels_dir),
        allow_partial=allow_partial,
        pairing=pairing,
        questions_path=questions,
    )


# --- items ----------------------------------------------------------------------------------

QUESTIONS_FILE = "llava_pope_test.jsonl"
LABEL_FOLDERS: tuple[str, ...] = ("coco", "output/coco", "")
IMAGE_FOLDER = "val2014"


def _with_suffix(text: str) -> str:
    return text if PROMPT_SUFFIX in text else f"{text}\n{PROMPT_SUFFIX}"


@dataclass(frozen=True)
class PopeBenchmark:
    """POPE for the runner: items from the published files, scores from `score_pope`.

    The headline is the mean F1 over random, popular and adversarial, so a source without a
    label file for one of them (or for a question's category) is an error unless
    `allow_missing_splits`.

    Arguments:
    images: folder/URL of the COCO val2014 images (default: `<source>/val2014`).
    allow_missing_splits: score the splits that have label files (the scores list the rest
        under `missing_splits`).
    """

    name: str = "pope"
    needs_judge: bool = False
    max_new_tokens: int = 128
    images: str | None = None
    allow_missing_splits: bool = False

    def load_items(self, source: str, *, limit: int | None = None) -> list[EvalItem]:
        from som.eval.items import EvalItem, Source, check_unique, take

        src = Source(source)
        label_sets = _source_labels(src)
        by_split = {labels.split: labels for labels in label_sets}
        if src.exists(QUESTIONS_FILE):
            questions_path: str | Path = src.local(QUESTIONS_FILE)
            questions = load_questions(questions_path)
        else:
            questions_path = src.url
            questions = [
                PopeQuestion(
                    f"{labels.split}/{record['question_id']}",
                    text_field(record, "image", labels.path, line),
                    _with_suffix(text_field(record, "text", labels.path, line)),
                    labels.split,
                    line,
                )
                for labels in label_sets
                for line, record in iter_jsonl(labels.path)
            ]
        wanted = set(SPLITS).union(q.category for q in questions)
        lacking = _ordered(wanted - set(by_split))
        if lacking and not self.allow_missing_splits:
            raise FormatError(
                src.url,
                f"no label file for split(s) {', '.join(lacking)} (coco_pope_<split>.json); "
                "POPE's mean F1 needs all three: add them, or set allow_missing_splits",
            )
        image_root = self.images or src.url_of(IMAGE_FOLDER)
        from som import storage

        items = []
        for q in questions:
            labels = by_split.get(q.category)
            if labels is None:  # allow_missing_splits
                continue
            key = question_key(q.image, q.text)
            if key not in labels.labels:
                raise FormatError(
                    questions_path,
                    f"question_id {q.question_id} ({key[1]!r} on {key[0]}) is not in {labels.path}",
                    q.line,
                )
            items.append(
                EvalItem(
                    id=q.question_id,
                    prompt=_with_suffix(q.text),
                    image=storage.join(image_root, q.image),
                    meta={"split": q.category, "image_name": q.image, "label": "yes" if labels.labels[key] else "no"},
                )
            )
        check_unique(items, str(questions_path))
        return take(items, limit)

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

        answered = answers_for(items, answers, allow_partial=allow_partial, benchmark=self.name)
        questions = [
            PopeQuestion(item.id, item.meta["image_name"], item.prompt, item.meta["split"], index)
            for index, item in enumerate(items, start=1)
        ]
        labels: dict[str, dict[tuple[str, str], bool]] = {}
        for item in items:
            labels.setdefault(item.meta["split"], {})[question_key(item.meta["image_name"], item.prompt)] = (
                item.meta["label"] == "yes"
            )
        label_sets = [
            PopeLabels(split, Path(f"<items:{split}>"), split_labels) for split, split_labels in labels.items()
        ]
        scores = score_pope(questions, answered, label_sets, allow_partial=True, questions_path="<items>")
        return {**scores.to_dict(), "headline": scores.mean_f1 * 100}


def _source_labels(src: Source) -> list[PopeLabels]:
    """The coco_pope_<split>.json files of the first label folder that has any."""
    for folder in LABEL_FOLDERS:
        names = [
            name
            for name in src.files(*([folder] if folder else []), suffixes=(".json",))
            if "/" not in name and name.startswith("coco_pope_")
        ]
        if names:
            return [load_labels(src.local(*([folder] if folder else []), name)) for name in names]
    raise FormatError(
        src.url, "no POPE label files (coco_pope_<split>.json) in coco/, output/coco/ or the folder itself"
    )
