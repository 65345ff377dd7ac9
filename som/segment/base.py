"""The segmenter protocol, a registry entry's shape, and the typed parsing of its parameters.

The table of segmenters by name is `som.segment.registry`; it imports the segmenter modules,
and they import only this module, so the registry is never imported back (no cycle).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from som.segment.mask import Mask


class Segmenter(Protocol):
    """Turns an RGB image into object masks.

    `source` names the image (its file name or URI); only annotation-backed segmenters such as
    `coco` use it, to find the image's annotations.
    """

    name: str

    def generate(self, image: np.ndarray, *, source: str | None = None) -> list[Mask]: ...

    def describe(self) -> dict[str, Any]:
        """Name and parameters, recorded in every output's metadata."""
        ...


@dataclass(frozen=True)
class SegmenterSpec:
    """A registry entry: a params dataclass and the factory (usually the segmenter class) that
    builds the segmenter from it.

    uses_gpu: the segmenter holds a neural model that runs on the GPU when there is one, so
    `som mark` runs it in one process instead of one model copy per core.
    """

    name: str
    params_type: type
    factory: Callable[[Any], Segmenter]
    summary: str
    uses_gpu: bool = False


def parse_params(params_type: type, values: Mapping[str, Any]) -> Any:
    """Build the params dataclass, converting CLI strings ("32", "0.9", "true") by field type."""
    fields = {f.name: f for f in dataclasses.fields(params_type)}
    hints = typing.get_type_hints(params_type)
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(sorted(unknown))} for {params_type.__name__}; "
            f"known: {', '.join(fields)}"
        )
    converted = {k: _convert(k, v, hints[k]) for k, v in values.items()}
    return params_type(**converted)


def _convert(key: str, value: Any, hint: Any) -> Any:
    if not isinstance(value, str):
        return value
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value.lower() in ("none", "null") and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        try:
            if option is bool:
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if typing.get_origin(option) is typing.Literal:
                if value in typing.get_args(option):
                    return value
                raise ValueError(value)
            return option(value)
        except (TypeError, ValueError):
            continue
    raise ValueError(f"parameter {key}={value!r} is not a valid {hint}")


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)
