"""FlexRec for language models: the prompt text in, the model's text out.

:class:`TextRankingEnv` wraps a ``FlexRec-v0`` env. Its observation is the prompt (:mod:`flexrec_env.prompts`, the
renderer the ``flexrec-llm`` agent uses too); its action is the model's answer, one label or a whole ranking, which
:func:`parse_ranking` reads.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from flexrec_env.config import INVALID_ACTION_PENALTY
from flexrec_env.env import FlexRecEnv
from flexrec_env.needs import registered_needs
from flexrec_env.prompts import (
    DEFAULT_PROMPT_TEMPLATE,
    LETTERS,
    LEVELS,
    RELEASE_LEVELS,
    check_template,
    describe_item,
    letter_labels,
    placed_section,
    request_prompt,
    special_labels,
    user_message,
)
from scenarios import Request
from scenarios.settings import check_fields

InvalidText = Literal["penalize", "raise"]
LabelStyle = Literal["auto", "letters", "special"]


@dataclass(frozen=True)
class TextConfig:
    """What ``TextRankingEnv(env, ...)`` accepts besides the env (all keyword arguments)."""

    invalid_text: InvalidText = "penalize"
    """A text that places nothing (see :func:`parse_ranking`): ``"penalize"`` it with ``INVALID_ACTION_PENALTY``
    without advancing (the episode is truncated after N of them), or ``"raise"`` a ``ValueError``."""
    labels: LabelStyle = "auto"
    """Candidate labels: ``"letters"`` (``A``, ``B``, ...; N <= 26), ``"special"`` (``<c0>``, ``<c1>``, ...) or
    ``"auto"`` (letters when N <= 26)."""
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    """The message: a ``str.format`` template with ``{candidates}`` (once) and optionally ``{history}`` and
    ``{instruction}`` (as the ``flexrec-llm`` agent's ``prompt_template``)."""
    max_history: int = 10
    """Most recent history items shown (0: none)."""
    max_length: int | None = None
    """The observation space's maximum length in characters; None: the longest prompt the env can show (see
    :class:`TextRankingEnv`)."""

    def __post_init__(self) -> None:
        check_fields(self, {"max_history": ">= 0", "max_length": ">= 1"})
        check_template(self.prompt_template)


class TextRankingEnv(gym.Wrapper[str, str, dict[str, Any], np.int64], gym.utils.RecordConstructorArgs):
    """A ``FlexRec-v0`` env that a language model plays in text: the prompt is the observation, the answer the action.

    ## Observation space

    ``Text(max_length=L, charset=C)``: the prompt of the request (:func:`flexrec_env.prompts.request_prompt`): the
    user's recent history, the need's instruction and the N candidates, each as ``-<label>: <title>; popularity:
    <level>; recent views: <level>; release: <level>``, then, once something is placed, the placed candidates in
    order and the positions left. With nothing placed it is the user message of the ``flexrec-llm`` agent (same
    template, history length and labels). ``L`` is the length of the longest prompt the env can show: the template
    with ``max_history`` copies of the catalogue's longest title, the longest instruction of the registered needs,
    N candidates with the longest title and level words, and K placed ones (``TextConfig.max_length`` overrides
    it). ``C`` is the printable ASCII characters and every character of the template, the titles and the
    instructions. A need registered after the wrapper was made may have an instruction outside the space: an
    observation outside it raises a ``ValueError``.

    ## Action space

    ``Text``: an answer naming candidates by their labels, best first: one label (one placement) or a ranking
    (several placements in one step). :func:`parse_ranking` reads it leniently: any case, any punctuation between
    labels (``"C, A, F"``, ``"C > A > F"``, ``"[c a f]"``), numbering (``"1. C 2. A"``), an opening phrase ending in
    a colon (``"Answer: C"``); a repeated label or one already placed is skipped, labels beyond the positions left
    are ignored. A word that is not a label, or an answer that names no candidate left, is an *invalid text*: with
    ``invalid_text="penalize"`` (default) the step earns ``INVALID_ACTION_PENALTY = -1`` and places nothing (the
    episode is truncated after N invalid texts, as the env's invalid actions), with ``"raise"`` it raises a
    ``ValueError`` naming the text and the labels allowed. An action that is not a ``str`` raises a ``TypeError``.
    The space's ``max_length`` fits a numbered ranking of all N labels; longer answers are read too.

    ## Rewards and info

    An answer with m labels steps the env m times. The reward is the sum of the m step rewards; the info is the last
    step's (the env's info, with the end-of-episode keys when the list is complete) plus ``steps`` (the m infos),
    ``step_rewards`` (the m rewards), ``placements`` (the m candidate indices) and ``invalid_text`` (False). An
    invalid text's info has ``position``, ``action_mask``, ``invalid_action`` and ``invalid_text`` (True), ``error``
    (why) and empty ``steps``, ``step_rewards`` and ``placements``. ``reset`` returns the env's info plus ``labels``
    (the N labels, as written in answers).

    ## Episode end

    As the env's: terminated when K candidates are placed, truncated after N invalid texts in ``"penalize"`` mode;
    stepping a finished episode raises ``gymnasium.error.ResetNeeded``.

    >>> import gymnasium as gym
    >>> import flexrec_env
    >>> env = TextRankingEnv(gym.make("FlexRec-v0", num_candidates=6, list_length=3))
    >>> prompt, info = env.reset(seed=0)
    >>> info["labels"]
    ['A', 'B', 'C', 'D', 'E', 'F']
    >>> prompt, reward, terminated, truncated, info = env.step("1. C 2. a")
    >>> info["placements"], terminated, prompt.splitlines()[-1]
    ([2, 0], False, 'Positions left: 1 of 3. Write the labels of the next candidates, best first.')
    >>> prompt, reward, terminated, truncated, info = env.step("C, F")  # C is placed already: F is next
    >>> info["placements"], terminated, "NDCG@5" in info["metrics"]
    ([5], True, True)
    """

    def __init__(self, env: gym.Env, **settings: Any) -> None:
        if not isinstance(env.unwrapped, FlexRecEnv):
            raise TypeError(f"TextRankingEnv wraps a FlexRec-v0 env; got {env.unwrapped!r}")
        gym.utils.RecordConstructorArgs.__init__(self, **settings)
        super().__init__(env)
        self.text_config = c = TextConfig(**settings)
        self._flexrec: FlexRecEnv = env.unwrapped
        n, k = self._flexrec.config.num_candidates, self._flexrec.config.list_length
        self._labels = candidate_labels(n, c.labels)
        self.labels = [label.strip() for label in self._labels]
        """The N labels as an answer writes them (``A``, ... or ``<c0>``, ...)."""
        self.observation_space = prompt_space(self._flexrec, self._labels, c)
        numbered = " ".join(f"{p}. {label}" for p, label in enumerate(self.labels, 1))
        self.action_space = spaces.Text(len(numbered), charset=ANSWER_CHARSET)
        self._list_length = k
        self._request: Request | None = None
        self._invalid_count = 0
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        _, info = self.env.reset(seed=seed, options=options)
        self._request = self._flexrec.request
        self._invalid_count = 0
        self._done = False
        return self._prompt(), {**info, "labels": list(self.labels)}

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._done:
            raise ResetNeeded("the episode is over: call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"action {action!r} is not a str; allowed: text naming candidates by their labels {self.labels}")
        placed = self._flexrec.ranking
        try:
            placements = parse_ranking(action, self.labels, placed, self._list_length - len(placed))
        except ValueError as error:
            if self.text_config.invalid_text == "raise":
                raise
            return self._invalid_step(str(error))
        rewards, steps = [], []
        for index in placements:
            # gymnasium types the wrapped env with the wrapper's own spaces: its action is the int index
            _, reward, terminated, truncated, info = self.env.step(index)  # type: ignore[arg-type]
            rewards.append(float(reward))
            steps.append(info)
        self._done = terminated or truncated
        info = {**steps[-1], "steps": steps, "step_rewards": rewards, "placements": placements, "invalid_text": False}
        return self._prompt(), sum(rewards), terminated, truncated, info

    def _invalid_step(self, error: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        """A text that places nothing: the penalty, nothing placed, truncated after N of them."""
        self._invalid_count += 1
        truncated = self._invalid_count >= self._flexrec.config.num_candidates
        self._done = truncated
        info = {
            "position": len(self._flexrec.ranking),
            "action_mask": self._flexrec.action_masks().astype(np.int8),
            "invalid_action": True,
            "invalid_text": True,
            "error": error,
            "steps": [],
            "step_rewards": [],
            "placements": [],
        }
        return self._prompt(), INVALID_ACTION_PENALTY, False, truncated, info

    def _prompt(self) -> str:
        assert self._request is not None
        c = self.text_config
        text = request_prompt(
            self._request, self._labels, c.prompt_template, c.max_history, self._flexrec.ranking, self._list_length
        )
        if not self.observation_space.contains(text):
            raise ValueError(
                f"the prompt of need {self._request.need!r} ({len(text)} characters) is outside the observation space "
                f"({self.observation_space}): register needs before making the wrapper, or set a larger max_length"
            )
        return text


# --------------------------------------------------------------------------------------------------------------------
# Labels, the observation space and the answer's parser.

#: Characters an answer is sampled from (labels, digits and the usual separators).
ANSWER_CHARSET = LETTERS + LETTERS.lower() + string.digits + " ,.;:>()<-\n"


def candidate_labels(n: int, style: LabelStyle) -> list[str]:
    """The labels of ``n`` candidates in the prompt (``" A"``, ... or ``"<c0>"``, ...) for a :data:`LabelStyle`."""
    if style == "special" or (style == "auto" and n > len(LETTERS)):
        return special_labels(n)
    return letter_labels(n)


def prompt_space(env: FlexRecEnv, labels: Sequence[str], config: TextConfig) -> spaces.Text:
    """The observation space: every prompt ``env`` can show fits in it (see :class:`TextRankingEnv`)."""
    scenario, n, k = env.scenario, env.config.num_candidates, env.config.list_length
    titles = [scenario.item_title(i) for i in range(scenario.num_items)]
    instructions = [text for need in (*env.needs, *registered_needs().values()) for text in need.instructions]
    charset = set(string.printable) | set(config.prompt_template) | set("".join(titles)) | set("".join(instructions))
    if config.max_length is not None:
        return spaces.Text(config.max_length, charset=frozenset(charset))
    title, instruction = max(titles, key=len), max(instructions, key=len)
    word, release = max(LEVELS, key=len), max(RELEASE_LEVELS, key=len)
    longest_labels = sorted(labels, key=len, reverse=True)
    history = [title] * config.max_history
    message, _ = user_message(
        config.prompt_template, history, instruction, [describe_item(title, word, word, release)] * n, labels
    )
    placed = max(len(placed_section(longest_labels[:p], [title] * p, k)) for p in range(1, k + 1))  # any list length
    return spaces.Text(len(message) + placed, charset=frozenset(charset))


_OPENING = re.compile(r"^\s*[A-Za-z][A-Za-z ]*[A-Za-z]\s*:")  # "Answer:", "My ranking:"
_WORD = re.compile(r"<?[A-Za-z]+\d*>?|\d+")  # a label ("C", "c3", "<c3>"), a word, or a number


def parse_ranking(text: str, labels: Sequence[str], placed: Sequence[int] = (), limit: int | None = None) -> list[int]:
    """The candidate indices an answer names, best first: labels not placed yet, each once, at most ``limit``.

    Labels are matched in any case (``<c3>`` also as ``c3``); punctuation is skipped, and so are numbers (numbering)
    and an opening phrase ending in a colon. A ``ValueError`` names the text and what is allowed when it has a word
    that is not a label or names no candidate left.

    >>> labels = ["A", "B", "C", "D"]
    >>> parse_ranking("1. C 2. a 3) c", labels), parse_ranking("Answer: [D > B]", labels, placed=[3])
    ([2, 0], [1])
    >>> parse_ranking("C, A, D, B", labels, limit=2)
    [2, 0]
    """
    keys = {label.strip().strip("<>").lower(): i for i, label in enumerate(labels)}
    names, skipped = [], set(placed)
    for word in _WORD.findall(_OPENING.sub("", text, count=1)):
        if word.isdigit():
            continue
        index = keys.get(word.strip("<>").lower())
        if index is None:
            raise ValueError(_invalid_message(text, f"{word!r} is not a label", labels, placed))
        if index not in skipped:
            names.append(index)
            skipped.add(index)
    if not names:
        raise ValueError(_invalid_message(text, "it names no candidate that is not placed yet", labels, placed))
    return names if limit is None else names[:limit]


def _invalid_message(text: str, reason: str, labels: Sequence[str], placed: Sequence[int]) -> str:
    left = [label.strip() for i, label in enumerate(labels) if i not in set(placed)] or ["(none)"]
    shown = text if len(text) <= 200 else text[:200] + "..."
    return (
        f"text {shown!r} is not a ranking: {reason}; allowed: labels of the candidates not placed yet ({', '.join(left)}), "
        f"one or several, best first (e.g. {left[0]!r}, {', '.join(left[:3])!r} or '1. {left[0]}')"
    )
