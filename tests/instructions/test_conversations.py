"""LLaVA listing and QA records: exact shape, pinned listing, determinism, answers true of the scene."""

from __future__ import annotations

import json
from itertools import combinations

import pytest

from som.data.listing import ListingConfig, build_listing, load_question_pool
from som.data.llava import IMAGE_TOKEN, image_reference, llava_record, record_problems
from som.data.naming import TagName, name_tags
from som.data.qa import QA_KINDS, QAConfig, build_qa, qa_items
from tests.helpers.scenes import HEIGHT, WIDTH, Box, box_of_tag, scene_marks

URI = "s3://bucket/som/marks/abc.jpg"
ROOT = "s3://bucket/som"


@pytest.fixture(scope="module")
def scene():
    marks = scene_marks()
    return marks, name_tags(marks), box_of_tag(marks)


def every_item(marks, names, **overrides):
    """Exhaust the question pools: every question the builder can ask about the scene."""
    config = QAConfig(records_per_image=500, max_turns=1, **overrides)
    return [turns[0] for turns in qa_items(marks, names, config)]


def assert_llava_shape(record, n_turns):
    assert set(record) == {"id", "image", "conversations"}
    assert isinstance(record["id"], str) and isinstance(record["image"], str)
    turns = record["conversations"]
    assert len(turns) == 2 * n_turns
    assert [t["from"] for t in turns] == ["human", "gpt"] * n_turns
    assert all(set(t) == {"from", "value"} and isinstance(t["value"], str) and t["value"] for t in turns)
    assert turns[0]["value"].startswith(f"{IMAGE_TOKEN}\n")
    assert sum(t["value"].count(IMAGE_TOKEN) for t in turns) == 1
    assert record_problems(record) == []
    assert json.loads(json.dumps(record)) == record


# ----------------------------------------------------------------------------- listing


def test_listing_pinned_on_the_constructed_scene(scene):
    marks, names, _ = scene
    record = build_listing(marks, names, URI, image_root=ROOT)
    assert_llava_shape(record, 1)
    assert record["id"] == f"som-listing-{marks['sha256'][:16]}"
    assert record["image"] == "marks/abc.jpg"
    question = record["conversations"][0]["value"].removeprefix(f"{IMAGE_TOKEN}\n")
    assert question in load_question_pool()
    # Tags by area: ball, cup, dog, dog, (unnamed), table, person; unnamed dropped by default.
    assert record["conversations"][1]["value"] == "1. ball\n2. cup\n3. dog\n4. dog\n6. table\n7. person"


def test_listing_keeps_unlabeled_and_adds_descriptions(scene):
    marks, names, _ = scene
    by_id = names.by_id()
    by_id[3] = TagName(3, "3", "dog", "describer", description="a small brown terrier")
    record = build_listing(marks, by_id, URI, config=ListingConfig(keep_unlabeled=True))
    assert record["conversations"][1]["value"].splitlines() == [
        "1. ball",
        "2. cup",
        "3. dog: a small brown terrier",
        "4. dog",
        "5. unlabeled object",
        "6. table",
        "7. person",
    ]


def test_listing_order_is_by_tag_number_not_input_order(scene):
    marks, names, _ = scene
    shuffled = dict(marks, marks=list(reversed(marks["marks"])))
    assert build_listing(shuffled, names, URI) == build_listing(marks, names, URI)


def test_listing_uses_the_tag_label_for_alpha_marks(scene):
    marks, names, _ = scene
    alpha = dict(marks, marks=[dict(m, label="abcdefg"[m["id"] - 1]) for m in marks["marks"]])
    answer = build_listing(alpha, name_tags(alpha), URI)["conversations"][1]["value"]
    assert answer.splitlines()[:2] == ["a. ball", "b. cup"]


def test_nothing_to_list_gives_no_record(scene):
    marks, names, _ = scene
    unnamed = {m["id"]: TagName(m["id"], m["label"], None, None) for m in marks["marks"]}
    assert build_listing(marks, unnamed, URI) is None
    assert build_listing(dict(marks, marks=[], skipped="no masks"), names, URI) is None


def test_listing_question_is_deterministic_per_image_and_seed(scene):
    marks, names, _ = scene
    pool = load_question_pool()
    assert 35 <= len(pool) <= 50 and len(set(pool)) == len(pool)

    def question(k, seed):
        image = dict(marks, sha256=f"{k:064x}")  # another image: only its hash matters here
        record = build_listing(image, names, "x.jpg", config=ListingConfig(seed=seed))
        return record["conversations"][0]["value"]

    chosen = [question(k, 3) for k in range(60)]
    assert chosen == [question(k, 3) for k in range(60)]
    assert len(set(chosen)) >= 20  # the pool is actually used
    assert chosen != [question(k, 4) for k in range(60)]  # the seed matters


def test_custom_question_pool_file(tmp_path):
    path = tmp_path / "pool.txt"
    path.write_text("# comment\n\nList the tags.\nName each tag.\n")
    assert load_question_pool(path) == ("List the tags.", "Name each tag.")
    path.write_text("<image>\nList the tags.\n")
    with pytest.raises(ValueError, match="<image>"):
        load_question_pool(path)


