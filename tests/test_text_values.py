"""parrot_jax.text_values: text to typed dataclass fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from parrot_jax.text_values import describe, parse_value, set_path


Layer = int | Literal["last"] | tuple[float, ...]


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    size: int | None = 3
    layer: Layer = "last"
    inner: Inner = field(default_factory=Inner)


def test_values_follow_the_type_hints():
    assert parse_value("k", int | None, "none") is None and parse_value("k", int | None, "4") == 4
    assert parse_value("k", bool, "Yes") is True and parse_value("k", tuple[int, ...], "1, 2,") == (1, 2)
    assert parse_value("k", Layer, "6") == 6 and parse_value("k", Layer, "last") == "last"
    assert parse_value("k", Layer, "0.5/0.5", separator="/") == (0.5, 0.5)
    assert describe(int | None) == "an int or none" and describe(tuple[int, ...]) == "a list of int"
    with pytest.raises(ValueError, match=r"^k='x': expected an int or none$"):
        parse_value("k", int | None, "x")


def test_set_path_rebuilds_nested_dataclasses():
    assert set_path(Outer(), ["inner", "mode"], "b") == Outer(inner=Inner(mode="b"))
    with pytest.raises(ValueError, match=r"^unknown key 'rat' in inner; known: rate, mode$"):
        set_path(Outer(), ["inner", "rat"], "1")
