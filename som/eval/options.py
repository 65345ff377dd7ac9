"""An evaluation's model and tagging options, typed: checked at the flow's input check, then
passed on as plain dicts.

Why dicts after the check: Prefect records a flow's and its tasks' parameters as JSON, and the
tagging options are hashed as given into every answer's prompt hash (som.eval.runner), so the
flow keeps taking and passing the mappings it always took; what changes is that a misspelt or
mistyped key (`max_new_token`, `mark_options.colour`) fails before any job, naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from som.eval.tagging import TagConfig
from som.settings import Settings, SettingsError, validate


class ModelOptions(Settings):
    """Extra `som.eval.models.load_model` arguments; unset keys keep the model class's defaults.

    device, dtype, local_files_only: how a local (Hugging Face) model loads; prompt_profile:
    its prompt format (som.eval.profiles; None or "auto": chosen from the model);
    max_new_tokens: the answer's token limit (default: each benchmark's own);
    max_concurrency, cache_url: an API model's parallel requests and response cache.
    """

    device: str | None = None
    dtype: str | None = None
    local_files_only: bool = False
    prompt_profile: str | None = None
    max_new_tokens: int | None = Field(default=None, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)
    cache_url: str | None = None


def check_model_options(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """`values` checked as `ModelOptions`: the keys given, typed (`"4"` → 4), as a dict."""
    try:
        return validate(ModelOptions, values or {}).model_dump(exclude_unset=True)
    except SettingsError as exc:
        raise SettingsError(f"model_kwargs: {exc}") from None


def check_tag_options(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`values` checked as `TagConfig` fields and returned as given (they are hashed as given)."""
    if not values:
        return None
    try:
        TagConfig.from_dict(values)
    except SettingsError as exc:
        raise SettingsError(f"tag_options: {exc}") from None
    return dict(values)
