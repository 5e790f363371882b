"""One parser for every setting given as text: ``--set``, ``--env-arg``, ``--scenario-arg`` and configuration files.

Each setting is typed by the annotation of the dataclass field it sets (:func:`scenarios.settings.field_types`) and
checked for its type by :func:`scenarios.settings.check_value`, as the dataclass checks it; ranges (``> 0``,
``(0, inf]``) are left to the dataclass's ``__post_init__``, which sees the value next. From text (``KEY=VALUE``):

* ``bool``: ``true`` or ``false`` (any case) only; ``1``, ``0`` or ``yes`` are refused;
* ``int``: digits (``150000``, ``150_000``) only; ``2.5``, ``1e3`` or ``true`` are refused;
* ``float``: any number, integers included (``1e-3``, ``3``, ``inf``; never ``nan``): the dataclass checks its range;
* ``str`` (and paths): the text as it is, never read as a number, a boolean or ``None``;
* ``Literal[...]``: one of the choices;
* ``None`` (``None`` or ``null``) only where the annotation allows it;
* tuples, lists, mappings: JSON (``[0.2, 0.8]``, ``{"observe_prob": 0.3}``).

A mapping (a configuration file) gives its strings to the same reading; its other values are checked as they are
(numpy scalars as their number, a list as a tuple where the field is a tuple): ``true`` in a file is a boolean, never
the string ``'true'``, and ``null`` is None, allowed only where the annotation allows it. Every error is a
:class:`click.BadParameter` (a usage error: exit code 2, no traceback) naming the option, the key, the value and what
is allowed.

>>> parse_settings(["group_size=8", "learning_rate=1e-3", "advantage=swap"], {"group_size": int,
...     "learning_rate": float, "advantage": Literal["list", "swap"]}, "--set")
{'group_size': 8, 'learning_rate': 0.001, 'advantage': 'swap'}
"""

from __future__ import annotations

import json
import math
import re
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePath
from typing import Any, Literal, Union, get_args, get_origin

import click
import numpy as np

from scenarios.settings import check_value

__all__ = ["file_value", "parse_settings", "parse_value", "text_of"]

_INTEGER = re.compile(r"^[+-]?\d+(_\d+)*$")
_NONE = ("None", "null")


class _NoMatch(Exception):
    """The text does not read as a value of this annotation."""


def _members(annotation: Any) -> tuple[Any, ...]:
    return get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _NoMatch from error


def _is_class(annotation: Any, base: type) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, base)


def _read_bool(text: str) -> bool:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise _NoMatch


def _read_int(text: str) -> int:
    if _INTEGER.match(text):
        try:
            return int(text)
        except ValueError as error:  # more digits than Python converts (sys.get_int_max_str_digits())
            raise _NoMatch from error
    raise _NoMatch


def _read_float(text: str) -> float:
    try:
        return float(text)
    except ValueError as error:
        raise _NoMatch from error


def _read_any(text: str) -> Any:
    try:
        return _json(text)
    except _NoMatch:
        return text


_SCALARS: dict[Any, Callable[[str], Any]] = {bool: _read_bool, int: _read_int, float: _read_float, str: str, Any: _read_any}


def _from_text(text: str, annotation: Any) -> Any:
    """``text`` as a value of one member of ``annotation`` (not a union); :class:`_NoMatch` if it does not read so."""
    if annotation in _SCALARS:
        return _SCALARS[annotation](text)
    if _is_class(annotation, PurePath):
        return text
    origin = get_origin(annotation)
    if origin is Literal:
        for choice in get_args(annotation):
            if str(choice) == text and not isinstance(choice, bool):
                return choice
        raise _NoMatch
    container = origin or annotation
    if container in (tuple, list):
        value = _json(text)
        if isinstance(value, list):
            return _tuples(value, annotation) if container is tuple else value
    elif _is_class(container, Mapping):
        value = _json(text)
        if isinstance(value, dict):
            return value
    raise _NoMatch  # not a list or an object, or a type no text stands for (a Scenario object, a callable)


