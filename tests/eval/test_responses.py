"""Per-shard responses files: atomic appends, merged reads, torn lines, resume filters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from som import storage
from som.eval import responses
from som.eval.responses import Response, ResponsesError, ShardWriter


def record(
    id_: str, answer: str = "yes", model: str = "m", prompt_hash: str = "h", time: str = "2026-11-21T10:00:00+00:00"
) -> Response:
    return Response(id=id_, answer=answer, model=model, variant="plain", prompt_hash=prompt_hash, time=time)


def test_append_writes_whole_lines_one_per_id(tmp_path: Path) -> None:
    url = responses.shard_url(str(tmp_path), 0)
    writer = ShardWriter(url)
    assert writer.append([record("a"), record("b")]) == 2
    assert writer.append([record("a"), record("c"), record("c")]) == 1  # same a: nothing to write
    # a re-asked question replaces its line in place: still one line per id
    assert writer.append([record("b", "no", prompt_hash="new")]) == 1
    lines = [json.loads(line) for line in Path(url).read_text().splitlines()]
    assert [(x["id"], x["answer"]) for x in lines] == [("a", "yes"), ("b", "no"), ("c", "yes")]
    # a new writer (the task restarted) starts from what the file holds
    again = ShardWriter(url)
    assert [r.id for r in again.records] == ["a", "b", "c"]
    assert again.append([record("d")]) == 1
    assert [r.id for r in responses.read_shard(url)] == ["a", "b", "c", "d"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_failed_write_keeps_the_writer_consistent(tmp_path: Path) -> None:
    writer = ShardWriter(responses.shard_url(str(tmp_path), 0))
    writer.append([record("a")])
    shard = Path(writer.url)
    shard.unlink()
    (shard / "blocker").mkdir(parents=True)  # the atomic rename onto it now fails
    with pytest.raises(OSError):
        writer.append([record("b")])
    assert [r.id for r in writer.records] == ["a"]
    (shard / "blocker").rmdir()
    shard.rmdir()
    assert writer.append([record("b")]) == 1  # not silently treated as written before
    assert [r.id for r in responses.read_shard(writer.url)] == ["a", "b"]


def test_torn_last_line_is_dropped_but_a_bad_middle_line_is_an_error(tmp_path: Path) -> None:
    url = responses.shard_url(str(tmp_path), 1)
    good = record("a").to_line() + "\n" + record("b").to_line() + "\n"
    Path(url).write_text(good + record("c").to_line()[:25])
    assert [r.id for r in responses.read_shard(url)] == ["a", "b"]
    assert ShardWriter(url).append([record("c")]) == 1
    assert [r.id for r in responses.read_shard(url)] == ["a", "b", "c"]

    Path(url).write_text(record("a").to_line() + "\n{not json}\n" + record("b").to_line() + "\n")
    with pytest.raises(ResponsesError, match=r"responses-00001\.jsonl:2"):
        responses.read_shard(url)
    Path(url).write_text(json.dumps({"id": "x"}) + "\n")
    with pytest.raises(ResponsesError, match=r":1: not a responses record"):
        responses.read_shard(url)


def test_merge_of_shards_and_resume_filters(tmp_path: Path) -> None:
    folder = responses.variant_dir(str(tmp_path), "pope", "plain")
    later = "2026-11-22T08:00:00+00:00"
    ShardWriter(responses.shard_url(folder, 1)).append([record("b", "B1", prompt_hash="old"), record("c")])
    ShardWriter(responses.shard_url(folder, 0)).append([record("a"), record("b", "B0", time=later)])
    Path(folder, "notes.jsonl").write_text("ignored\n")
    Path(folder, "responses-00002.jsonl.bak").write_text("ignored\n")
    assert [Path(u).name for u in responses.shard_files(folder)] == ["responses-00000.jsonl", "responses-00001.jsonl"]
    merged = responses.read_responses(folder)
    assert sorted(merged) == ["a", "b", "c"]
    assert merged["b"].answer == "B0"  # the newest answer wins, whatever the file order
    assert responses.answers(folder) == {"a": "yes", "b": "B0", "c": "yes"}
    assert responses.answered_ids(folder) == {"a", "b", "c"}
    # an answer to an older prompt does not count as answered
    expected = {"a": "h", "b": "old", "c": "h"}
    assert responses.answered_ids(folder, model="m", prompt_hashes=expected) == {"a", "c"}
    assert responses.answered_ids(folder, model="other") == set()
    assert responses.read_responses(str(tmp_path / "missing")) == {}


def test_another_models_answers_are_refused(tmp_path: Path) -> None:
    folder = str(tmp_path)
    ShardWriter(responses.shard_url(folder, 0)).append([record("a", model="llava-13b")])
    records = responses.read_responses(folder).values()
    responses.check_model(records, "llava-13b", folder)
    with pytest.raises(ResponsesError, match="llava-13b"):
        responses.check_model(records, "tiny", folder)


def test_prompt_hash_tracks_prompt_image_and_options() -> None:
    base = responses.prompt_hash("Is there a dog?", "img/1.jpg")
    assert base == responses.prompt_hash("Is there a dog?", "img/1.jpg", {})
    assert base != responses.prompt_hash("Is there a cat?", "img/1.jpg")
    assert base != responses.prompt_hash("Is there a dog?", "img/2.jpg")
    assert base != responses.prompt_hash("Is there a dog?", "img/1.jpg", {"segmenter": "slic"})


def test_shards_in_object_storage(s3_server, s3_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers.s3 import use_s3

    use_s3(monkeypatch, s3_server)
    folder = responses.variant_dir(storage.join(s3_prefix, "eval"), "mme", "tags")
    writer = ShardWriter(responses.shard_url(folder, 0))
    writer.append([record("a")])
    writer.append([record("b")])
    ShardWriter(responses.shard_url(folder, 3)).append([record("c")])
    names = [u.rsplit("/", 1)[-1] for u in responses.shard_files(folder)]
    assert names == ["responses-00000.jsonl", "responses-00003.jsonl"]
    assert responses.answers(folder) == {"a": "yes", "b": "yes", "c": "yes"}
    assert [r.id for r in ShardWriter(responses.shard_url(folder, 0)).records] == ["a", "b"]
