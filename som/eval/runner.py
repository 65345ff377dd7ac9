"""Answer one shard of a benchmark, resumably: what each task of an evaluation job array runs.

Why shards by position (``items[shard::num_shards]``): the loaders return items in the
published files' order, so striding gives every shard the same size and a mix of categories;
a different shard count on a rerun is still safe, because "already answered" is read from all
shard files of the variant, not only this shard's (som.eval.responses).

The model is loaded once per task and only when something is left to answer, so a rerun of a
finished evaluation costs one listing per shard. Answers are written after every batch, so a
task killed mid-shard (preemption, time limit, node failure) loses at most one batch of work.

Also here: `score_variant`, the other half of an evaluation, which turns a variant's merged
answers into the benchmark's scores (no model needed).
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from som import storage
from som.eval import responses
from som.eval.items import EvalItem
from som.eval.models import Question, is_api_spec, load_model
from som.eval.profiles import AUTO, INPUT_FORMAT
from som.eval.registry import get_benchmark
from som.eval.tagging import TAGGING_KEY, TagConfig, read_image_bytes, with_tags

log = logging.getLogger(__name__)

VARIANTS = ("plain", "tags")
"""plain: the benchmark's own images; tags: the same with Set-of-Mark tags drawn on them."""
TAG_CACHE = ("_cache", "tags")
"""Under the eval folder: tagged images, shared by every model evaluated there."""


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


def variant_items(
    benchmark: str,
    source: str,
    variant: str,
    eval_dir: str,
    *,
    limit: int | None = None,
    tag_options: Mapping[str, Any] | None = None,
) -> list[EvalItem]:
    """The benchmark's items as the model sees them in `variant` (tagged images for "tags").

    `tag_options` are `TagConfig` fields (segmenter, params, mark_options, cache_url); tagged
    images are cached under ``<eval_dir>/_cache/tags`` unless they name another cache."""
    check_variant(variant)
    items = get_benchmark(benchmark).load_items(source, limit=limit)
    if variant == "plain":
        return items
    options = dict(tag_options or {})
    options.setdefault("cache_url", storage.join(eval_dir, *TAG_CACHE))
    return with_tags(items, TagConfig.from_dict(options))


def item_hash(item: EvalItem) -> str:
    """What the model is shown, hashed: prompt, image and how it is tagged (cache aside).

    Generation settings are recorded beside it (`generation_settings`), not in it: scoring
    recomputes this hash with no model at hand."""
    tagging = {k: v for k, v in (item.meta.get(TAGGING_KEY) or {}).items() if k != "cache_url"}
    return responses.prompt_hash(item.prompt, item.image, tagging)


