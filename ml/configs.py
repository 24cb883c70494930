"""Config dataclasses to and from JSON: a built artefact records its whole configuration as a dict
(``dataclasses.asdict``) and everything that reads it later rebuilds the very same config from it."""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Mapping
from types import NoneType, UnionType
from typing import Any, TypeVar

log = logging.getLogger(__name__)
C = TypeVar("C")


def from_dict(cls: type[C], data: Mapping[str, Any] | None, what: str = "") -> C:
    """``cls`` (a dataclass, nested ones included) from ``data`` as ``asdict`` wrote it: lists become the
    tuples the fields hold, nested dicts their dataclasses. A key ``cls`` does not know (written by another
    version) is logged and left out; a field ``data`` lacks keeps its default; a None keeps the default
    where the field cannot be None."""
    hints = typing.get_type_hints(cls)
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        log.warning("%s: settings unknown to this version ignored: %s", what or cls.__name__, ", ".join(unknown))
    values = {}
    for name in names & set(data):
        value = _value(hints[name], data[name], f"{what or cls.__name__}.{name}")
        if value is not None or _optional(hints[name]):
            values[name] = value
    return cls(**values)


def _optional(hint: Any) -> bool:
    return isinstance(hint, UnionType) and NoneType in typing.get_args(hint)


def _value(hint: Any, value: Any, what: str) -> Any:
    if value is None:
        return None
    if _optional(hint):
        hint = next(a for a in typing.get_args(hint) if a is not NoneType)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, what)
    if typing.get_origin(hint) is tuple:
        inner = typing.get_args(hint)[0]
        return tuple(_value(inner, v, what) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # JSON writes 1.0 as 1
    return value
