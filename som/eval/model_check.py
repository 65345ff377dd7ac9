"""Check a model spec before an evaluation submits any job.

Why: a wrong `--model` used to surface inside every array task, retried, as transformers'
"Repo id must be in the form 'repo_name' or 'namespace/repo_name'" for a local folder that is
not there. Checked once up front, it fails in a second with an error that says what is wrong:
a missing folder, a folder without the processor's or the model's files (named), or a hub id
that is not in the local cache while the hub is off limits. A local folder's prompt profile is
resolved too (som.eval.profiles), so a profile that does not fit the model fails here as well.
API specs (``openai:``) are not checked here; a ``served:RUN`` spec must have its
RUN/endpoint.json (a running `som serve`). No network call is made.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from som.eval.models import API_PREFIX, HF_PREFIX, SERVED_PREFIX

CONFIG_FILE = "config.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
IMAGE_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
"""transformers 5 saves the image processor inside processor_config.json, older versions apart."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRUE = {"1", "on", "yes", "true"}


class ModelSpecError(ValueError):
    """A model spec that cannot be loaded as given; the message says why and what to do."""


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids downloads (read now, not at import as huggingface_hub does)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith(("/", ".", "~"))
        or spec.endswith(("/", os.sep))
        or spec.count("/") > 1
        or os.sep in spec.replace("/", "")
        or not _REPO_ID.match(spec)
    )


def missing_folder_files(folder: Path) -> list[str]:
    """What a model folder lacks to load with AutoProcessor + AutoModelForImageTextToText,
    one entry per missing kind (alternatives joined by " or ")."""
    present = {p.name for p in folder.iterdir()}
    needs = [(CONFIG_FILE,), WEIGHT_FILES, IMAGE_PROCESSOR_FILES, TOKENIZER_FILES]
    return [" or ".join(names) for names in needs if not present.intersection(names)]


def check_model_spec(
    spec: str, *, local_files_only: bool = False, prompt_profile: str | None = None, cache_dir: str | None = None
) -> None:
    """Raise ModelSpecError (or ProfileError) when `spec` cannot load as asked.

    API specs take no prompt profile and are not checked further. A spec that exists on disk
    is a local folder and must hold a config, weights and the processor's files, and
    `prompt_profile` must fit it. A spec that does not exist is a hub id when it has that form
    (else a missing folder); a hub id must then be in the local cache when `local_files_only`
    or HF_HUB_OFFLINE forbids downloads (`cache_dir`: the hub cache, default huggingface_hub's)."""
    from som.eval.profiles import AUTO, PROFILES, ProfileError

    if prompt_profile not in (None, AUTO, *PROFILES):
        raise ProfileError(f"unknown prompt profile {prompt_profile!r}; choose {AUTO} or one of {', '.join(PROFILES)}")
    if spec.startswith(API_PREFIX):
        if prompt_profile not in (None, AUTO):
            raise ProfileError(
                f"--prompt-profile {prompt_profile} given for API model {spec!r}: API models receive the raw question"
            )
        return
    if spec.startswith(SERVED_PREFIX):
        from som.serve.endpoint import EndpointError, read_endpoint

        if prompt_profile not in (None, AUTO):
            raise ProfileError(
                f"--prompt-profile {prompt_profile} given for {spec!r}: the server applies its "
                "own (som serve --prompt-profile)"
            )
        try:
            read_endpoint(spec[len(SERVED_PREFIX) :])
        except EndpointError as exc:
            raise ModelSpecError(str(exc)) from None
        return
    name = spec.removeprefix(HF_PREFIX)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelSpecError(
                f"model {name!r} is a file; pass the model's folder (config.json, weights, processor files)"
            )
        missing = missing_folder_files(path)
        if missing:
            raise ModelSpecError(
                f"model folder {name!r} is missing {'; '.join(missing)}. An exported run "
                "holds them (som train export); copy missing processor files from the base "
                "model's folder"
            )
        _check_profile(str(path), prompt_profile)
        return
    if _looks_like_path(name):
        raise ModelSpecError(f"model folder {name!r} does not exist (not a hub id either: those are 'owner/name')")
    offline = local_files_only or hub_offline()
    if offline and not _cached(name, cache_dir):
        why = "--local-files-only" if local_files_only else "HF_HUB_OFFLINE=1"
        raise ModelSpecError(
            f"hub model {name!r} is not in the local Hugging Face cache and {why} forbids "
            f"downloading it; download it first on a machine with access "
            f"(`hf download {name}`, into $HF_HOME shared with the nodes) or pass a local folder"
        )


def _check_profile(folder: str, prompt_profile: str | None) -> None:
    """Resolve the folder's prompt profile from its config and processor (no weights loaded)."""
    from transformers import AutoConfig, AutoProcessor

    from som.eval.profiles import resolve_profile

    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    resolve_profile(prompt_profile, config, AutoProcessor.from_pretrained(folder, local_files_only=True))


def _cached(repo_id: str, cache_dir: str | None) -> bool:
    """Whether the hub cache holds the repo's config.json (what loading reads first)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, CONFIG_FILE, cache_dir=cache_dir), str)
