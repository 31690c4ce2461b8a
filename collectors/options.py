"""Typed, validated options: a TOML table in, a dataclass out, or one clear error.

Every config section (the daemon's and each source's) is a dataclass; its
fields are the documented keys, with their types and defaults. Unknown keys,
wrong types and missing required keys are errors that name the key and where
it was found. Numbers must be finite (NaN and infinity are refused: `interval_s =
nan` would busy-loop) and >= 0 (seconds, bytes and counts), except the keys a
class lists in its `SIGNED_KEYS` class attribute.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class OptionsError(ValueError):
    """A config section is wrong; the message names the key and its location."""


def _type_ok(value: Any, typ: Any) -> tuple[bool, Any]:
    """Whether `value` fits `typ` (with int accepted for float); returns the coerced value."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(typ):
            ok, v = _type_ok(value, arm)
            if ok:
                return True, v
        return False, value
    if typ is type(None):
        return value is None, value
    if typ is Any:
        return True, value
    if origin in (list, tuple):
        (arm, *_) = typing.get_args(typ) or (Any,)
        if not isinstance(value, list):
            return False, value
        out = []
        for item in value:
            ok, v = _type_ok(item, arm)
            if not ok:
                return False, value
            out.append(v)
        return True, out if origin is list else tuple(out)
    if origin is dict:
        return isinstance(value, dict), value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False, value
        return True, float(value)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if isinstance(typ, type):
        return isinstance(value, typ), value
    return True, value


def _type_name(typ: Any) -> str:
    return getattr(typ, "__name__", None) or str(typ).replace("typing.", "")


def _check_number(cls: type, name: str, value: Any, where: str) -> None:
    """Finite and, unless the class says the key is signed, not negative."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise OptionsError(f"{where}: key {name!r} must be a finite number, got {value!r}")
    if value < 0 and name not in getattr(cls, "SIGNED_KEYS", ()):
        raise OptionsError(f"{where}: key {name!r} must be >= 0, got {value!r}")


def parse_options(cls: type[T], raw: Mapping[str, Any], where: str) -> T:
    """Validate `raw` against dataclass `cls`; `where` says where it came from."""
    if not isinstance(raw, Mapping):
        raise OptionsError(f"{where}: expected a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise OptionsError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(fields))})"
        )
    values = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise OptionsError(f"{where}: missing required key {name!r}")
            continue
        ok, value = _type_ok(raw[name], hints[name])
        if not ok:
            raise OptionsError(
                f"{where}: key {name!r} must be {_type_name(hints[name])}, got {raw[name]!r}"
            )
        _check_number(cls, name, value, where)
        values[name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise OptionsError(f"{where}: {exc}") from exc
