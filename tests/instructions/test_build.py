"""A versioned instruction dataset built from a real (small) SoM dataset on local storage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from som.data.build import InstructionConfig, build_instruction_data
from tests.helpers.som_datasets import som_dataset


def test_listing_qa_mix_and_card_are_written_as_a_version(tmp_path: Path):
    dest, rows = som_dataset(tmp_path)
    base = tmp_path / "llava_mix.json"
    relative = rows[0].marked_uri[len(dest) + 1 :]
    base.write_text(
        json.dumps(
            [
                {
                    "id": "text-1",
                    "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
                },
                {
                    "id": "img-1",
                    "image": relative,
                    "conversations": [
                        {"from": "human", "value": "<image>\nWhat is this?"},
                        {"from": "gpt", "value": "A photo."},
                    ],
                },
            ]
        )
    )
    build = build_instruction_data(dest, InstructionConfig(base_mix=str(base), seed=3))
    folder = Path(build.folder)
    listing = json.loads((folder / "som_listing.json").read_text())
    qa = json.loads((folder / "som_qa.json").read_text())
    mixed = json.loads((folder / "mix.json").read_text())
    assert build.images == 2 and len(listing) == 2 and len(qa) == build.qa_records > 0
    for record in listing:
        assert record["image"].startswith("marks/") and record["conversations"][0]["value"].startswith("<image>\n")
        answer = record["conversations"][1]["value"].splitlines()
        assert [line.split(". ", 1)[1] for line in answer] == ["person", "person", "car"], "smallest tag first"
    assert len(mixed) == 2 + len(listing) + len(qa) and len({r["id"] for r in mixed}) == len(mixed)
    card = json.loads((folder / "card.json").read_text())
    assert card["records"] == {"som_listing": 2, "som_qa": len(qa)} and card["tag_name_sources"] == {
        "segmenter-category": 6
    }
    assert "som_qa.json" in (folder / "card.md").read_text()
    assert card["marking"]["segmenter"] == "coco" and card["marking"]["style"]["short_side"] == 200
    assert sum(card["listing_templates"].values()) == 2
    assert card["files_sha256"]["som_qa.json"] == hashlib.sha256((folder / "som_qa.json").read_bytes()).hexdigest()
    assert (Path(dest) / "datasets" / "_latest").read_text() == build.version
    again = build_instruction_data(dest, InstructionConfig(base_mix=str(base), seed=3))
    assert again.version != build.version
    assert (Path(again.folder) / "som_qa.json").read_text() == (folder / "som_qa.json").read_text(), (
        "seeded: same records"
    )


def test_unlabeled_tags_are_filled_by_the_describer_then_clip(tmp_path: Path):
    """Without categories or ground truth, the describer names what it answers for; CLIP the rest."""
    from som.chat_api import ChatClient
    from som.data.clip_namer import ClipNamer
    from som.data.describer import Describer
    from som.data.fallback import ClipFallback, DescriberFallback
    from tests.helpers.chat_server import ChatServer, Reply
    from tests.helpers.tiny_clip import build_tiny_clip

    dest, rows = som_dataset(tmp_path, segmenter="slic")
    server = ChatServer().start()
    try:
        # A valid answer for the first image's tags only; the second image's answers stay malformed.
        first = json.loads(Path(rows[0].json_uri).read_text())
        good = "\n".join(f"{m['label']}. thing {m['label']}: a described region" for m in first["marks"])
        server.script = lambda body, index: Reply(good if index == 0 else "no idea")
        describer = Describer(ChatClient(server.url, "test-model", cache_url=str(tmp_path / "cache")))
        clip = ClipNamer(model_id=build_tiny_clip(tmp_path / "clip"), labels=["cat", "dog", "car"])
        build = build_instruction_data(
            dest, InstructionConfig(), fallback_namers=[DescriberFallback(describer), ClipFallback(clip)]
        )
    finally:
        server.stop()
    sources = build.name_sources
    assert sources["describer"] == len(first["marks"]) and sources["clip"] > 0 and "unlabeled" not in sources
    listing = json.loads((Path(build.folder) / "som_listing.json").read_text())
    answers = [r["conversations"][1]["value"] for r in listing]
    assert any("thing 1: a described region" in a for a in answers)
    assert any(line.split(". ", 1)[1] in {"cat", "dog", "car"} for a in answers for line in a.splitlines())


def test_data_mix_command(tmp_path: Path):
    from click.testing import CliRunner

    from som.cli import cli

    (tmp_path / "img.jpg").write_bytes(b"x")
    base = [{"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}]
    som = [
        {
            "id": "a",
            "image": "img.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nList the tags."},
                {"from": "gpt", "value": "1. cat"},
            ],
        }
    ]
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "som.json").write_text(json.dumps(som))
    args = [
        "data",
        "mix",
        "--base",
        str(tmp_path / "base.json"),
        "--add",
        str(tmp_path / "som.json"),
        "--out",
        str(tmp_path / "mix.json"),
        "--image-root",
        str(tmp_path),
    ]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1 and "a" in refused.output and not (tmp_path / "mix.json").exists()
    done = CliRunner().invoke(cli, [*args, "--prefix", "som-"])
    assert done.exit_code == 0, done.output
    assert sorted(r["id"] for r in json.loads((tmp_path / "mix.json").read_text())) == ["a", "som-a"]
    assert "| som.json | som | 1 | 1 |" in done.output
