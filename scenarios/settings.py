"""One check for every settings dataclass: each field's value against its annotation and its allowed range.

A config calls :func:`check_fields` first thing in ``__post_init__``; the annotation says what a field may hold
(``int``, ``float``, ``bool``, ``str``, ``Literal[...]`` for a fixed choice, ``X | None``, tuples, dicts, nested
configs) and a small table of ranges says which numbers are allowed. Ranges are written as the error message shows
them: ``">= 1"``, ``"> 0"``, ``"[0, 1)"``, ``"(0, 1]"``. Checks that involve two fields stay explicit lines in the
config's ``__post_init__``.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Example:
...     size: int = 1
...     def __post_init__(self) -> None:
...         check_fields(self, {"size": ">= 1"})
>>> Example(size=0)
Traceback (most recent call last):
...
ValueError: invalid Example setting size=0; allowed: an integer >= 1
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import operator
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Union, get_args, get_origin

import numpy as np

_COMPARISON = re.compile(r"^(>=|>|<=|<)\s*(\S+)$")
_INTERVAL = re.compile(r"^([\[(])\s*([^,\s]+)\s*,\s*([^,\s\])]+)\s*([\])])$")
_NAMES = {bool: "true or false", str: "a string", dict: "a mapping", list: "a list"}
_OPERATORS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def in_range(value: float, allowed: str) -> bool:
    """Whether ``value`` lies in ``allowed`` (``">= 1"``, ``"(0, 1]"``, ...).

    >>> in_range(0.5, "[0, 1)"), in_range(1.0, "[0, 1)"), in_range(2, ">= 2")
    (True, False, True)
    """
    if comparison := _COMPARISON.match(allowed):
        return _OPERATORS[comparison.group(1)](value, float(comparison.group(2)))
    interval = _INTERVAL.match(allowed)
    assert interval is not None, f"malformed range {allowed!r}"  # ranges are written in the code, not by users
    opening, low, high, closing = interval.groups()
    above = value > float(low) if opening == "(" else value >= float(low)
    below = value < float(high) if closing == ")" else value <= float(high)
    return above and below


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any, allowed: str | None = None, finite: bool = True) -> bool:
    """A real number, finite unless ``allowed`` names ``inf`` (e.g. ``"(0, inf]"``) or ``finite`` is False; never NaN."""
    if not (_is_int(value) or isinstance(value, (float, np.floating))) or math.isnan(value):
        return False
    return math.isfinite(value) or not finite or (allowed is not None and "inf" in allowed)


def _same_kind(value: Any, choice: Any) -> bool:
    """Whether ``value`` is the kind of value ``choice`` is (a numpy string is a string; ``True`` is not ``1``)."""
    return isinstance(value, type(choice)) and isinstance(value, bool) == isinstance(choice, bool)


def _allows(annotation: Any, value: Any, allowed: str | None, finite: bool = True) -> bool:
    """Whether ``value`` fits ``annotation`` (numbers also ``allowed``, a range, and ``finite``); ``Any`` allows anything."""
    if annotation is Any:
        return True
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_allows(member, value, allowed, finite) for member in get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is Literal:
        return any(value == choice and _same_kind(value, choice) for choice in get_args(annotation))
    if annotation in (int, float):
        fits = _is_int(value) if annotation is int else _is_number(value, allowed, finite)
        return fits and (allowed is None or in_range(value, allowed))
    if annotation in (bool, str):
        return isinstance(value, annotation)
    if origin is tuple:
        item = get_args(annotation)[0]
        return isinstance(value, tuple) and all(_allows(item, element, None, finite) for element in value)
    if origin is not None:  # dict[...], list[...]: the container, not its items
        return isinstance(value, origin)
    return not isinstance(annotation, type) or isinstance(value, annotation)


def _describe(annotation: Any, allowed: str | None, finite: bool = True) -> str:
    """What a field of ``annotation`` may hold, in words (``"an integer >= 1"``, ``"one of ['a', 'b']"``)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(member, allowed, finite) for member in get_args(annotation))
    if annotation is type(None):
        return "None"
    if origin is Literal:
        return f"one of {list(get_args(annotation))}"
    if annotation in (int, float):
        one_sided = allowed is None or _COMPARISON.match(allowed) is not None
        noun = "an integer" if annotation is int else "a finite number" if one_sided and finite else "a number"
        if allowed is None:
            return noun
        return f"{noun} {allowed}" if _COMPARISON.match(allowed) else f"{noun} in {allowed}"
    if origin is tuple:
        item = get_args(annotation)[0]
        return f"a tuple of {getattr(item, '__name__', item)} values"
    return _NAMES.get(origin or annotation, f"a {getattr(annotation, '__name__', annotation)}")


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def field_types(config_class: type) -> dict[str, Any]:
    """The resolved annotation of each field of a dataclass (``from __future__`` strings evaluated), cached."""
    if config_class not in _FIELD_TYPES:
        hints = typing.get_type_hints(config_class)
        _FIELD_TYPES[config_class] = {field.name: hints[field.name] for field in dataclasses.fields(config_class)}
    return _FIELD_TYPES[config_class]


