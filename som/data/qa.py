"""QA records: single- or multi-turn questions that need the tags, answered only from the
metadata (names, residual masks), so every answer is true of what the marks JSON records.

Every random choice comes from an RNG seeded by (seed, image sha256, "qa") (`som.data.seeding`):
the same image gets the same records whatever else is in the batch or in which order it is
processed.

Spatial rules (all from residual masks, in marked-image pixels):
- left/right (above/below is the same with y and heights): decided only when the centroids'
  x differ by at least `position_margin` x image width AND the bounding boxes' x extents
  overlap by at most `max_extent_overlap` x the narrower extent. The first keeps near-ties
  out; the second drops pairs where one object wraps around the other (a table and the cup on
  it), whose centroids can differ although neither is "to the left". Other pairs are skipped.
- larger/smaller: residual pixel areas differ by a factor of at least `area_ratio`.
- near: the gap between two tags is the smallest Euclidean distance between their pixels
  (1 = touching). Tags within `near_fraction` x the image's short side are near; the question
  is skipped when any tag lies in the band up to `near_band` times that distance (unclear),
  when no tag is near, or when more than `max_near` are.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from som.data.english import article, join_words, plural
from som.data.llava import image_reference, llava_record
from som.data.naming import Names, names_by_id
from som.data.seeding import seeded_rng
from som.mark import rle

QA_KINDS = ("what_is", "which_tag", "count", "left_of", "above", "larger", "near")


@dataclass(frozen=True)
class TagGeometry:
    """One tag's residual mask: bbox (x, y, w, h), pixel area, centroid (x, y) and the crop."""

    tag: int
    label: str
    bbox: tuple[int, int, int, int]
    area: int
    centroid: tuple[float, float]
    crop: np.ndarray = field(repr=False)


def scene_geometry(marks: Mapping[str, Any]) -> list[TagGeometry]:
    """Geometry of every tag, decoded from its RLE (only the bbox crop is kept)."""
    shapes = []
    for mark in sorted(marks.get("marks") or [], key=lambda m: m["id"]):
        x, y, w, h = (int(v) for v in mark["bbox"])
        crop = rle.decode(mark["segmentation"])[y : y + h, x : x + w]
        rows, cols = np.nonzero(crop)
        if rows.size == 0:
            raise ValueError(f"tag {mark['id']} has an empty mask")
        centroid = (float(x + cols.mean()), float(y + rows.mean()))
        shapes.append(TagGeometry(mark["id"], str(mark["label"]), (x, y, w, h), int(rows.size), centroid, crop))
    return shapes


@dataclass(frozen=True)
class QAConfig:
    """Arguments (see the module docstring for the spatial rules):
    records_per_image: QA records made per image (fewer when questions run out).
    max_turns: each record gets 1..max_turns question/answer turns (1: all single-turn).
    kinds: which question kinds may be asked.
    """

    seed: int = 0
    records_per_image: int = 2
    max_turns: int = 3
    kinds: tuple[str, ...] = QA_KINDS
    position_margin: float = 0.05
    max_extent_overlap: float = 0.25
    area_ratio: float = 1.5
    near_fraction: float = 0.05
    near_band: float = 2.0
    max_near: int = 4
    id_prefix: str = "som-qa"

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(QA_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"QA kinds must be a non-empty subset of {QA_KINDS}; got {self.kinds}")
        if self.records_per_image < 0 or self.max_turns < 1:
            raise ValueError("records_per_image must be >= 0 and max_turns >= 1")
        if self.area_ratio <= 1.0 or self.near_band < 1.0:
            raise ValueError("area_ratio must be > 1 and near_band >= 1")


def horizontal_order(a: TagGeometry, b: TagGeometry, width: int, config: QAConfig) -> int:
    """-1 if a is left of b, 1 if right of it, 0 when the rule cannot decide."""
    return _axis_order(a.centroid[0], b.centroid[0], a.bbox[0], a.bbox[2], b.bbox[0], b.bbox[2], width, config)


def vertical_order(a: TagGeometry, b: TagGeometry, height: int, config: QAConfig) -> int:
    """-1 if a is above b, 1 if below it, 0 when the rule cannot decide."""
    return _axis_order(a.centroid[1], b.centroid[1], a.bbox[1], a.bbox[3], b.bbox[1], b.bbox[3], height, config)


def _axis_order(ca: float, cb: float, a0: int, alen: int, b0: int, blen: int, side: int, config: QAConfig) -> int:
    if abs(cb - ca) < config.position_margin * side:
        return 0
    overlap = max(0, min(a0 + alen, b0 + blen) - max(a0, b0))
    if overlap > config.max_extent_overlap * min(alen, blen):
        return 0
    return -1 if ca < cb else 1


def size_order(a: TagGeometry, b: TagGeometry, config: QAConfig) -> int:
    """1 if a is larger than b, -1 if smaller, 0 when the areas are too close to call."""
    if a.area >= config.area_ratio * b.area:
        return 1
    if b.area >= config.area_ratio * a.area:
        return -1
    return 0


