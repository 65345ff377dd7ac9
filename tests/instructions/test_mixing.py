"""Mixing a base LLaVA file with SoM records: streaming reader, bounded memory, ids, images, card."""

from __future__ import annotations

import io
import json
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest

from som.data.json_stream import JsonArrayError, iter_json_array
from som.data.mixing import MixConfig, MixError, MixSource, mix


def record(rid, image=None, turns=1, text="a reply"):
    conversations = []
    for number in range(turns):
        question = ("<image>\n" if image and number == 0 else "") + f"question {number}?"
        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": text}]
    out = {"id": rid, "conversations": conversations}
    if image:
        out["image"] = image
    return out


def write_array(path: Path, records, *, indent=None) -> Path:
    """A JSON array written one record at a time (the test itself never holds a big base)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n")
        for number, rec in enumerate(records):
            f.write((",\n" if number else "") + json.dumps(rec, indent=indent, ensure_ascii=False))
        f.write("\n]\n")
    return path


def base_records(n, *, text_every=10):
    for i in range(n):
        image = None if i % text_every == 0 else f"coco/train2017/{i:012d}.jpg"
        text = f"A reply about picture {i}, long enough to look real."
        yield record(f"{i:012d}", image, turns=1 + (i % 3 == 0), text=text)


def som_records(n, kind="listing"):
    for i in range(n):
        yield record(f"som-{kind}-{i:016x}", f"som/marks/{i:064x}.jpg", text=f"1. dog\n2. person {i}")


def everything_exists(_path):
    return True


# ----------------------------------------------------------------------------- reader


TRICKY = [
    {"id": "a", "text": 'brackets ] [ } { and commas , inside "quotes" \\ backslash'},
    {"id": "b", "unicode": "café 日本語 🐕 \u2028 line separator", "nested": [[1, [2, [3]]], {"x": {}}]},
    123456789,
    -0.0,
    1.5e10,
    True,
    None,
    "plain string",
    [],
    {},
]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_reader_matches_json_loads_at_any_chunk_size(chunk, indent):
    text = "\ufeff  " + json.dumps(TRICKY, indent=indent, ensure_ascii=False) + " \n"
    stream = io.BytesIO(text.encode("utf-8"))
    pairs = list(iter_json_array(stream, chunk_size=chunk, with_text=True))
    assert [v for v, _ in pairs] == TRICKY
    assert [json.loads(t) for _, t in pairs] == TRICKY  # the source text of each element


@pytest.mark.parametrize("text", ["[]", " [ ] ", "[\n]\n"])
def test_reader_empty_arrays(text):
    assert list(iter_json_array(io.BytesIO(text.encode()), chunk_size=1)) == []


@pytest.mark.parametrize(
    "text,message",
    [
        ('{"id": 1}', "expected a JSON array"),
        ("[1, 2", "end of input"),
        ("[1 2]", "expected ','"),
        ("[1,]", "malformed"),
        ('[{"id": "x"]', "malformed"),
        ("[1] trailing", "after the array"),
        ("", "expected a JSON array"),
    ],
)
def test_reader_errors_name_the_problem(text, message):
    with pytest.raises(JsonArrayError, match=message):
        list(iter_json_array(io.BytesIO(text.encode()), chunk_size=2))


def test_reader_refuses_an_oversized_element_without_reading_on():
    text = '[{"id": "' + "x" * 10_000 + '"}, 1]'
    with pytest.raises(JsonArrayError, match="exceeds 1000"):
        list(iter_json_array(io.BytesIO(text.encode()), chunk_size=100, max_record_chars=1000))


# ----------------------------------------------------------------------------- bounded memory


def test_mix_of_a_50k_base_stays_in_bounded_memory(tmp_path):
    base = write_array(tmp_path / "llava_base.json", base_records(50_000))
    listing = write_array(tmp_path / "som_listing.json", som_records(2_000))
    base_size = base.stat().st_size
    out = tmp_path / "mix.json"

    tracemalloc.start()
    try:
        result = mix(
            [MixSource(str(base), "base"), MixSource(str(listing), "som-listing")],
            str(out),
            MixConfig(seed=5, bucket_bytes=1 << 20),
            exists=everything_exists,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Holding the base's text alone would cost its size (~15 MB); parsed, ~5x that.
    print(f"base {base_size / 2**20:.1f} MiB, {result.buckets} buckets, peak traced {peak / 2**20:.2f} MiB")
    assert peak < 8 * 2**20 and peak < base_size / 2

    mixed = json.loads(out.read_bytes())
    assert len(mixed) == result.written == 52_000
    ids = [r["id"] for r in mixed]
    assert len(set(ids)) == len(ids)
    assert set(ids) == {f"{i:012d}" for i in range(50_000)} | {f"som-listing-{i:016x}" for i in range(2_000)}
    assert ids[:1000] != sorted(ids[:1000])  # shuffled
    som_positions = [n for n, i in enumerate(ids) if i.startswith("som-")]
    assert som_positions[0] < 5_000 and som_positions[-1] > 47_000  # spread through the mix
    by_id = {r["id"]: r for r in mixed}
    assert by_id["000000000003"] == record(
        "000000000003",
        "coco/train2017/000000000003.jpg",
        turns=2,
        text="A reply about picture 3, long enough to look real.",
    )
    base_counts, som_counts = result.sources
    assert (base_counts.read, base_counts.written) == (50_000, 50_000)
    assert (base_counts.text_only, base_counts.with_image) == (5_000, 45_000)
    assert base_counts.multi_turn == 16_667 and som_counts.written == 2_000


# ----------------------------------------------------------------------------- shuffle


def small_inputs(tmp_path, n=3_000):
    base = write_array(tmp_path / "base.json", base_records(n), indent=2)  # pretty-printed input
    qa = write_array(tmp_path / "som_qa.json", som_records(300, "qa"))
    return [MixSource(str(base), "base"), MixSource(str(qa), "som-qa")]


def test_shuffle_is_reproducible_and_seeded(tmp_path):
    sources = small_inputs(tmp_path)
    config = MixConfig(seed=11, bucket_bytes=64 << 10)
    first = mix(sources, str(tmp_path / "a.json"), config, exists=everything_exists)
    mix(sources, str(tmp_path / "b.json"), config, exists=everything_exists)
    mix(sources, str(tmp_path / "c.json"), MixConfig(seed=12, bucket_bytes=64 << 10), exists=everything_exists)
    a, b, c = ((tmp_path / f"{n}.json").read_bytes() for n in "abc")
    assert first.buckets > 4
    assert a == b and a != c
    records = json.loads(a)
    expected = list(base_records(3_000)) + list(som_records(300, "qa"))
    key = lambda r: r["id"]  # noqa: E731
    assert sorted(records, key=key) == sorted(expected, key=key)  # same records, unchanged
    assert sorted(json.loads(c), key=key) == sorted(records, key=key)


def test_one_bucket_and_empty_inputs(tmp_path):
    empty = write_array(tmp_path / "empty.json", [])
    result = mix([MixSource(str(empty), "base")], str(tmp_path / "out.json"), exists=everything_exists)
    assert json.loads((tmp_path / "out.json").read_text()) == [] and result.written == 0
    sources = small_inputs(tmp_path, n=50)
    result = mix(sources, str(tmp_path / "one.json"), MixConfig(bucket_bytes=1 << 30), exists=everything_exists)
    assert result.buckets == 1 and len(json.loads((tmp_path / "one.json").read_text())) == 350


# ----------------------------------------------------------------------------- ids


def test_colliding_ids_fail_without_a_prefix(tmp_path):
    base = write_array(tmp_path / "base.json", [record("a"), record("b"), record("c")])
    add = write_array(tmp_path / "add.json", [record("b"), record("d")])
    out = tmp_path / "mix.json"
    with pytest.raises(MixError, match=r"1 duplicate ids.*'b' in add.json"):
        mix([MixSource(str(base), "base"), MixSource(str(add))], str(out), exists=everything_exists)
    assert not out.exists()  # nothing written


def test_a_prefix_renames_later_duplicates_only(tmp_path):
    base = write_array(tmp_path / "base.json", [record("a"), record("b"), record("c")])
    add = write_array(tmp_path / "add.json", [record("b"), record("d"), record("a")])
    out = tmp_path / "mix.json"
    sources = [MixSource(str(base), "base"), MixSource(str(add), id_prefix="som-")]
    result = mix(sources, str(out), exists=everything_exists)
    ids = Counter(r["id"] for r in json.loads(out.read_text()))
    assert ids == Counter(["a", "b", "c", "d", "som-a", "som-b"])
    assert [s.renamed for s in result.sources] == [0, 2]


def test_duplicates_inside_the_base_and_renames_that_collide(tmp_path):
    base = write_array(tmp_path / "base.json", [record("a"), record("a")])
    with pytest.raises(MixError, match="duplicate ids"):
        mix([MixSource(str(base), "base")], str(tmp_path / "m.json"), exists=everything_exists)
    base = write_array(tmp_path / "base2.json", [record("b"), record("som-b")])
    add = write_array(tmp_path / "add.json", [record("b")])
    with pytest.raises(MixError, match="still collide: som-b"):
        sources = [MixSource(str(base), "base"), MixSource(str(add), id_prefix="som-")]
        mix(sources, str(tmp_path / "m.json"), exists=everything_exists)


def test_records_without_an_id_are_refused(tmp_path):
    bad = write_array(tmp_path / "bad.json", [record("a"), {"conversations": []}])
    with pytest.raises(MixError, match=r"bad.json: element 1 has no"):
        mix([MixSource(str(bad))], str(tmp_path / "m.json"), exists=everything_exists)


# ----------------------------------------------------------------------------- images and card


def test_missing_images_are_counted_listed_and_fail_over_the_threshold(tmp_path):
    records = [record(f"r{i}", f"coco/{i}.jpg") for i in range(20)] + [record("text-only")]
    base = write_array(tmp_path / "base.json", records)
    gone = {"/data/images/coco/3.jpg", "/data/images/coco/7.jpg"}
    asked = []

    def exists(location):
        asked.append(location)
        return location not in gone

    out = tmp_path / "mix.json"
    config = MixConfig(image_root="/data/images")
    with pytest.raises(MixError, match="2 records reference missing images"):
        mix([MixSource(str(base), "base")], str(out), config, exists=exists)
    assert not out.exists()
    assert sorted(asked) == sorted(f"/data/images/coco/{i}.jpg" for i in range(20))  # text-only: not asked

    source = [MixSource(str(base), "base")]
    result = mix(source, str(out), MixConfig(image_root="/data/images", max_missing=2), exists=exists)
    assert result.missing_count == 2
    assert sorted(result.missing_examples) == [("r3", "/data/images/coco/3.jpg"), ("r7", "/data/images/coco/7.jpg")]
    written = {r["id"] for r in json.loads(out.read_text())}
    assert written == {f"r{i}" for i in range(20)} - {"r3", "r7"} | {"text-only"}
    (counts,) = result.sources
    assert (counts.read, counts.written, counts.missing_image, counts.text_only) == (21, 19, 2, 1)
    card = result.card_markdown()
    assert "- records with a missing image: 2" in card and "`r3`: `/data/images/coco/3.jpg`" in card

    config = MixConfig(image_root="/data/images", max_missing=5, drop_missing=False, check_workers=4)
    kept = mix(source, str(out), config, exists=exists)
    assert kept.written == 21 and kept.missing_count == 2


def test_card_counts_by_source_and_kind(tmp_path):
    sources = small_inputs(tmp_path, n=100)
    listing = write_array(tmp_path / "som_listing.json", som_records(40))
    sources.append(MixSource(str(listing), "som-listing"))
    result = mix(sources, str(tmp_path / "mix.json"), MixConfig(seed=9), exists=everything_exists)
    card = result.card_markdown()
    sha = __import__("hashlib").sha256(Path(sources[0].url).read_bytes()).hexdigest()
    assert f"| base.json | base | 100 | 100 | 90 | 10 | 34 | 0 | 0 | `{sha}` |" in card
    assert "| som_qa.json | som-qa | 300 | 300 | 300 | 0 | 0 | 0 | 0 |" in card
    assert "| som-listing | 40 | 9.1% |" in card and "- records: 440" in card and "- seed: 9" in card
    data = json.loads(json.dumps(result.as_dict()))
    assert data["written"] == 440 and [s["kind"] for s in data["sources"]] == ["base", "som-qa", "som-listing"]


def test_object_storage_urls(tmp_path):
    from som import storage

    base = "memory://mixtest/base.json"
    storage.write_bytes_atomic(base, json.dumps([record("x", "img/x.jpg"), record("y")]).encode())
    storage.write_bytes_atomic("memory://mixtest/images/img/x.jpg", b"jpeg")
    config = MixConfig(image_root="memory://mixtest/images")
    result = mix([MixSource(base, "base")], "memory://mixtest/out/mix.json", config)
    assert result.missing_count == 0
    assert {r["id"] for r in json.loads(storage.read_bytes("memory://mixtest/out/mix.json"))} == {"x", "y"}


def test_no_sources_or_missing_input(tmp_path):
    with pytest.raises(MixError, match="no sources"):
        mix([], str(tmp_path / "m.json"))
    with pytest.raises(MixError, match="does not exist"):
        mix([MixSource(str(tmp_path / "absent.json"))], str(tmp_path / "m.json"))


# ----------------------------------------------------------------------------- issue 11 item 8


def _file_with_bad_record_in_the_middle(path: Path, n: int = 20_000) -> tuple[int, int, int]:
    """A few-MB array whose record `n // 2` is malformed; (index, byte offset, line) of the fault."""
    bad = n // 2
    with open(path, "wb") as f:
        f.write(b"[\n")
        for i, rec in enumerate(base_records(n)):
            text = json.dumps(rec).encode()
            if i == bad:
                text = text.replace(b'"conversations": ', b'"conversations": oops ', 1)
                offset = f.tell() + (2 if i else 0) + text.index(b"oops")
            f.write((b",\n" if i else b"") + text)
        f.write(b"\n]\n")
    return bad, offset, bad + 2


def test_malformed_record_in_the_middle_is_reported_at_its_position(tmp_path):
    """Today the reader reads on up to 64 Mi characters and says 'exceeds 67108864 characters
    or is malformed' with no usable position; now the record index, byte offset and line."""
    path = tmp_path / "big.json"
    index, offset, line = _file_with_bad_record_in_the_middle(path)
    assert path.stat().st_size > 2 * 2**20
    tracemalloc.start()
    try:
        with open(path, "rb") as stream, pytest.raises(JsonArrayError) as info:
            for _ in iter_json_array(stream, chunk_size=1 << 16, max_record_chars=1 << 20):
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert f"element {index} (byte offset {offset}, line {line}," in message, message
    assert "Expecting value" in message
    assert peak < 1 << 20  # one chunk and one record, not the file up to the size limit


