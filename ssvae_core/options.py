"""Typed option dataclasses: declaring options, and checking raw (TOML) values against them.

A component's options are a frozen dataclass whose fields are declared with ``option``,
which records the help text and the allowed range or choices. ``parse_options`` turns a
mapping from a TOML table into that dataclass, rejecting unknown keys (with the nearest valid
name suggested), wrong types, non-finite numbers (nan, inf) and out-of-range values, each
with one message of the form ``prior.num_components must be an integer >= 2, got 0``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from ssvae_core.errors import ConfigError

T = TypeVar("T")


def option(
    default: Any,
    *,
    help: str,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    choices: Sequence[Any] | None = None,
) -> Any:
    """Declare one option field with its help text and allowed values."""
    metadata = {
        "help": help,
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_minimum": exclusive_minimum,
        "choices": tuple(choices) if choices is not None else None,
    }
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple, not a list or dict, as an option default")
    return dataclasses.field(default=default, metadata=metadata)


def suggest(name: str, allowed: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest allowed name, or an empty string."""
    match = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


_PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return "a boolean"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if origin is tuple:
        item = typing.get_args(annotation)[0]
        return "a list of " + _PLURALS.get(item, str(item))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        text = " or ".join(_describe(a) for a in args if a is not type(None))
        return text + " (or omitted)" if type(None) in args else text
    return str(annotation)


def _coerce(annotation: Any, value: Any, where: str) -> Any:
    """Check ``value`` against a field annotation; return it in the field's type."""
    origin = typing.get_origin(annotation)
    wrong = ConfigError(f"{where} must be {_describe(annotation)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError:
                continue
        raise wrong
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise wrong
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise wrong
    if annotation is str:
        if isinstance(value, str):
            return value
        raise wrong
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise wrong
        item = typing.get_args(annotation)[0]
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"unsupported option type {annotation!r} for {where}")


def _check_range(field: dataclasses.Field[Any], value: Any, where: str) -> None:
    meta = field.metadata
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{where} must be one of {allowed}, got {value!r}{suggest(str(value), [str(c) for c in choices])}")
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{where} must be a finite number, got {v!r}")
        low, high = meta.get("minimum"), meta.get("maximum")
        kind = "an integer" if isinstance(v, int) else "a number"
        if low is not None and (v <= low if meta.get("exclusive_minimum") else v < low):
            op = ">" if meta.get("exclusive_minimum") else ">="
            raise ConfigError(f"{where} must be {kind} {op} {_bound(low)}, got {value!r}")
        if high is not None and v > high:
            raise ConfigError(f"{where} must be {kind} <= {_bound(high)}, got {value!r}")


def _bound(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def check_options(options: Any, section: str) -> None:
    """Check every field of an options instance against its declared range and choices."""
    for field in dataclasses.fields(options):
        _check_range(field, getattr(options, field.name), f"{section}.{field.name}")
    validate = getattr(options, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as error:
            raise ConfigError(f"{section}.{error}") from None


def parse_options(cls: type[T], raw: Mapping[str, Any], section: str) -> T:
    """Build the options dataclass ``cls`` from a raw mapping, validating every value.

    A ``validate(self)`` method on ``cls`` may raise ``ValueError("field must ...")`` for
    cross-field rules; the message is prefixed with the section name.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            allowed = ", ".join(sorted(fields)) or "none"
            raise ConfigError(
                f"unknown option {section}.{key}{suggest(key, list(fields))}; allowed: {allowed}"
            )
        values[key] = _coerce(hints[key], value, f"{section}.{key}")
    instance = cls(**values)
    check_options(instance, section)
    return instance


def options_to_dict(options: Any) -> dict[str, Any]:
    """The options as plain TOML-ready values (tuples become lists, ``None`` is dropped)."""
    result: dict[str, Any] = {}
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        if value is None:
            continue
        result[field.name] = list(value) if isinstance(value, tuple) else value
    return result


def describe_options(cls: type) -> list[dict[str, Any]]:
    """One record per option: name, type, default, help, range/choices (for listings)."""
    hints = typing.get_type_hints(cls)
    records = []
    for field in dataclasses.fields(cls):
        meta = field.metadata
        record = {
            "name": field.name,
            "type": _describe(hints[field.name]),
            "default": field.default,
            "help": meta.get("help", ""),
        }
        if meta.get("choices") is not None:
            record["choices"] = list(meta["choices"])
        if meta.get("minimum") is not None:
            record["minimum"] = meta["minimum"]
        if meta.get("maximum") is not None:
            record["maximum"] = meta["maximum"]
        records.append(record)
    return records