def tag_gaps(
    target: TagGeometry, others: Iterable[TagGeometry], limit: float, shape: tuple[int, int]
) -> dict[int, float]:
    """Smallest pixel-centre distance from `target` to each other tag, for gaps <= limit.

    The distance transform runs only over target's bbox grown by `limit`: every pixel outside
    it is farther than `limit` from the target."""
    height, width = shape
    pad = int(np.ceil(limit)) + 1
    x, y, w, h = target.bbox
    wx0, wy0 = max(0, x - pad), max(0, y - pad)
    wx1, wy1 = min(width, x + w + pad), min(height, y + h + pad)
    window = np.ones((wy1 - wy0, wx1 - wx0), dtype=bool)
    window[y - wy0 : y - wy0 + h, x - wx0 : x - wx0 + w] &= ~target.crop
    distance = ndimage.distance_transform_edt(window)
    gaps = {}
    for other in others:
        ox, oy, ow, oh = other.bbox
        ix0, iy0, ix1, iy1 = max(ox, wx0), max(oy, wy0), min(ox + ow, wx1), min(oy + oh, wy1)
        if ix0 >= ix1 or iy0 >= iy1:
            continue
        pixels = other.crop[iy0 - oy : iy1 - oy, ix0 - ox : ix1 - ox]
        if not pixels.any():
            continue
        gap = float(distance[iy0 - wy0 : iy1 - wy0, ix0 - wx0 : ix1 - wx0][pixels].min())
        if gap <= limit:
            gaps[other.tag] = gap
    return gaps


# ----------------------------------------------------------------------------- QA


@dataclass(frozen=True)
class QAItem:
    """One question/answer turn and the fact it states (for cards and tests).

    truth: what_is → name; which_tag/count → the tag ids with that name; left_of/above/larger
    → whether the asked relation holds; near → the near tag ids."""

    kind: str
    question: str
    answer: str
    tags: tuple[int, ...]
    truth: Any


@dataclass(frozen=True)
class QARecord:
    """A LLaVA record and the items (one per turn) it was made from."""

    record: dict[str, Any]
    items: tuple[QAItem, ...]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(item.kind for item in self.items)