def test_mix_reports_the_malformed_record_and_its_file(tmp_path):
    path = tmp_path / "big.json"
    index, offset, _ = _file_with_bad_record_in_the_middle(path, n=5_000)
    with pytest.raises(MixError, match=rf"big.json: malformed JSON .* element {index} \(byte offset {offset},"):
        mix([MixSource(str(path))], str(tmp_path / "out.json"), exists=everything_exists)


def test_latin1_file_is_a_clear_error_not_a_traceback(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps([record("1"), record("2", text="café")], ensure_ascii=False).encode("latin-1"))
    with pytest.raises(MixError, match=r"not UTF-8 text: byte 0xe9 at element 1 \(byte offset \d+"):
        mix([MixSource(str(path))], str(tmp_path / "out.json"), exists=everything_exists)


def test_image_path_leaving_the_root_is_counted_missing_not_a_crash(tmp_path):
    path = write_array(tmp_path / "in.json", [record("1", "../secret.jpg"), record("2", "a/../b.jpg")])
    seen = []

    def exists(location):
        seen.append(location)
        return True

    result = mix(
        [MixSource(str(path))],
        str(tmp_path / "out.json"),
        MixConfig(image_root=str(tmp_path / "root"), max_missing=1),
        exists=exists,
    )
    assert result.missing_count == 1
    assert "leaves the image root" in result.missing_examples[0][1]
    assert seen == [f"{tmp_path}/root/b.jpg"]  # '..' inside the root is resolved, not refused
