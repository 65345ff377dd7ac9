"""A dataset's marking config, recorded once so every later build and refresh matches it.

`<dest>/dataset.json` is written by the first build. Later runs that leave the marking
settings unset use it; runs that set one differently are refused, because one dataset with
two styles (or two segmenters) would be two datasets under one name.
"""

from __future__ import annotations

import json
from typing import Any

from som import storage
from som.dataset.shard import MarkConfig
from som.mark.options import MarkOptions
from som.segment import segmenter_params as parse_segmenter_params
from som.segment.auto import choose_segmenter
from som.settings import validate

CONFIG_NAME = "dataset.json"


def read_dataset_config(dest: str) -> MarkConfig | None:
    try:
        data = json.loads(storage.read_bytes(storage.join(dest, CONFIG_NAME)))
    except FileNotFoundError:
        return None
    return validate(
        MarkConfig,
        {
            "segmenter": data["segmenter"],
            "segmenter_params": data["segmenter_params"],
            "options": data["style"],
            "image_format": data["image_format"],
        },
    )


def write_dataset_config(dest: str, config: MarkConfig) -> None:
    data = {
        "segmenter": config.segmenter,
        "segmenter_params": config.segmenter_params,
        "style": config.options.as_metadata(),
        "image_format": config.image_format,
    }
    storage.write_bytes_atomic(storage.join(dest, CONFIG_NAME), json.dumps(data, indent=2).encode())


def resolve_dataset_config(
    dest: str,
    *,
    segmenter: str | None = None,
    segmenter_params: dict[str, Any] | None = None,
    coco: str | None = None,
    style: dict[str, Any] | None = None,
    image_format: str | None = None,
) -> MarkConfig:
    """The config for a run: the recorded one (checked against what the caller set) or a new one.

    `segmenter` "auto" picks coco when `coco` is given, else SAM when its checkpoint is cached,
    else slic; it is decided here, once, so every worker uses the same segmenter.
    """
    style = {k: v for k, v in (style or {}).items() if v is not None}
    recorded = read_dataset_config(dest)
    if recorded is not None:
        _check_matches(dest, recorded, segmenter, segmenter_params, style, image_format)
        return recorded
    params = dict(segmenter_params or {})
    name = segmenter or "auto"
    if name == "auto":
        name, params = ("coco", {**params, "annotations": coco}) if coco else choose_segmenter(params)
    elif name == "coco" and coco:
        params.setdefault("annotations", coco)
    config = validate(
        MarkConfig,
        {
            "segmenter": name,
            "segmenter_params": typed_params(name, params),
            "options": style,
            "image_format": image_format or "jpg",
        },
    )
    write_dataset_config(dest, config)
    return config


def typed_params(segmenter: str, params: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of `segmenter`, typed (an int field gets 20 from "20" and from 20; a float
    field reads text as a float and keeps an int as given, as recorded datasets hold it)."""
    return parse_segmenter_params(segmenter, params).model_dump()


def _check_matches(dest: str, recorded: MarkConfig, segmenter, segmenter_params, style, image_format) -> None:
    wanted = recorded.options.as_metadata()
    typed = validate(MarkOptions, style).as_metadata()
    conflicts = [
        f"{key}={value!r} (recorded {wanted[key]!r})" for key, value in style.items() if typed[key] != wanted[key]
    ]
    if segmenter not in (None, "auto", recorded.segmenter):
        conflicts.append(f"segmenter={segmenter!r} (recorded {recorded.segmenter!r})")
    if segmenter_params and typed_params(recorded.segmenter, segmenter_params) != recorded.segmenter_params:
        conflicts.append(f"segmenter_params={segmenter_params!r} (recorded {recorded.segmenter_params!r})")
    if image_format not in (None, recorded.image_format):
        conflicts.append(f"image_format={image_format!r} (recorded {recorded.image_format!r})")
    if conflicts:
        raise ValueError(
            f"{dest} was built with another marking config: {'; '.join(conflicts)}. "
            "Leave these unset to extend it, or build into a new destination."
        )