class _Scene:
    """Names and geometry of one image, and the question makers that read them."""

    def __init__(self, marks: Mapping[str, Any], names: Names, config: QAConfig, rng: random.Random) -> None:
        self.config, self.rng = config, rng
        self.height, self.width = int(marks["height"]), int(marks["width"])
        self.shapes = {g.tag: g for g in scene_geometry(marks)}
        by_id = names_by_id(names)
        self.names: dict[int, str] = {
            t: name
            for t in self.shapes
            if t in by_id and (name := by_id[t].name) is not None  # labeled
        }
        self.tags_by_name: dict[str, list[int]] = defaultdict(list)
        for tag in sorted(self.names):
            self.tags_by_name[self.names[tag]].append(tag)

    # candidate keys per kind, cheap to list; `ask` turns one into an item or None
    def candidates(self, kind: str) -> list[Any]:
        if kind == "what_is":
            return sorted(self.names)
        if kind in ("which_tag", "count"):
            return sorted(self.tags_by_name)
        if kind == "near":
            return sorted(self.shapes)
        tags = sorted(self.shapes)
        return [(a, b) for i, a in enumerate(tags) for b in tags[i + 1 :] if self._order(kind, a, b)]

    def _order(self, kind: str, a: int, b: int) -> int:
        sa, sb = self.shapes[a], self.shapes[b]
        if kind == "left_of":
            return horizontal_order(sa, sb, self.width, self.config)
        if kind == "above":
            return vertical_order(sa, sb, self.height, self.config)
        return size_order(sa, sb, self.config)

    def ask(self, kind: str, key: Any) -> QAItem | None:
        return getattr(self, f"_ask_{kind}")(key)

    def ref(self, tag: int) -> str:
        label = self.shapes[tag].label
        return f"tag {label} ({self.names[tag]})" if tag in self.names else f"tag {label}"

    def labels(self, tags: Sequence[int]) -> str:
        return join_words([self.shapes[t].label for t in tags])

    def _ask_what_is(self, tag: int) -> QAItem:
        label, name = self.shapes[tag].label, self.names[tag]
        question = self.rng.choice(
            [f"What is tag {label}?", f"What does tag {label} mark?", f"Which object carries tag {label}?"]
        )
        return QAItem("what_is", question, f"Tag {label} is {article(name)} {name}.", (tag,), name)

    def _ask_which_tag(self, name: str) -> QAItem:
        tags = tuple(self.tags_by_name[name])
        if len(tags) == 1:
            question = self.rng.choice([f"Which tag is the {name}?", f"Which tag marks the {name}?"])
            answer = f"The {name} is tag {self.shapes[tags[0]].label}."
        else:
            many = plural(name)
            question = self.rng.choice([f"Which tags mark {many}?", f"Which of the tags are on {many}?"])
            answer = f"There are {len(tags)} {many}, tagged {self.labels(tags)}."
        return QAItem("which_tag", question, answer, tags, tags)

    def _ask_count(self, name: str) -> QAItem:
        tags = tuple(self.tags_by_name[name])
        many = plural(name)
        question = self.rng.choice([f"How many {many} are tagged?", f"How many tags mark {many}?"])
        if len(tags) == 1:
            answer = f"One: tag {self.shapes[tags[0]].label} is the only {name}."
        else:
            answer = f"{len(tags)}: tags {self.labels(tags)}."
        return QAItem("count", question, answer, tags, len(tags))

    def _ask_pair(self, kind: str, pair: tuple[int, int], words: tuple[str, str], question: str) -> QAItem:
        a, b = pair if self.rng.random() < 0.5 else pair[::-1]
        order = self._order(kind, a, b)  # -1: a is left of / above / smaller than b
        asked = self.rng.randrange(2)  # 0 asks words[0] ("left of"), 1 asks words[1]
        holds = order == (-1 if asked == 0 else 1)
        if kind == "larger":  # for sizes, order 1 means "a is larger"
            holds = order == (1 if asked == 0 else -1)
            true_word = words[0] if order == 1 else words[1]
        else:
            true_word = words[0] if order == -1 else words[1]
        la, lb = self.shapes[a].label, self.shapes[b].label
        text = question.format(a=la, b=lb, rel=words[asked])
        answer = f"{'Yes' if holds else 'No'}, {self.ref(a)} is {true_word} {self.ref(b)}."
        return QAItem(kind, text, answer, (a, b), holds)

    def _ask_left_of(self, pair: tuple[int, int]) -> QAItem:
        return self._ask_pair("left_of", pair, ("to the left of", "to the right of"), "Is tag {a} {rel} tag {b}?")

    def _ask_above(self, pair: tuple[int, int]) -> QAItem:
        return self._ask_pair("above", pair, ("above", "below"), "Is tag {a} {rel} tag {b}?")

    def _ask_larger(self, pair: tuple[int, int]) -> QAItem:
        return self._ask_pair(
            "larger", pair, ("larger than", "smaller than"), "In the image, is tag {a} {rel} tag {b}?"
        )

    def _ask_near(self, tag: int) -> QAItem | None:
        near_px = self.config.near_fraction * min(self.height, self.width)
        far_px = near_px * self.config.near_band
        others = [g for t, g in self.shapes.items() if t != tag]
        gaps = tag_gaps(self.shapes[tag], others, far_px, (self.height, self.width))
        near = sorted((gap, t) for t, gap in gaps.items() if gap <= near_px)
        unclear = any(gap > near_px for gap in gaps.values())
        if unclear or not near or len(near) > self.config.max_near:
            return None
        near_tags = tuple(t for _, t in near)
        label = self.shapes[tag].label
        question = self.rng.choice([f"What is near tag {label}?", f"Which tagged objects are close to tag {label}?"])
        refs = join_words([self.ref(t) for t in near_tags])
        verb = "is" if len(near_tags) == 1 else "are"
        answer = f"{refs[0].upper()}{refs[1:]} {verb} close to tag {label}."
        return QAItem("near", question, answer, (tag, *near_tags), near_tags)


def qa_items(marks: Mapping[str, Any], names: Names, config: QAConfig = QAConfig()) -> list[list[QAItem]]:
    """The sampled turns of each QA record of one image (no question repeats per image)."""
    if marks.get("skipped") or not marks.get("marks"):
        return []
    rng = seeded_rng(config.seed, marks.get("sha256", ""), "qa")
    scene = _Scene(marks, names, config, rng)
    pools = {}
    for kind in config.kinds:
        keys = scene.candidates(kind)
        rng.shuffle(keys)
        if keys:
            pools[kind] = keys
    records = []
    for _ in range(config.records_per_image):
        turns = []
        for _ in range(rng.randint(1, config.max_turns)):
            item = _next_item(scene, pools, rng)
            if item is None:
                break
            turns.append(item)
        if not turns:
            break
        records.append(turns)
    return records


def _next_item(scene: _Scene, pools: dict[str, list[Any]], rng: random.Random) -> QAItem | None:
    """A kind uniformly among those left, then its next key; keys that yield nothing are used up."""
    while pools:
        kind = rng.choice(sorted(pools))
        key = pools[kind].pop()
        if not pools[kind]:
            del pools[kind]
        item = scene.ask(kind, key)
        if item is not None:
            return item
    return None


def build_qa(
    marks: Mapping[str, Any],
    names: Names,
    image_uri: str,
    *,
    image_root: str | None = None,
    config: QAConfig = QAConfig(),
) -> list[QARecord]:
    """QA records of one marked image (ids `<prefix>-<sha256[:16]>-<n>`)."""
    image = image_reference(image_uri, image_root)
    records = []
    for number, items in enumerate(qa_items(marks, names, config)):
        record_id = f"{config.id_prefix}-{marks['sha256'][:16]}-{number}"
        turns = [(item.question, item.answer) for item in items]
        records.append(QARecord(llava_record(record_id, image, turns), tuple(items)))
    return records
