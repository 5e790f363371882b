"""The LLM policy's prompt: a request in words.

A pretrained model reads words, not feature vectors, so each candidate is written as its title (with the year and
genre where the scenario has them) followed by what the scenario knows of it at the request time, as levels:

    -A: Fish Tank (2009) [Drama]; popularity: high; recent views: very low; release: new

The levels come from the candidate's percentiles in the catalogue (all-time popularity, popularity in the recent
window, release recency): ``very high`` / ``high`` / ``low`` / ``very low`` for the top fifth, the rest of the upper
half, the lower half down to the bottom fifth, and the bottom fifth (release: ``very new`` ... ``very old``). They
are features every ranker sees; the need's relevance (and the user's interest) is never written: the model must read
the instruction and the user's history to rank.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from scenarios import Request

DEFAULT_PROMPT_TEMPLATE = (
    "You recommend items to a user. Items the user interacted with recently, oldest first:\n{history}\n\n"
    "The user asks: {instruction}\n\n"
    "Candidates:\n{candidates}\n\n"
    "Rank the candidates for this request, best first, by their labels."
)
#: Placeholders a prompt template may use (``{candidates}`` is required, once).
PROMPT_FIELDS = ("history", "instruction", "candidates")
#: Level words of a percentile p, highest first: p >= 0.8, p >= 0.5, p >= 0.2, else.
LEVELS = ("very high", "high", "low", "very low")
RELEASE_LEVELS = ("very new", "new", "old", "very old")
THRESHOLDS = (0.8, 0.5, 0.2)


def level(percentile: float, words: Sequence[str] = LEVELS) -> str:
    """The word for a percentile in [0, 1]: ``words[0]`` for the top fifth, ... ``words[3]`` for the bottom fifth.

    >>> level(0.95), level(0.5), level(0.3), level(0.1, RELEASE_LEVELS)
    ('very high', 'high', 'low', 'very old')
    """
    return words[sum(percentile < t for t in THRESHOLDS)]


def describe_candidate(request: Request, index: int) -> str:
    """Candidate ``index`` of ``request`` in words: its title, then its popularity, recent views and release as levels."""
    return (
        f"{request.candidate_titles[index]}; popularity: {level(float(request.popularity[index]))}; "
        f"recent views: {level(float(request.recent_popularity[index]))}; "
        f"release: {level(float(request.freshness[index]), RELEASE_LEVELS)}"
    )


def describe_candidates(request: Request) -> list[str]:
    """Every candidate of ``request`` in words (see :func:`describe_candidate`)."""
    return [describe_candidate(request, i) for i in range(len(request.candidates))]


def template_fields(template: str) -> list[str]:
    """The placeholders of a ``str.format`` template, in order."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def check_template(template: str) -> None:
    """A ``ValueError`` unless ``template`` has ``{candidates}`` once and no placeholder outside :data:`PROMPT_FIELDS`."""
    names = template_fields(template)
    if names.count("candidates") != 1 or set(names) - set(PROMPT_FIELDS):
        raise ValueError(
            f"prompt_template has the fields {names}; allowed: {list(PROMPT_FIELDS)}, with {{candidates}} exactly once"
        )


def user_message(
    template: str, history: Sequence[str], instruction: str, descriptions: Sequence[str], labels: Sequence[str]
) -> tuple[str, list[int]]:
    """The user message and the index of each label's last character in it.

    Candidates are written one per line as ``-<label>: <description>`` (a label such as ``" A"`` keeps its space, so
    it is the same token as in the answer); the history one per line as ``- <title>``, or ``(none)``.
    """
    lines, chars, offset = [], [], 0
    for label, description in zip(labels, descriptions, strict=True):
        chars.append(offset + len(label))  # "-" then the label: its last char
        lines.append(f"-{label}: {description}")
        offset += len(lines[-1]) + 1
    history_text = "\n".join(f"- {title}" for title in history) or "(none)"
    sentinel = "\x00"
    message = template.format(history=history_text, instruction=instruction, candidates=sentinel)
    start = message.index(sentinel)
    return message.replace(sentinel, "\n".join(lines)), [start + c for c in chars]