# ----------------------------------------------------------------------------- records and paths


def test_image_reference_relative_to_root_or_full_url():
    assert image_reference(URI, ROOT) == "marks/abc.jpg"
    assert image_reference(URI, ROOT + "/") == "marks/abc.jpg"
    assert image_reference(URI) == URI
    assert image_reference("file:///data/som/marks/a.jpg", "/data/som") == "marks/a.jpg"
    with pytest.raises(ValueError, match="not under"):
        image_reference("s3://bucket/somother/a.jpg", ROOT)


def test_llava_record_refuses_image_token_inside_turns():
    with pytest.raises(ValueError):
        llava_record("x", "a.jpg", [("what is <image>?", "a dog")])
    with pytest.raises(ValueError):
        llava_record("x", "a.jpg", [])
    no_token = [{"from": "human", "value": "no token"}, {"from": "gpt", "value": "a"}]
    assert record_problems({"id": "x", "image": "a.jpg", "conversations": no_token})


# ----------------------------------------------------------------------------- QA


def test_qa_records_shape_ids_and_turn_counts(scene):
    marks, names, _ = scene
    records = build_qa(marks, names, URI, image_root=ROOT, config=QAConfig(records_per_image=6, max_turns=3))
    assert len(records) == 6
    for number, qa in enumerate(records):
        assert_llava_shape(qa.record, len(qa.items))
        assert 1 <= len(qa.items) <= 3
        assert qa.record["id"] == f"som-qa-{marks['sha256'][:16]}-{number}"
        assert qa.record["image"] == "marks/abc.jpg"
    assert any(len(qa.items) > 1 for qa in records) and any(len(qa.items) == 1 for qa in records)
    questions = [item.question for qa in records for item in qa.items]
    assert len(questions) == len(set(questions))  # nothing asked twice about one image


def test_qa_is_deterministic_and_seeded(scene):
    marks, names, _ = scene
    first = [qa.record for qa in build_qa(marks, names, URI, config=QAConfig(seed=1, records_per_image=5))]
    again = [qa.record for qa in build_qa(marks, names, URI, config=QAConfig(seed=1, records_per_image=5))]
    other = [qa.record for qa in build_qa(marks, names, URI, config=QAConfig(seed=2, records_per_image=5))]
    assert first == again and first != other


def test_what_is_answers_name_the_box_under_the_tag(scene):
    marks, names, boxes = scene
    items = [i for i in every_item(marks, names, kinds=("what_is",))]
    named = [t for t, b in sorted(boxes.items()) if b.name]
    assert sorted(i.tags[0] for i in items) == named  # the unnamed box is never asked about
    for item in items:
        name = boxes[item.tags[0]].name
        assert item.truth == name
        assert item.answer == f"Tag {item.tags[0]} is {'an' if name[0] in 'aeiou' else 'a'} {name}."


def test_which_tag_and_count_with_unique_and_repeated_names(scene):
    marks, names, boxes = scene
    items = every_item(marks, names, kinds=("which_tag", "count"))
    names_ = ("dog", "person", "ball", "table", "cup")
    expected = {n: tuple(t for t, b in sorted(boxes.items()) if b.name == n) for n in names_}
    kinds = ("which_tag", "count")
    assert {(i.kind, i.tags) for i in items} == {(k, tags) for k in kinds for tags in expected.values()}
    by = {(i.kind, i.tags): i for i in items}
    person = expected["person"][0]
    assert by[("which_tag", (person,))].question in ("Which tag is the person?", "Which tag marks the person?")
    assert by[("which_tag", (person,))].answer == f"The person is tag {person}."
    dogs = by[("which_tag", expected["dog"])]
    assert "dogs" in dogs.question and dogs.answer == "There are 2 dogs, tagged 3 and 4."
    dog_count = by[("count", expected["dog"])]
    assert dog_count.truth == 2 and dog_count.answer == "2: tags 3 and 4."
    assert by[("count", (person,))].question in ("How many people are tagged?", "How many tags mark people?")
    assert by[("count", (person,))].answer == f"One: tag {person} is the only person."


def rule_order(a: Box, b: Box, axis: int, margin=0.05, overlap_max=0.25) -> int:
    """The documented rule, on the boxes themselves (independent of the marks)."""
    side = WIDTH if axis == 0 else HEIGHT
    ca, cb = a.centre[axis], b.centre[axis]
    a0, a1, b0, b1 = (a.x0, a.x1, b.x0, b.x1) if axis == 0 else (a.y0, a.y1, b.y0, b.y1)
    overlap = max(0, min(a1, b1) - max(a0, b0))
    if abs(ca - cb) < margin * side or overlap > overlap_max * min(a1 - a0, b1 - b0):
        return 0
    return -1 if ca < cb else 1