def parse_value(name: str, text: str, annotation: Any, option: str) -> Any:
    """The value ``text`` stands for as a field of ``annotation``; a usage error naming it and what is allowed.

    >>> parse_value("group_size", "8", int, "--set"), parse_value("max_positives", "null", int | None, "--set")
    (8, None)
    >>> parse_value("requests_per_batch", "true", int, "--set")
    Traceback (most recent call last):
    ...
    click.exceptions.BadParameter: requests_per_batch='true'; allowed: an integer
    """
    members = _members(annotation)
    value: Any = text
    if text in _NONE and type(None) in members:
        value = None
    else:
        # Strings last: "3" is the number 3 where a number is allowed, and stays "3" only where nothing else is.
        for member in sorted(members, key=lambda m: m is str or _is_class(m, PurePath)):
            try:
                value = _from_text(text, member)
                break
            except _NoMatch:
                continue
    return _checked(name, value, annotation, option)


def _checked(name: str, value: Any, annotation: Any, option: str) -> Any:
    """``value`` if its type fits ``annotation`` (any number but NaN: ranges are the dataclass's), else a usage error."""
    try:
        check_value(name, value, annotation, finite=False)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from None
    return value


def file_value(name: str, value: Any, annotation: Any, option: str) -> Any:
    """A configuration file's non-string ``value`` as the field of ``annotation`` takes it; a usage error otherwise.

    Numpy scalars and arrays become Python numbers and lists, a list a tuple where the field is a tuple; nothing
    else is converted (``True`` is not a string, ``1.0`` not an integer, ``None`` only where allowed).

    >>> file_value("bounds", [1, 5], tuple[float, float] | None, "--set")
    (1, 5)
    >>> file_value("path", None, str, "--scenario-arg")
    Traceback (most recent call last):
    ...
    click.exceptions.BadParameter: path=None; allowed: a string
    """
    value = _tuples(_python_value(value), annotation)
    return _checked(name, value, annotation, option)


def _tuples(value: Any, annotation: Any) -> Any:
    """JSON's lists as tuples wherever ``annotation`` has a tuple, nested ones too (``tuple[tuple[float, ...], ...]``)."""
    for member in _members(annotation):
        if get_origin(member) is tuple and isinstance(value, (list, tuple)):
            items = get_args(member)
            variadic = len(items) == 2 and items[1] is Ellipsis
            return tuple(_tuples(v, items[0] if variadic else items[min(i, len(items) - 1)]) for i, v in enumerate(value))
    return value


def text_of(value: Any) -> str:
    """A value from a file or from Python as the text the command line would give for it.

    >>> [text_of(v) for v in (True, None, 3, np.float32(0.3), "1e-3", [1, 2], {"a": 1})]
    ['true', 'null', '3', '0.3', '1e-3', '[1, 2]', '{"a": 1}']
    """
    value = _python_value(value)
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return json.dumps(value)


def _python_value(value: Any) -> Any:
    """A numpy scalar as the Python number it prints as (``float32(0.3)`` is 0.3), an array as a list; else as is."""
    if isinstance(value, np.generic):
        return float(str(value)) if isinstance(value, np.floating) else value.item()
    return value.tolist() if isinstance(value, np.ndarray) else value


def _split(pair: str, option: str) -> tuple[str, str]:
    key, sep, text = pair.partition("=")
    key = key.strip()
    if not sep or not key:
        raise click.BadParameter(f"{pair!r}; expected KEY=VALUE, e.g. {option} name=value", param_hint=option)
    return key, text


def parse_settings(
    source: Sequence[str] | Mapping[str, Any],
    types_: Mapping[str, Any] | None,
    option: str,
    owner: str = "",
    elsewhere: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``KEY=VALUE`` strings (or a mapping from a file) as the settings they stand for, typed by ``types_``.

    ``types_`` maps each allowed key to its annotation (the fields of the target dataclass); a key outside it is a
    usage error listing the sorted allowed keys. With ``types_`` None the keys are left to the receiver to check
    (a third-party scenario's factory) and text is read as JSON, else kept as text. ``elsewhere`` maps keys that have
    an option of their own to that option (``{"need": "--need"}``). ``owner`` names the target in messages.
    """
    items = list(source.items()) if isinstance(source, Mapping) else [_split(pair, option) for pair in source]
    settings: dict[str, Any] = {}
    for key, raw in items:
        if elsewhere and key in elsewhere:
            raise click.BadParameter(f"{key}={raw!r} is not set here: use {elsewhere[key]}", param_hint=option)
        if types_ is not None and key not in types_:
            target = f" of {owner}" if owner else ""
            raise click.BadParameter(f"unknown key {key!r}{target}; allowed: {sorted(types_) or 'none'}", param_hint=option)
        annotation = Any if types_ is None else types_[key]
        read = parse_value if isinstance(raw, str) else file_value
        settings[key] = read(key, raw, annotation, option)
    return settings
