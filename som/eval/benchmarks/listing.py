"""The SoM listing probe: can the model name every numbered tag of a held-out marked image?

SoM-LLaVA's "list items one by one" skill, measured directly: the model gets a Set-of-Mark
image whose tags have known names and SoM-LLaVA's listing prompt (LISTING_PROMPT, kept apart
from the training pool in som/data/prompts/listing_questions.txt so the probe does not reward
memorised instructions), and answers with "1. name" lines.

Scoring:

* an answer is parsed into (tag number, name) pairs, one per line that starts with a number
  followed by '.', ')', ':' or ']' ("1. dog", "2) a red car", "**3.** person: a man in blue");
  a name stops at its first ':' (somflow's training answers add ": description" there);
* names are normalised on both sides: lower case, '_' and '-' as spaces, surrounding
  punctuation and a leading article (a/an/the) dropped, and the last word made singular by a
  simple rule (a few irregular plurals, then -ies -> -y, -ches/-shes/-xes/-zes/-sses -> drop
  "es", else a final "s" not after s/u/i dropped) so "2. dogs" matches "dog";
* tag level, micro-averaged over all images: precision = right pairs / predicted pairs,
  recall = right pairs / tags, F1; a pair is right when both number and name match;
* exact-order accuracy: the share of images whose parsed pairs are exactly the tags, in tag
  order, nothing missing, nothing extra;
* tags without a name in the marks (no `category`) cannot be checked: pairs with their number
  are ignored, neither right nor wrong.

Items (`ListingBenchmark.load_items(source)`), from a folder or URL that `som mark` wrote
(`<name>.json` beside `<name>.jpg|png`; with `--masks` every tag carries its COCO `category`)
or a SoM dataset (`marks/<sha256>.json` + `.jpg`). Images whose marks were skipped, or that
have no named tag, are left out. The images are already marked: the items carry
`meta["premarked"]`, so the "w/ tags" variant leaves them as they are. Use images that no
training mix contains: the probe is only meaningful on held-out images.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from som.eval.benchmarks import FormatError

if TYPE_CHECKING:
    from som.eval.items import EvalItem, Source
    from som.eval.judge import Judge

log = logging.getLogger(__name__)

LISTING_PROMPT = (
    "I have labeled a bright numeric ID at the center for each visual object in the image. "
    "Please enumerate their names."
)
"""SoM-LLaVA's listing instruction."""

_LINE = re.compile(
    r"^\s*(?:[-*\u2022]\s*)?(?:\*\*)?\s*(?:tag\s*)?[\[(#]?\s*(\d+)\s*(?:[.):\]]|\*\*)+\s*(.*?)\s*$", re.IGNORECASE
)
_ARTICLES = ("a ", "an ", "the ")
_IRREGULAR = {
    "people": "person",
    "men": "man",
    "women": "woman",
    "children": "child",
    "mice": "mouse",
    "knives": "knife",
    "leaves": "leaf",
    "feet": "foot",
    "teeth": "tooth",
    "geese": "goose",
    "shelves": "shelf",
    "wolves": "wolf",
}