def signature_types(function: Callable[..., Any]) -> dict[str, Any]:
    """The parameters ``function`` (a class: its constructor) takes by name, with their resolved annotations (or ``Any``).

    >>> signature_types(check_keys)
    {'what': <class 'str'>, 'given': collections.abc.Iterable[str], 'allowed': collections.abc.Iterable[str]}
    """
    by_name = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    parameters = inspect.signature(function).parameters
    hints = typing.get_type_hints(function.__init__ if isinstance(function, type) else function)  # type: ignore[misc]
    return {name: hints.get(name, Any) for name, parameter in parameters.items() if parameter.kind in by_name}


def check_keys(what: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    """A ``ValueError`` naming the keys of ``given`` outside ``allowed`` (``what`` names them) and the allowed ones.

    >>> check_keys("supervised setting(s)", ["epochs", "epoch"], ["epochs", "group_size"])
    Traceback (most recent call last):
    ...
    ValueError: unknown supervised setting(s) ['epoch']; allowed: ['epochs', 'group_size']
    """
    allowed = set(allowed)
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; allowed: {sorted(allowed) or 'none'}")


def check_value(name: str, value: Any, annotation: Any, allowed: str | None = None, owner: str = "", finite: bool = True) -> None:
    """A ``ValueError`` ``"name=value; allowed: ..."`` unless ``value`` fits ``annotation`` and the range ``allowed``.

    Numbers must be finite unless ``allowed`` names ``inf`` or ``finite`` is False (the settings parser checks types
    only, leaving ranges to the dataclass); NaN never fits a number.

    >>> check_value("total_steps", 0, int, ">= 1")
    Traceback (most recent call last):
    ...
    ValueError: total_steps=0; allowed: an integer >= 1
    """
    if not _allows(annotation, value, allowed, finite):
        prefix = f"invalid {owner} setting " if owner else ""
        raise ValueError(f"{prefix}{name}={value!r}; allowed: {_describe(annotation, allowed, finite)}")


def check_fields(config: object, ranges: Mapping[str, str] | None = None) -> None:
    """Check every field of the dataclass ``config`` against its annotation and its range in ``ranges``.

    Raises a ``ValueError`` naming the first field whose value is not allowed, its value and what is allowed. Numpy
    scalars are accepted where their Python number would be, and stored as that number.
    """
    ranges = ranges or {}
    types_ = field_types(type(config))
    unknown = sorted(set(ranges) - set(types_))
    assert not unknown, f"ranges for fields {unknown} that {type(config).__name__} does not have"
    for name, annotation in types_.items():
        value = getattr(config, name)
        check_value(name, value, annotation, ranges.get(name), owner=type(config).__name__)
        if isinstance(value, np.generic):  # a numpy scalar is kept as the Python number it equals
            object.__setattr__(config, name, value.item())
