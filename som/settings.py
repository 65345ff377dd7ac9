"""Settings from YAML plus `--set key.sub=value` overrides, validated by one pydantic model.

Why one loader: a setting typed in a YAML file, a deployment's parameters or on a command line
must be checked the same way, and a mistake must name its key (`evaluate.shards: Input should
be greater than or equal to 1`, `unknown key 'evaluate.shard' (did you mean evaluate.shards?)`)
before any job starts. Command-line values arrive as text and are read as YAML scalars
(`8` → 8, `true` → True, `[a, b]` → a list) wherever the field is not a string.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

M = TypeVar("M", bound=BaseModel)


class SettingsError(ValueError):
    """Settings that cannot be used; the message names every key at fault."""


class Settings(BaseModel):
    """Base of somflow's settings models: frozen, unknown keys refused, types strict, except
    that text typed on a command line is read as YAML where a field is not text (`"8"` → 8,
    `"[a, b]"` → ("a", "b"), `"1"`/`"0"` → a bool, `"none"` → None where the field is
    optional) and a list fills a tuple field. Settings from users go through `validate` (or
    `load_settings`), whose errors are one line per key; building one in code
    (`JobSpec(nodes=0)`) raises pydantic's ValidationError, also a ValueError."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _read_text(cls, values: Any) -> Any:
        if not isinstance(values, Mapping):
            return values
        fields = cls.model_fields
        return {key: _typed(value, fields[key].annotation) if key in fields else value for key, value in values.items()}


def _options(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a `X | Y | None` annotation (just `X` when it is not a union)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def _optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def _wants_text(annotation: Any, *, literals_only: bool = False) -> bool:
    """Whether the field takes text as it is (a `str` field, or text among its `Literal`
    choices; with `literals_only`, only the latter: "none" is a choice, not None)."""
    return any(
        (not literals_only and (option is str or option is Any))
        or (typing.get_origin(option) is Literal and any(isinstance(v, str) for v in typing.get_args(option)))
        for option in _options(annotation)
    )


def _keep_int(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    return value if type(value) is int else handler(value)


Real = Annotated[float, WrapValidator(_keep_int)]
"""A float field that keeps an int given as an int (`10` stays `10`; text is read as a float).
For settings whose JSON is persisted or hashed (dataset.json, marking fingerprints, tagged-image
cache keys, segmenter metadata): the values recorded before they were `Settings` kept ints as
given, and turning them into floats would change those bytes for the same settings."""


def _typed(value: Any, annotation: Any) -> Any:
    """A value as typed text becomes what the field holds; lists fill tuple fields."""
    options = _options(annotation)
    if (
        isinstance(value, str)
        and value.lower() in ("none", "null")
        and _optional(annotation)
        and not _wants_text(annotation, literals_only=True)
    ):
        return None
    if isinstance(value, str) and not _wants_text(annotation):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(value, str) and float in options:  # YAML 1.1 reads "3e-4" as text
            try:
                value = float(value)
            except ValueError:
                pass
        elif type(value) is int and int not in options:
            if float in options:  # text is read as the field's type: "2" is 2.0 for a float
                value = float(value)
            elif bool in options and value in (0, 1):
                value = bool(value)
    if any(typing.get_origin(option) is tuple for option in options):
        if isinstance(value, str):
            value = (value,)
        elif isinstance(value, list):
            value = tuple(value)
    return value


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["train.nodes=2", "evaluate.suite=llava15"]`` → nested mapping, values read as YAML."""
    import yaml

    flat: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"override {pair!r}: expected KEY=VALUE (e.g. evaluate.shards=8)")
        try:
            flat[key.strip()] = yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError:
            flat[key.strip()] = text
    return nest(flat)


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys (``train.nodes``) as nested mappings."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SettingsError(f"{key}: {part} is both a value and a section")
            node = child
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf] = merge(node[leaf], nest(value))
        else:
            node[leaf] = dict(nest(value)) if isinstance(value, Mapping) else value
    return nested


def merge(low: Mapping[str, Any], high: Mapping[str, Any]) -> dict[str, Any]:
    """`high` over `low`, section by section."""
    merged = dict(low)
    for key, value in high.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML mapping from `path` (an empty file is an empty mapping)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path} must be a mapping of key: value, got {type(data).__name__}")
    return nest(data)


def load_settings(
    model: type[M],
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
) -> M:
    """`model` from a YAML file or mapping, then `overrides` (KEY=VALUE strings or a mapping)."""
    base = {} if source is None else nest(source) if isinstance(source, Mapping) else read_yaml(source)
    extra = nest(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    return validate(model, merge(base, extra))


def validate(model: type[M], values: Mapping[str, Any]) -> M:
    """`model(**values)`, with every error as one line naming its dotted key."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise SettingsError("; ".join(_describe(model, error) for error in exc.errors())) from None


def _describe(model: type[BaseModel], error: Any) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        known = _field_names(model, error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        prefix = ".".join(str(part) for part in error["loc"][:-1])
        hint = (
            f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)"
            if close
            else f" (known: {', '.join(known)})"
            if known
            else ""
        )
        return f"unknown key '{key}'{hint}"
    # a validator's own ValueError reads as its message, without pydantic's "Value error, "
    message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
    return f"{key}: {message}" if key else message


def _field_names(model: type[BaseModel], path: Iterable[Any]) -> list[str]:
    """The field names of the (sub)model at `path`, for did-you-mean hints."""
    current: Any = model
    for part in path:
        field = getattr(current, "model_fields", {}).get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return list(getattr(current, "model_fields", {}))
