"""The one settings check: values against annotations and ranges, by hand, and through every config of every layer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
import pytest

from agents.benchmark import BenchmarkConfig
from agents.critic import CriticConfig
from agents.llm import LLMPolicyConfig
from agents.policy import TransformerPolicyConfig
from agents.recommenders import BPRConfig, SASRecConfig
from agents.sb3 import SB3Config
from agents.supervised import SupervisedConfig
from agents.trainer import TrainerConfig
from flexrec_env import EnvConfig, FeedbackConfig
from scenarios import SyntheticConfig
from scenarios.logged import LogConfig
from scenarios.settings import check_fields, check_value, in_range

CONFIGS = [
    TrainerConfig, CriticConfig, TransformerPolicyConfig, SupervisedConfig, LLMPolicyConfig, BPRConfig, SASRecConfig,
    SB3Config, BenchmarkConfig, EnvConfig, FeedbackConfig, SyntheticConfig, LogConfig,
]  # fmt: skip


@dataclass(frozen=True)
class Example:
    count: int = 1
    rate: float = 0.5
    flag: bool = True
    mode: Literal["a", "b"] = "a"
    limit: float | None = None
    names: tuple[str, ...] = ()
    extra: dict[str, int] = field(default_factory=dict)
    inner: CriticConfig = field(default_factory=CriticConfig)

    def __post_init__(self) -> None:
        check_fields(self, {"count": ">= 1", "rate": "(0, 1]", "limit": ">= 0"})


@pytest.mark.parametrize(
    ("value", "allowed", "inside"),
    [(0, ">= 0", True), (0, "> 0", False), (-1, "<= -1", True), (1, "< 1", False), (0, "[0, 1)", True), (1, "[0, 1)", False),
     (0, "(0, 1]", False), (1, "(0, 1]", True), (1e9, "[0, inf)", True)],
)  # fmt: skip
def test_ranges_by_hand(value, allowed, inside):
    assert in_range(value, allowed) is inside


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"count": 0}, "count=0; allowed: an integer >= 1"),
        ({"count": True}, "count=True; allowed: an integer >= 1"),  # a bool is not a count
        ({"count": 2.0}, "count=2.0; allowed: an integer >= 1"),
        ({"rate": 0}, "rate=0; allowed: a number in (0, 1]"),
        ({"rate": float("nan")}, "rate=nan; allowed: a number in (0, 1]"),
        ({"rate": "0.5"}, "rate='0.5'; allowed: a number in (0, 1]"),
        ({"flag": 1}, "flag=1; allowed: true or false"),
        ({"mode": "c"}, "mode='c'; allowed: one of ['a', 'b']"),
        ({"limit": -1.0}, "limit=-1.0; allowed: a finite number >= 0 or None"),
        ({"names": ("x", 1)}, "names=('x', 1); allowed: a tuple of str values"),
        ({"names": ["x"]}, "names=['x']; allowed: a tuple of str values"),
        ({"extra": [1]}, "extra=[1]; allowed: a mapping"),
        ({"inner": {"hidden": 3}}, "inner={'hidden': 3}; allowed: a CriticConfig"),
    ],
)
def test_a_bad_value_is_named_with_what_is_allowed(setting, message):
    with pytest.raises(ValueError, match=re.escape(f"invalid Example setting {message}")):
        Example(**setting)


def test_good_values_pass():
    example = Example(count=np.int64(3), rate=1, limit=None, names=("x", "y"), extra={"k": 1})
    assert example.count == 3 and example.rate == 1
    assert Example(limit=0.0, mode="b").limit == 0.0
    check_value("total_steps", 5, int, ">= 1")  # no error
    with pytest.raises(ValueError, match=r"^total_steps=0; allowed: an integer >= 1$"):
        check_value("total_steps", 0, int, ">= 1")


@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda c: c.__name__)
def test_every_config_checks_every_field(config_class):
    """The defaults pass, and a value of no allowed type is refused by name in every field."""
    config_class()
    for config_field in fields(config_class):
        with pytest.raises(ValueError, match=re.escape(f"{config_field.name}=<object object")):
            config_class(**{config_field.name: object()})


def test_config_ranges_name_the_value():
    with pytest.raises(ValueError, match=re.escape("kl_coef=-0.5; allowed: a finite number >= 0 or None")):
        TrainerConfig(kl_coef=-0.5)
    with pytest.raises(ValueError, match=re.escape("advantage='grpo'; allowed: one of ['list', 'swap', 'flexrec']")):
        TrainerConfig(advantage="grpo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("lora_dropout=1.0; allowed: a number in [0, 1)")):
        LLMPolicyConfig(lora_dropout=1.0)
    with pytest.raises(ValueError, match=re.escape("gamma=1.5; allowed: a number in [0, 1]")):
        SB3Config(gamma=1.5)
    with pytest.raises(ValueError, match=re.escape("model=''; allowed:")):
        LLMPolicyConfig(model="")


def test_any_allows_anything():
    @dataclass(frozen=True)
    class Loose:
        value: Any = None

        def __post_init__(self) -> None:
            check_fields(self)

    assert Loose(value=object()).value is not None and Loose(value=3).value == 3
