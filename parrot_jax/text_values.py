"""Text to typed dataclass fields: how command-line values (``--set model.sinkhorn.epsilon=0.1``,
``--encoders wavlm-base:layer=6``) become the values of frozen dataclass fields, refused where given.

A field's type hint says what its text may be:

- ``bool``: true/false (also 1/0, yes/no); ``int``, ``float``, ``str``: as Python reads them, a float
  finite (inf and nan refused: no setting of this project takes them);
- ``Literal["a", "b"]``: one of the listed strings;
- ``X | None``: "none" (or "null") for None, else an X; ``X | Y``: the first that reads the text;
- ``tuple[X, ...]``: items separated by `separator` (default ","; empty items are dropped, so an empty
  text is the empty tuple).

`set_path(obj, ["model", "sinkhorn", "epsilon"], "0.1")` walks nested dataclasses and rebuilds them
with `dataclasses.replace`, so their own checks run at once; `field_value` gives the new value of the
outermost field without rebuilding `obj` (for checks that must wait for several fields). Every refusal is one ValueError line naming
the dotted key and what it accepts.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Sequence, Union

TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


def describe(kind: Any) -> str:
    """What a value of type `kind` may be written as, in words ("an int", "one of 'loss', 'accuracy'")."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is bool:
        return "true or false"
    if kind in (int, float, str):
        return {int: "an int", float: "a float", str: "a string"}[kind]
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        parts = ["none" if a is type(None) else describe(a) for a in args]
        return " or ".join(parts)
    if origin is tuple:
        return f"a list of {describe(args[0]).removeprefix('an ').removeprefix('a ')}"
    return getattr(kind, "__name__", str(kind))


def parse_value(key: str, kind: Any, text: str, separator: str = ",") -> Any:
    """`text` as a value of type `kind`; a ValueError naming `key` and what it accepts otherwise."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    text = text.strip()
    refused = ValueError(f"{key}={text!r}: expected {describe(kind)}")
    if kind is bool:
        if text.lower() not in TRUE + FALSE:
            raise refused
        return text.lower() in TRUE
    if kind in (int, float, str):
        try:
            value = kind(text)
        except ValueError:
            raise refused from None
        if kind is float and not math.isfinite(value):
            raise ValueError(f"{key}={text!r}: expected a finite float, not {value}")
        return value
    if origin is Literal:
        if text not in args:
            raise refused
        return text
    if origin in (Union, types.UnionType):
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return parse_value(key, option, text, separator)
            except ValueError:
                continue
        raise refused
    if origin is tuple:
        parts = [p for p in text.split(separator) if p.strip()]
        return tuple(parse_value(key, args[0], p, separator) for p in parts)
    raise ValueError(f"{key}: a field of type {describe(kind)} cannot be set from text")


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def field_value(cls: type, path: Sequence[str], text: str, current: Any = None, prefix: str = "") -> Any:
    """The value field ``path[0]`` of the dataclass `cls` takes when the leaf at `path` is set from `text`;
    `current`: that field's present value (the nested dataclass a dotted path goes into)."""
    name, key = path[0], f"{prefix}{path[0]}"
    known = field_names(cls)
    if name not in known:
        where = f" in {prefix.rstrip('.')}" if prefix else ""
        raise ValueError(f"unknown key {name!r}{where}; known: {', '.join(known)}")
    kind = typing.get_type_hints(cls)[name]
    if dataclasses.is_dataclass(kind):
        if len(path) == 1:
            raise ValueError(f"{key} is a group of settings; set one of {', '.join(f'{key}.{n}' for n in field_names(kind))}")
        return set_path(current, path[1:], text, f"{key}.")
    if len(path) > 1:
        raise ValueError(f"{key} is {describe(kind)}, with no field {path[1]!r}")
    return parse_value(key, kind, text)


def set_path(obj: Any, path: Sequence[str], text: str, prefix: str = "") -> Any:
    """A copy of the dataclass `obj` with the field at `path` (nested dataclasses) set from `text`."""
    value = field_value(type(obj), path, text, getattr(obj, path[0], None), prefix)
    try:
        return dataclasses.replace(obj, **{path[0]: value})
    except (ValueError, TypeError) as error:
        raise ValueError(f"{prefix}{path[0]}={text.strip()!r}: {error}") from None