def shard_of(items: Sequence[EvalItem], shard: int, num_shards: int) -> list[EvalItem]:
    """This shard's items: every `num_shards`-th one, starting at `shard`."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard must be in [0, {num_shards}), got {shard}")
    return list(items[shard::num_shards])


def answer_shard(
    model: str,
    benchmark: str,
    source: str,
    variant: str,
    shard: int,
    num_shards: int,
    out_dir: str,
    *,
    limit: int | None = None,
    batch_size: int = 8,
    model_kwargs: Mapping[str, Any] | None = None,
    tag_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Answer the questions of one shard that no earlier run answered; returns the counts.

    Arguments:
    model: a `som.eval.models.load_model` spec (hub id, local folder, ``openai:<model>@<url>``).
    benchmark, source: a registry name and where its published files are.
    variant: "plain" or "tags".
    shard, num_shards: which stride of the items this task answers.
    out_dir: the run's eval folder; answers go to ``<out_dir>/<benchmark>/<variant>/
        responses-<shard>.jsonl`` (any som.storage URL).
    limit: only the first `limit` items of the benchmark (smoke runs).
    batch_size: questions per model call and per write of the shard file.
    model_kwargs: extra `load_model` arguments (device, dtype, local_files_only, prompt_profile,
        max_new_tokens: default the benchmark's own, as LLaVA's scripts generate).
    tag_options: `TagConfig` fields for the "tags" variant.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    started = time.monotonic()
    items = shard_of(
        variant_items(benchmark, source, variant, out_dir, limit=limit, tag_options=tag_options), shard, num_shards
    )
    folder = responses.variant_dir(out_dir, benchmark, variant)
    hashes = {item.id: item_hash(item) for item in items}
    existing = responses.read_responses(folder)  # every shard's file: the shard count may have changed
    responses.check_model(existing.values(), model, folder)
    settings = generation_settings(model, benchmark, model_kwargs)
    todo = [
        item
        for item in items
        if item.id not in existing
        or existing[item.id].prompt_hash != hashes[item.id]
        or existing[item.id].generation != settings
    ]
    counts: dict[str, Any] = {
        "benchmark": benchmark,
        "variant": variant,
        "shard": shard,
        "num_shards": num_shards,
        "total": len(items),
        "skipped": len(items) - len(todo),
        "answered": 0,
    }
    log.info(
        "%s/%s shard %d/%d: %d items, %d already answered",
        benchmark,
        variant,
        shard,
        num_shards,
        len(items),
        counts["skipped"],
    )
    if todo:
        writer = responses.ShardWriter(responses.shard_url(folder, shard))
        vlm = _load(model, batch_size, {**(model_kwargs or {}), "max_new_tokens": settings["max_new_tokens"]})
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            counts["answered"] += writer.append(_answer(vlm, batch, model, variant, hashes, settings))
            log.info("%s/%s shard %d: %d/%d answered", benchmark, variant, shard, counts["answered"], len(todo))
    counts["seconds"] = round(time.monotonic() - started, 3)
    return counts


def generation_settings(model: str, benchmark: str, model_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """What besides the prompt decides an answer, recorded with it so that a rerun with other
    settings (or an answer from an older input format) is asked again: the input format's
    version, the token limit (the benchmark's own unless overridden, as LLaVA's scripts:
    `model_vqa.py` 1024, `model_vqa_loader.py` 128) and, for local models, the prompt profile."""
    kwargs = model_kwargs or {}
    limit = kwargs.get("max_new_tokens") or get_benchmark(benchmark).max_new_tokens
    settings: dict[str, Any] = {"input_format": INPUT_FORMAT, "max_new_tokens": int(limit)}
    if not is_api_spec(model):
        settings["prompt_profile"] = kwargs.get("prompt_profile") or AUTO
    return settings


def _load(model: str, batch_size: int, model_kwargs: Mapping[str, Any]) -> Any:
    kwargs = dict(model_kwargs)
    if not is_api_spec(model):  # API models take no batch size (they run concurrently)
        kwargs.setdefault("batch_size", batch_size)
    return load_model(model, **kwargs)


def _answer(
    vlm: Any,
    batch: Sequence[EvalItem],
    model: str,
    variant: str,
    hashes: Mapping[str, str],
    settings: Mapping[str, Any],
) -> list[responses.Response]:
    questions = [Question(image=read_image_bytes(item), prompt=item.prompt, id=item.id) for item in batch]
    texts = vlm.answer(questions)
    if len(texts) != len(batch):
        raise RuntimeError(f"{model} gave {len(texts)} answers to {len(batch)} questions (first id {batch[0].id})")
    stamp = responses.now()
    return [
        responses.Response(
            id=item.id,
            answer=text,
            model=model,
            variant=variant,
            prompt_hash=hashes[item.id],
            time=stamp,
            generation=dict(settings),
        )
        for item, text in zip(batch, texts, strict=True)
    ]


# ----------------------------------------------------------------------------- scoring


def score_variant(
    benchmark: str,
    source: str,
    variant: str,
    eval_dir: str,
    *,
    limit: int | None = None,
    judge: Any = None,
    tag_options: Mapping[str, Any] | None = None,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """The benchmark's scores for one variant's merged answers.

    Every item must have an answer to the current prompt (an unfinished or stale run is an
    error naming how many are missing) unless `allow_partial`. Judge calls are cached under
    ``<eval_dir>/_cache/judge`` (shared by variants and reruns)."""
    bench = get_benchmark(benchmark)
    items = variant_items(benchmark, source, variant, eval_dir, limit=limit, tag_options=tag_options)
    folder = responses.variant_dir(eval_dir, benchmark, variant)
    records = responses.read_responses(folder)
    current = {item.id for item in items if item.id in records and records[item.id].prompt_hash == item_hash(item)}
    missing = [item.id for item in items if item.id not in current]
    mixed = sorted({json.dumps(records[i].generation, sort_keys=True) for i in current})
    if len(mixed) > 1:
        raise ValueError(
            f"{benchmark}/{variant}: the answers in {folder} were made with different "
            f"generation settings ({'; '.join(mixed)}); rerun the evaluation with one setting"
        )
    if missing and not allow_partial:
        raise ValueError(
            f"{benchmark}/{variant}: {len(missing)} of {len(items)} items have no current "
            f"answer in {folder} (e.g. {missing[:3]}); rerun the evaluation to answer them"
        )
    answered = [item for item in items if item.id in current]
    if bench.needs_judge and judge is None:
        raise ValueError(f"{benchmark} is scored by a judge model: pass judge=")
    extra = {}
    if "output_url" in inspect.signature(bench.score).parameters:
        extra["output_url"] = str(folder)  # where a submission-only split writes its upload file
    return bench.score(
        answered,
        {i: records[i].answer for i in current},
        judge=judge,
        cache_url=storage.join(eval_dir, "_cache", "judge"),
        **extra,
    )
