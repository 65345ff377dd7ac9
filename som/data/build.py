"""A versioned instruction dataset from a SoM dataset: names → listing + QA → mix → card.

Reads the latest (or a given) manifest of a SoM dataset, names every marked image's tags
(segmenter categories and COCO ground truth first, then the fallback namers given, e.g. a
describer model or CLIP, for tags still unlabeled), builds the "list items one by one" and QA
conversations, optionally mixes them into a base LLaVA instruction set, and writes

    <dest>/datasets/<version>/som_listing.json, som_qa.json, [mix.json], card.md, card.json
    <dest>/datasets/_latest                      (written last)

Everything is seeded, so the same manifest and config give the same files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from som import storage
from som.data.listing import ListingConfig, build_listing
from som.data.mixing import MixConfig, MixResult, MixSource, mix
from som.data.naming import NamingConfig, TagNames, name_tags
from som.data.qa import QAConfig, build_qa
from som.dataset.config import read_dataset_config
from som.dataset.manifest import latest_version, new_version_name, read_manifest
from som.segment.coco import CocoIndex

log = logging.getLogger(__name__)


class FallbackNamer(Protocol):
    """Names tags that earlier sources left unlabeled (a describer model, CLIP, ...)."""

    def name_unlabeled(self, marks: dict[str, Any], names: TagNames, marked_image_url: str) -> TagNames: ...


@dataclass(frozen=True)
class InstructionConfig:
    """Arguments:
    coco: COCO instances JSON (URL) whose ground truth names tags by mask IoU.
    image_root: image paths in the records are relative to it (default: the SoM dataset's
      URL, so paths read "marks/<sha256>.jpg"); None keeps full URLs.
    base_mix: a base LLaVA instruction JSON (e.g. llava_v1_5_mix665k.json) to mix into.
    base_image_root: where the base's relative image paths resolve (default: image_root).
    """

    coco: str | None = None
    naming: NamingConfig = field(default_factory=NamingConfig)
    listing: ListingConfig = field(default_factory=ListingConfig)
    qa: QAConfig = field(default_factory=QAConfig)
    image_root: str | None = ""
    base_mix: str | None = None
    base_image_root: str | None = None
    seed: int = 0


@dataclass
class InstructionBuild:
    """What a build wrote and the counts its card reports."""

    dest: str
    version: str
    manifest_version: str
    images: int = 0
    listing_records: int = 0
    qa_records: int = 0
    qa_kinds: Counter = field(default_factory=Counter)
    name_sources: Counter = field(default_factory=Counter)
    naming_errors: list[str] = field(default_factory=list)
    listing_templates: Counter = field(default_factory=Counter)
    file_hashes: dict[str, str] = field(default_factory=dict)
    marking: dict[str, Any] | None = None
    mix: MixResult | None = None

    @property
    def folder(self) -> str:
        return storage.join(self.dest, "datasets", self.version)

    def card(self, config: InstructionConfig) -> dict[str, Any]:
        return {
            "version": self.version,
            "source_dataset": self.dest,
            "manifest_version": self.manifest_version,
            "images": self.images,
            "records": {"som_listing": self.listing_records, "som_qa": self.qa_records},
            "files_sha256": self.file_hashes,
            "marking": self.marking,
            "listing_templates": dict(self.listing_templates),
            "qa_kinds": dict(self.qa_kinds),
            "tag_name_sources": dict(self.name_sources),
            "naming_errors": self.naming_errors[:50],
            "config": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
            "mix": self.mix.as_dict() if self.mix else None,
        }

    def card_markdown(self, config: InstructionConfig) -> str:
        lines = [
            f"# SoM instruction data `{self.version}`",
            "",
            f"- from SoM dataset `{self.dest}`, manifest `{self.manifest_version}`",
            f"- marked images used: {self.images}",
            f"- listing records (`som_listing.json`): {self.listing_records}",
            f"- QA records (`som_qa.json`): {self.qa_records}",
            f"- seed: {config.seed}; COCO ground truth: `{config.coco or 'none'}`",
            f"- marked with: {json.dumps(self.marking) if self.marking else 'unknown'}",
            f"- listing questions used: {len(self.listing_templates)} distinct templates",
            "",
            "| tag names by source | tags |",
            "|---|---:|",
            *[f"| {source} | {count} |" for source, count in sorted(self.name_sources.items())],
            "",
            "| QA question kind | questions |",
            "|---|---:|",
            *[f"| {kind} | {count} |" for kind, count in sorted(self.qa_kinds.items())],
        ]
        if self.naming_errors:
            lines += ["", f"Images whose tags could not be named: {len(self.naming_errors)} (see card.json)."]
        text = "\n".join(lines) + "\n"
        return text + ("\n" + self.mix.card_markdown() if self.mix else "")


def build_instruction_data(
    dest: str,
    config: InstructionConfig = InstructionConfig(),
    *,
    manifest_version: str | None = None,
    fallback_namers: Sequence[FallbackNamer] = (),
    exists: Callable[[str], bool] | None = None,
) -> InstructionBuild:
    """Build and write one version of the instruction data of the SoM dataset at `dest`."""
    manifest_version = manifest_version or latest_version(dest)
    if manifest_version is None:
        raise ValueError(f"{dest} has no manifest yet: build the SoM dataset first (som dataset build)")
    image_root = dest if config.image_root == "" else config.image_root
    index = CocoIndex.load(config.coco) if config.coco else None
    build = InstructionBuild(dest, new_version_name(), manifest_version)
    listing, qa = [], []
    for row in read_manifest(dest, manifest_version):
        if row.status != "marked" or not row.json_uri or not row.marked_uri:
            continue
        marks = json.loads(storage.read_bytes(row.json_uri))
        try:
            names = name_tags(marks, index, config.naming, source=row.source_uri)
        except LookupError as exc:
            build.naming_errors.append(f"{row.source_uri}: {exc}")
            names = name_tags(marks, None, config.naming)
        for namer in fallback_namers:
            if any(not tag.labeled for tag in names.tags):
                names = namer.name_unlabeled(marks, names, row.marked_uri)
        build.images += 1
        build.name_sources.update(names.source_counts())
        record = build_listing(marks, names, row.marked_uri, image_root=image_root, config=config.listing)
        if record is not None:
            listing.append(record)
            build.listing_templates[record["conversations"][0]["value"].removeprefix("<image>\n")] += 1
        for qa_record in build_qa(marks, names, row.marked_uri, image_root=image_root, config=config.qa):
            qa.append(qa_record.record)
            build.qa_kinds.update(qa_record.kinds)
    build.listing_records, build.qa_records = len(listing), len(qa)
    folder = build.folder
    build.file_hashes = {
        "som_listing.json": write_json_array(storage.join(folder, "som_listing.json"), listing),
        "som_qa.json": write_json_array(storage.join(folder, "som_qa.json"), qa),
    }
    recorded = read_dataset_config(dest)
    if recorded is not None:
        build.marking = {
            "segmenter": recorded.segmenter,
            "segmenter_params": recorded.segmenter_params,
            "style": recorded.options.as_metadata(),
        }
    if config.base_mix:
        sources = [
            MixSource(config.base_mix, kind="base"),
            MixSource(storage.join(folder, "som_listing.json"), kind="som-listing", id_prefix="som-"),
            MixSource(storage.join(folder, "som_qa.json"), kind="som-qa", id_prefix="som-"),
        ]
        mix_config = MixConfig(seed=config.seed, image_root=config.base_image_root or image_root)
        build.mix = mix(sources, storage.join(folder, "mix.json"), mix_config, exists=exists)
    card = build.card(config)
    storage.write_bytes_atomic(storage.join(folder, "card.json"), json.dumps(card, indent=2).encode())
    storage.write_bytes_atomic(storage.join(folder, "card.md"), build.card_markdown(config).encode())
    storage.write_bytes_atomic(storage.join(dest, "datasets", "_latest"), build.version.encode())
    log.info(
        "instruction data %s: %d listing + %d QA records from %d images", folder, len(listing), len(qa), build.images
    )
    return build


def write_json_array(url: str, records: list[dict[str, Any]]) -> str:
    """Write a JSON array, one record per line (LLaVA's loaders read it as one array); returns its sha256."""
    data = ("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n").encode("utf-8")
    storage.write_bytes_atomic(url, data)
    return hashlib.sha256(data).hexdigest()