@pytest.mark.parametrize(
    "kind,axis,words", [("left_of", 0, ("to the left of", "to the right of")), ("above", 1, ("above", "below"))]
)
def test_position_answers_are_true_and_ambiguous_pairs_skipped(scene, kind, axis, words):
    marks, names, boxes = scene
    items = every_item(marks, names, kinds=(kind,))
    asked = {frozenset(i.tags) for i in items}
    decided = {frozenset((a, b)) for a, b in combinations(boxes, 2) if rule_order(boxes[a], boxes[b], axis)}
    assert asked == decided and len(asked) == len(items)
    yes = 0
    for item in items:
        a, b = item.tags
        order = rule_order(boxes[a], boxes[b], axis)
        asked_word = words[0] if words[0] in item.question else words[1]
        holds = (order == -1) == (asked_word == words[0])
        assert item.truth == holds and item.answer.startswith("Yes" if holds else "No")
        true_word = words[0] if order == -1 else words[1]
        assert f"is {true_word} tag {b}" in item.answer
        yes += holds
    assert 0 < yes < len(items)  # both answers occur


def test_known_pairs(scene):
    marks, names, boxes = scene
    tag = {(b.name, b.x0): t for t, b in boxes.items()}
    dog_left, dog_right, cup, table = tag[("dog", 10)], tag[("dog", 250)], tag[("cup", 70)], tag[("table", 20)]
    person = tag[("person", 125)]
    left = {frozenset(i.tags): i for i in every_item(marks, names, kinds=("left_of",))}
    above = {frozenset(i.tags): i for i in every_item(marks, names, kinds=("above",))}
    larger = {frozenset(i.tags): i for i in every_item(marks, names, kinds=("larger",))}
    # The dogs: clearly left/right; sizes 1600 vs 2000 px are too close to call.
    assert frozenset((dog_left, dog_right)) in left
    assert frozenset((dog_left, dog_right)) not in larger
    # The cup on the table: inside its x extent (no left/right) but clearly above it.
    assert frozenset((cup, table)) not in left
    item = above[frozenset((cup, table))]
    assert f"tag {cup} (cup) is above tag {table} (table)" in item.answer
    # The person (7500 px) is larger than the table (3200 px).
    item = larger[frozenset((person, table))]
    assert f"tag {person} (person) is larger than tag {table} (table)" in item.answer or (
        f"tag {table} (table) is smaller than tag {person} (person)" in item.answer
    )


def test_size_answers_follow_the_area_ratio(scene):
    marks, names, boxes = scene
    items = every_item(marks, names, kinds=("larger",))
    expected = {
        frozenset((a, b))
        for a, b in combinations(boxes, 2)
        if max(boxes[a].area, boxes[b].area) >= 1.5 * min(boxes[a].area, boxes[b].area)
    }
    assert {frozenset(i.tags) for i in items} == expected
    for item in items:
        a, b = item.tags
        a_larger = boxes[a].area > boxes[b].area
        asked_larger = "larger than" in item.question
        assert item.truth == (a_larger == asked_larger)
        assert ("is larger than" if a_larger else "is smaller than") in item.answer
    stricter = every_item(marks, names, kinds=("larger",), area_ratio=3.0)
    assert {frozenset(i.tags) for i in stricter} < expected


def test_near_answers(scene):
    marks, names, boxes = scene
    tag = {(b.name, b.x0): t for t, b in boxes.items()}
    person, ball, cup, table = tag[("person", 125)], tag[("ball", 181)], tag[("cup", 70)], tag[("table", 20)]
    items = {i.tags[0]: i for i in every_item(marks, names, kinds=("near",))}
    # near = within 5% of the 200 px short side (10 px); nothing else within 20 px of these.
    assert items[ball].truth == (person,)
    assert items[ball].answer == f"Tag {person} (person) is close to tag {ball}."
    assert items[person].truth == (ball,)
    assert items[cup].truth == (table,) and items[table].truth == (cup,)
    assert set(items) == {person, ball, cup, table}  # the dogs and the unnamed box have no neighbour


def test_near_is_skipped_when_a_tag_is_in_the_unclear_band():
    # b is 15 px from a: beyond "near" (10 px) but within the band (20 px), so asking "what is
    # near a" has no clear answer; c touches a and is 40 px from b.
    boxes = (Box("a", 100, 50, 140, 100), Box("b", 155, 50, 185, 100), Box("c", 100, 100, 115, 112))
    marks = scene_marks(boxes, sha_seed="band")
    by_tag = box_of_tag(marks, boxes)
    items = {by_tag[i.tags[0]].name: i for i in every_item(marks, name_tags(marks), kinds=("near",))}
    assert "a" not in items and "b" not in items
    assert items["c"].truth == (next(t for t, b in by_tag.items() if b.name == "a"),)


def test_unlabeled_and_skipped_images(scene):
    marks, _, _ = scene
    unnamed = {m["id"]: TagName(m["id"], m["label"], None, None) for m in marks["marks"]}
    kinds = {i.kind for i in every_item(marks, unnamed)}
    assert kinds <= {"left_of", "above", "larger", "near"}  # geometry needs no names
    assert build_qa(dict(marks, marks=[], skipped="no masks"), unnamed, URI) == []


def test_config_validation():
    with pytest.raises(ValueError):
        QAConfig(kinds=("what_is", "colour"))
    with pytest.raises(ValueError):
        QAConfig(area_ratio=1.0)
    assert set(QAConfig().kinds) == set(QA_KINDS)
