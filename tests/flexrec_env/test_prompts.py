"""The prompt in words: level words at their thresholds, candidate descriptions, and the label positions."""

from __future__ import annotations

import numpy as np
import pytest

from flexrec_env.prompts import (
    DEFAULT_PROMPT_TEMPLATE,
    LEVELS,
    RELEASE_LEVELS,
    check_template,
    describe_candidates,
    level,
    user_message,
)
from scenarios import Request


@pytest.mark.parametrize(
    ("percentile", "word"), [(1.0, "very high"), (0.8, "very high"), (0.7999, "high"), (0.5, "high"), (0.4999, "low"),
                             (0.2, "low"), (0.1999, "very low"), (0.0, "very low")],
)  # fmt: skip
def test_levels_split_at_the_fifths_and_the_median(percentile, word):
    assert level(percentile) == word
    assert level(percentile, RELEASE_LEVELS) == RELEASE_LEVELS[LEVELS.index(word)]


def request() -> Request:
    return Request(
        user_id=0, time=0.0, history=(7,), candidates=(3, 9), need="trending", instruction="What is hot now?",
        history_titles=("Heat (1995) [Crime]",), candidate_titles=("Up (2009) [Animation]", "Alien (1979) [Horror]"),
        history_categories=(1,), category=np.array([0, 2]), popularity=np.array([0.9, 0.3], dtype=np.float32),
        recent_popularity=np.array([0.85, 0.05], dtype=np.float32), freshness=np.array([0.6, 0.1], dtype=np.float32),
    )  # fmt: skip


def test_candidates_are_described_by_their_title_and_levels():
    assert describe_candidates(request()) == [
        "Up (2009) [Animation]; popularity: very high; recent views: very high; release: new",
        "Alien (1979) [Horror]; popularity: low; recent views: very low; release: very old",
    ]


def test_the_message_has_the_history_instruction_and_labelled_candidates():
    r = request()
    message, chars = user_message(DEFAULT_PROMPT_TEMPLATE, r.history_titles, r.instruction, describe_candidates(r), [" A", " B"])
    assert "- Heat (1995) [Crime]\n" in message and "The user asks: What is hot now?" in message
    assert "- A: Up (2009) [Animation]; popularity: very high" in message
    assert [message[c] for c in chars] == ["A", "B"]
    assert user_message("{candidates}", [], "", ["x"], ["<c0>"]) == ("-<c0>: x", [4])
    assert "(none)" in user_message(DEFAULT_PROMPT_TEMPLATE, [], "", ["x"], [" A"])[0]


def test_templates_need_the_candidates_once():
    check_template("Rank: {candidates} for {instruction}")
    for bad in ("Rank these: {items}", "{candidates} {candidates}", "no fields"):
        with pytest.raises(ValueError, match="candidates"):
            check_template(bad)