def singular(word: str) -> str:
    """A simple English singular; applied to both sides, so consistency matters more than grammar."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "zes", "sses")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def normalize_name(name: str) -> str:
    """Lower case, no surrounding punctuation or leading article, last word singular."""
    text = name.lower().replace("_", " ").replace("-", " ").replace("*", " ")
    text = " ".join(text.split()).strip(" .,;:!?'\"`()[]")
    for article in _ARTICLES:
        if text.startswith(article):
            text = text[len(article) :]
            break
    head, _, last = text.rpartition(" ")
    last = singular(last)
    return f"{head} {last}" if head else last


def parse_listing(answer: str) -> list[tuple[int, str]]:
    """(tag number, normalised name) for every "N. name" line, in answer order."""
    pairs = []
    for line in answer.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        name = normalize_name(match.group(2).split(":", 1)[0])
        if name:
            pairs.append((int(match.group(1)), name))
    return pairs


@dataclass(frozen=True)
class ListingCounts:
    """Pair counts of a set of images, and how many were listed exactly."""

    true_positives: int = 0
    predicted: int = 0
    tags: int = 0
    exact: int = 0
    images: int = 0

    def add(self, other: ListingCounts) -> ListingCounts:
        return ListingCounts(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple[int, ...]:
        return (self.true_positives, self.predicted, self.tags, self.exact, self.images)

    def metrics(self) -> dict[str, float | int]:
        precision = self.true_positives / self.predicted if self.predicted else 0.0
        recall = self.true_positives / self.tags if self.tags else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "exact_order_accuracy": self.exact / self.images if self.images else 0.0,
            "true_positives": self.true_positives,
            "predicted": self.predicted,
            "tags": self.tags,
            "images": self.images,
        }


def score_answer(tags: Sequence[tuple[int, str | None]], answer: str) -> ListingCounts:
    """Counts for one image: `tags` are (number, name or None) in tag order."""
    gold = [(number, normalize_name(name)) for number, name in tags if name]
    ignored = {number for number, name in tags if not name}
    predicted = [pair for pair in parse_listing(answer) if pair[0] not in ignored]
    unique = set(predicted)
    right = len(unique & set(gold))
    return ListingCounts(
        true_positives=right, predicted=len(unique), tags=len(gold), exact=int(predicted == gold), images=1
    )


def score_listing(tag_lists: Iterable[Sequence[tuple[int, str | None]]], answers: Iterable[str]) -> dict[str, Any]:
    """Tag-level precision / recall / F1 (micro) and exact-order accuracy over images."""
    total = ListingCounts()
    unparsed = 0
    for tags, answer in zip(tag_lists, answers, strict=True):
        total = total.add(score_answer(tags, answer))
        unparsed += not parse_listing(answer)
    return {**total.metrics(), "unparsed_answers": unparsed}


# --- items ----------------------------------------------------------------------------------

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_NOT_MARKS = frozenset({"dataset.json", "card.json"})


def _marks_folder(src: Source) -> str:
    return "marks" if src.files("marks", suffixes=(".json",)) else ""


def marks_tags(marks: dict[str, Any], where: str) -> list[tuple[int, str | None]]:
    """(number, category) per tag in tag order; refuses non-numeric tag labels."""
    tags = []
    for mark in sorted(marks.get("marks") or [], key=lambda m: m["id"]):
        label = str(mark.get("label", mark["id"]))
        if not label.isdigit():
            raise FormatError(
                where,
                f"tag label {label!r} is not a number; the listing probe needs images marked with label_mode 'number'",
            )
        category = mark.get("category")
        tags.append((int(label), str(category) if category else None))
    return tags


@dataclass(frozen=True)
class ListingBenchmark:
    """The SoM listing probe for the runner (no judge: names are compared directly)."""

    name: str = "listing"
    needs_judge: bool = False
    max_new_tokens: int = 1024
    prompt: str = LISTING_PROMPT

    def load_items(self, source: str, *, limit: int | None = None) -> list[EvalItem]:
        from som.eval.items import EvalItem, Source, take

        src = Source(source)
        folder = _marks_folder(src)
        parts = [folder] if folder else []
        files = src.files(*parts)
        images = {name.rsplit(".", 1)[0]: name for name in files if name.lower().endswith(_IMAGE_SUFFIXES)}
        items: list[EvalItem] = []
        unnamed = skipped = 0
        for name in files:
            if not name.endswith(".json") or name.rsplit("/", 1)[-1] in _NOT_MARKS:
                continue
            stem = name[: -len(".json")]
            where = src.url_of(*parts, name)
            try:
                marks = json.loads(src.local(*parts, name).read_text("utf-8"))
            except json.JSONDecodeError as exc:
                raise FormatError(where, f"not valid JSON ({exc.msg})") from exc
            if not isinstance(marks, dict) or "marks" not in marks:
                continue
            if marks.get("skipped") or stem not in images:
                skipped += 1
                continue
            tags = marks_tags(marks, where)
            if not any(category for _, category in tags):
                unnamed += 1
                continue
            items.append(
                EvalItem(
                    id=stem,
                    prompt=self.prompt,
                    image=src.url_of(*parts, images[stem]),
                    meta={"tags": [list(t) for t in tags], "premarked": True},
                )
            )
        if skipped or unnamed:
            log.warning(
                "listing: left out %d skipped/imageless and %d unnamed marked images in %s", skipped, unnamed, src.url
            )
        if not items:
            raise FormatError(
                src.url,
                "no marked image with named tags (marks JSON with 'category' per tag, as `som mark --masks` writes)",
            )
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
        scored = [item for item in items if item.id in answered]
        result = score_listing(
            ([(int(n), c) for n, c in item.meta["tags"]] for item in scored), (answered[item.id] for item in scored)
        )
        return {"benchmark": "listing", **result, "headline": result["f1"] * 100}
