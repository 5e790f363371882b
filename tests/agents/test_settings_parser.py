"""The one settings parser (:mod:`agents.settings_parser`): hand-worked cases of each annotation, from text and from
file mappings, and the errors (click usage errors naming the key, the value and what is allowed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import click
import numpy as np
import pytest

from agents.settings_parser import file_value, parse_settings, parse_value, text_of
from flexrec_env.feedback import FeedbackConfig

TYPES: dict[str, Any] = {
    "flag": bool,
    "count": int,
    "rate": float,
    "name": str,
    "mode": Literal["swap", "marginal", "list"],
    "limit": int | None,
    "label": str | None,
    "path": str | Path,
    "bounds": tuple[float, float] | None,
    "names": tuple[str, ...],
    "extra": dict[str, Any],
    "feedback": FeedbackConfig | Mapping[str, Any] | None,
}


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("flag", "true", True),
        ("flag", "False", False),
        ("count", "8", 8),
        ("count", "150_000", 150_000),
        ("count", "-3", -3),
        ("rate", "1e-3", 0.001),
        ("rate", "inf", float("inf")),  # the parser checks the type; the dataclass says whether inf is in range
        ("rate", "3", 3.0),
        ("name", "3", "3"),  # strings are never read as numbers
        ("name", "true", "true"),
        ("name", "null", "null"),  # nor as None where None is not allowed
        ("mode", "marginal", "marginal"),
        ("limit", "None", None),
        ("limit", "null", None),
        ("limit", "5", 5),
        ("label", "None", None),
        ("label", "5", "5"),
        ("path", "data/ml-100k", "data/ml-100k"),
        ("bounds", "[1, 5]", (1, 5)),
        ("bounds", "null", None),
        ("names", '["a", "b"]', ("a", "b")),
        ("extra", '{"a": 1}', {"a": 1}),
        ("feedback", '{"observe_prob": 0.3}', {"observe_prob": 0.3}),
    ],
)
def test_text_becomes_the_value_the_annotation_allows(key, text, expected):
    value = parse_value(key, text, TYPES[key], "--set")
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("count", "true", "count='true'; allowed: an integer"),  # bool is not int
        ("count", "2.5", "count='2.5'; allowed: an integer"),  # nor is a float
        ("count", "1e3", "count='1e3'; allowed: an integer"),
        ("count", "None", "count='None'; allowed: an integer"),  # None only where allowed
        ("count", "", "count=''; allowed: an integer"),
        ("rate", "fast", "rate='fast'; allowed: a number"),
        ("rate", "nan", "rate=nan; allowed: a number"),  # never NaN
        ("rate", "true", "rate='true'; allowed: a number"),
        ("count", "1" * 5000, f"count='{'1' * 5000}'; allowed: an integer"),  # more digits than Python converts
        ("flag", "1", "flag='1'; allowed: true or false"),
        ("flag", "yes", "flag='yes'; allowed: true or false"),
        ("mode", "bogus", "mode='bogus'; allowed: one of ['swap', 'marginal', 'list']"),
        ("limit", "2.5", "limit='2.5'; allowed: an integer or None"),
        ("bounds", "1,5", "bounds='1,5'; allowed: a tuple of float values or None"),
        ("names", '["a", 1]', "names=('a', 1); allowed: a tuple of str values"),
        ("extra", "[1]", "extra='[1]'; allowed: a mapping"),
    ],
)
def test_text_that_does_not_fit_is_a_usage_error(key, text, message):
    with pytest.raises(click.BadParameter) as error:
        parse_value(key, text, TYPES[key], "--set")
    assert error.value.format_message() == f"Invalid value for --set: {message}"
    assert isinstance(error.value, click.UsageError) and error.value.exit_code == 2


def test_pairs_and_file_mappings_give_the_same_settings():
    pairs = ["count=8", "rate=1e-3", "flag=true", "limit=null", 'names=["a"]', "name= spaced = kept"]
    from_text = parse_settings(pairs, TYPES, "--set")
    assert from_text == {"count": 8, "rate": 0.001, "flag": True, "limit": None, "names": ("a",), "name": " spaced = kept"}
    # YAML gives 1e-3 as a string, numpy gives its own scalars: the same values come out.
    mapping = {"count": np.int64(8), "rate": "1e-3", "flag": True, "limit": None, "names": ["a"], "name": " spaced = kept"}
    assert parse_settings(mapping, TYPES, "--set") == from_text
    assert parse_settings({"rate": np.float32(0.3), "count": 3}, TYPES, "--set") == {"rate": 0.3, "count": 3}
    with pytest.raises(click.BadParameter, match="count=True"):
        parse_settings({"count": True}, TYPES, "--set")  # a YAML boolean is not a count
    with pytest.raises(click.BadParameter, match="count=2.5"):
        parse_settings({"count": 2.5}, TYPES, "--set")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("name", True, "name=True; allowed: a string"),  # not the text 'true'
        ("name", 1.0, "name=1.0; allowed: a string"),  # nor '1.0'
        ("path", None, "path=None; allowed: a string or a Path"),  # nor 'null'
        ("count", 1.0, "count=1.0; allowed: an integer"),
        ("flag", 1, "flag=1; allowed: true or false"),
        ("names", ["a", 1], "names=('a', 1); allowed: a tuple of str values"),
        ("rate", float("nan"), "rate=nan; allowed: a number"),
    ],
)
def test_file_values_are_checked_as_they_are_not_as_text(key, value, message):
    with pytest.raises(click.BadParameter) as error:
        parse_settings({key: value}, TYPES, "--set")
    assert error.value.format_message() == f"Invalid value for --set: {message}"


def test_file_values_that_fit_are_kept_as_they_are():
    mapping = {"label": None, "bounds": [1, 5.5], "extra": {"a": [1]}, "rate": np.float64(2.5), "flag": np.True_}
    assert parse_settings(mapping, TYPES, "--set") == {
        "label": None, "bounds": (1, 5.5), "extra": {"a": [1]}, "rate": 2.5, "flag": True
    }  # fmt: skip
    assert parse_settings({"rate": float("inf")}, TYPES, "--set") == {"rate": float("inf")}
    # Undeclared keys (a factory's **kwargs): text is read as JSON, other values stay as they are.
    assert parse_settings({"a": "123", "b": 1.0, "c": None}, None, "--scenario-arg") == {"a": 123, "b": 1.0, "c": None}


def test_unknown_keys_and_keys_with_their_own_option_are_refused():
    with pytest.raises(click.BadParameter, match=r"unknown key 'cuont' of the test agent; allowed: \['a', 'b'\]"):
        parse_settings(["cuont=1"], {"b": int, "a": int}, "--set", owner="the test agent")
    with pytest.raises(click.BadParameter, match="need='trending' is not set here: use --need"):
        parse_settings(["need=trending"], {"a": int}, "--env-arg", elsewhere={"need": "--need"})
    with pytest.raises(click.BadParameter, match="'count'; expected KEY=VALUE"):
        parse_settings(["count"], TYPES, "--set")
    with pytest.raises(click.BadParameter, match="'=3'; expected KEY=VALUE"):
        parse_settings(["=3"], TYPES, "--set")


def test_undeclared_keys_are_read_as_json_then_text():
    """A third-party factory that takes ``**kwargs`` checks its keys itself."""
    assert parse_settings(["a=3", "b=true", "c=data/x", "d=[1]"], None, "--scenario-arg") == {
        "a": 3,
        "b": True,
        "c": "data/x",
        "d": [1],
    }


def test_text_of_writes_what_the_command_line_would():
    assert [text_of(v) for v in (True, None, 3, 2.5, np.float32(0.3), np.int64(7), "1e-3", [1, 2], {"a": 1})] == [
        "true",
        "null",
        "3",
        "2.5",
        "0.3",
        "7",
        "1e-3",
        "[1, 2]",
        '{"a": 1}',
    ]


def test_nested_tuples_come_from_json_lists():
    from flexrec_env.config import SessionConfig
    from scenarios.settings import field_types

    annotation = field_types(SessionConfig)["need_transition"]
    assert parse_value("need_transition", "[[0.5, 0.5], [0.2, 0.8]]", annotation, "--env-arg") == ((0.5, 0.5), (0.2, 0.8))
    assert file_value("need_transition", [[1, 0], [0, 1]], annotation, "--env-arg") == ((1, 0), (0, 1))
