"""One setting's value: strict coercion of raw text or YAML, messages, the reference table.

Raw values (a string from env or ``--set``, a YAML scalar, a typed flag) are turned into
the field's type without pydantic's lax conversions; pydantic's range errors are put into
words; ``settings_reference`` lists every setting for docs/settings.md.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import numbers
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types

from cj_runner.config.settings import _SEED_LIMIT, Settings, setting_names
from cj_runner.errors import ConfigError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_NONE = {"none", "null"}


@dataclass(frozen=True)
class _FieldKind:
    base: type
    optional: bool
    choices: tuple[str, ...] = ()


def _field_kind(name: str) -> _FieldKind:
    annotation = Settings.model_fields[name].annotation
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        annotation = args[0]
    if get_origin(annotation) is Literal:
        return _FieldKind(str, optional, tuple(str(a) for a in get_args(annotation)))
    assert isinstance(annotation, type)
    return _FieldKind(annotation, optional)


class _BadValue(ValueError):
    """A value of the wrong type; the message says what was expected."""


def _whole_number(value: Any) -> int:
    """``value`` as an int that fits the database's signed 64-bit columns."""
    number: int | None = None
    if isinstance(value, bool):
        raise _BadValue("must be a whole number")
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, numbers.Real) and float(value).is_integer():
        number = int(float(value))
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = int(value.replace("_", ""))
    if number is None:
        raise _BadValue("must be a whole number")
    if number >= _SEED_LIMIT:  # beyond the database's 64-bit integers
        raise _BadValue(f"must be < {_SEED_LIMIT}")
    if number < -_SEED_LIMIT:
        raise _BadValue(f"must be >= {-_SEED_LIMIT}")
    return number


def _coerce(name: str, value: Any) -> Any:
    """Turn a raw value (a string from env/--set, a YAML scalar, a flag) into the field's
    type without pydantic's lax conversions (no ``True`` as ``1``, no ``2.5`` as ``2``)."""
    kind = _field_kind(name)
    if isinstance(value, str):
        value = value.strip()
        if kind.optional and value.lower() in _NONE:
            return None
    if value is None:
        if kind.optional:
            return None
        raise _BadValue("must not be empty")
    if kind.base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _BadValue("must be true or false")
    if kind.base is int:
        return _whole_number(value)
    if kind.base is float:
        if isinstance(value, bool):
            raise _BadValue("must be a number")
        if isinstance(value, numbers.Real):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise _BadValue("must be a number") from None
        else:
            raise _BadValue("must be a number")
        if not math.isfinite(number):
            raise _BadValue("must be a finite number")
        return number
    if kind.choices:
        if isinstance(value, str) and value.lower() in kind.choices:
            return value.lower()
        raise _BadValue("must be one of " + ", ".join(kind.choices))
    return value


def _range_text(name: str) -> str:
    """The allowed values of a setting in words, e.g. ``> 0``, ``0 .. 1``, ``true/false``."""
    kind = _field_kind(name)
    if kind.base is bool:
        return "true/false"
    if kind.choices:
        return ", ".join(kind.choices)
    if name == "SEED":
        return "0 .. 2^63-1, or none"
    low = high = ""
    for item in Settings.model_fields[name].metadata:
        if isinstance(item, annotated_types.Gt):
            low = f"> {item.gt}"
        elif isinstance(item, annotated_types.Ge):
            low = f">= {item.ge}"
        elif isinstance(item, annotated_types.Lt):
            high = f"< {item.lt}"
        elif isinstance(item, annotated_types.Le):
            high = f"<= {item.le}"
    text = " and ".join(p for p in (low, high) if p) or "any"
    if low.startswith(">=") and high.startswith("<="):
        text = f"{low[3:]} .. {high[3:]}"
    return f"{text}, or none" if kind.optional else text


_PYDANTIC_BOUND = {
    "greater_than": ("gt", "> {}"),
    "greater_than_equal": ("ge", ">= {}"),
    "less_than": ("lt", "< {}"),
    "less_than_equal": ("le", "<= {}"),
}


def _explain(error: Mapping[str, Any]) -> str:
    bound = _PYDANTIC_BOUND.get(str(error["type"]))
    ctx = error.get("ctx") or {}
    if bound is not None and bound[0] in ctx:
        limit = ctx[bound[0]]
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return "must be " + bound[1].format(limit)
    return str(error["msg"]).removeprefix("Value error, ")


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _unknown_setting(name: str, where: str) -> ConfigError:
    names = setting_names()
    close = difflib.get_close_matches(name.upper(), names, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return ConfigError(
        f"unknown setting '{name}' {where}{hint} (valid settings: {', '.join(names)})"
    )


def settings_reference() -> list[tuple[str, str, str, str]]:
    """``(name, default, allowed values, meaning)`` for every setting, in order."""
    rows = []
    for name, info in Settings.model_fields.items():
        rows.append((name, _show(info.default), _range_text(name), info.description or ""))
    return rows


def settings_markdown_table() -> str:
    """The settings reference as a markdown table (in docs/settings.md)."""
    lines = ["| setting | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for name, default, allowed, meaning in settings_reference():
        lines.append(f"| `{name}` | {default} | {allowed} | {meaning} |")
    return "\n".join(lines) + "\n"
